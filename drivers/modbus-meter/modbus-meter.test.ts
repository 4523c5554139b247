/**
 * The modbus-meter driver over Modbus TCP against the simulated meter on
 * 127.0.0.1 (modbus-serial's TCP client, real sockets), plus its config,
 * register-map and wire-time rules. RTU over a pty: modbus-meter-rtu.test.ts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { Reading, SignalSample } from '../contract.js';
import { ModbusMeterSim, type ModbusMeterSimOptions } from '../../hil/sim/modbus-meter-sim.js';
import { freePort } from '../../hil/testing/ports.js';
import { modbusMeterDriver } from './index.js';
import type { ModbusMeterDriver } from './driver.js';
import { BUILTIN_MAPS, decodeRegister, encodeRegister, planReads, REGISTER_TYPES, type RegisterDef } from './maps.js';
import { modbusMeterConfigSchema } from './schema.js';
import { maxSampleHz, readWireMs } from './wire.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 1000 };
const logger = pino({ level: 'silent' });

interface Rig {
  sim: ModbusMeterSim;
  driver: ModbusMeterDriver;
}
const rigs = rigsClosedAfterEach<Rig>();

async function rig(simOpts: ModbusMeterSimOptions, over: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new ModbusMeterSim(simOpts);
  const { host, port } = await sim.listenTcp();
  const meter = typeof simOpts.meter === 'string' ? simOpts.meter : 'generic';
  const cfg = modbusMeterConfigSchema.parse({
    id: 'm1',
    driver: 'modbus-meter',
    host,
    port,
    meter,
    ...(meter === 'generic' ? { registers: simOpts.meter } : {}),
    sampleHz: 20,
    timeouts: { connectMs: 1000, readMs: 200 },
    ...over,
  });
  const driver = modbusMeterDriver.create(cfg, { logger, now: Date.now });
  const r = { sim, driver };
  rigs.push(r);
  await driver.start();
  return r;
}

/** Polls read() until `pred` holds (generous: a loaded machine is slow). */
async function until(driver: ModbusMeterDriver, pred: (r: Reading) => boolean, ms = 5000): Promise<Reading> {
  const end = Date.now() + ms;
  let last: Reading | undefined;
  while (Date.now() < end) {
    last = await driver.read(READ);
    if (pred(last)) return last;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`condition not reached within ${ms} ms; last reading: ${JSON.stringify(last)}`);
}

/** A reading that reports a failed poll (not the moment before the first poll completes). */
const failedPoll = (x: Reading): boolean => x.error !== undefined && !/no sample yet/.test(x.error.message);

const close = (a: number | null | undefined | string | boolean, b: number, eps = 0.01): boolean => typeof a === 'number' && Math.abs(a - b) <= eps;

describe('config', () => {
  const base = { id: 'm1', driver: 'modbus-meter' };
  test('a TCP block needs host; RTU needs serial and no host; defaults', () => {
    const c = modbusMeterConfigSchema.parse({ ...base, host: '127.0.0.1' });
    assert.deepEqual([c.transport, c.port, c.unitId, c.meter, c.sampleHz, c.timeouts.readMs], ['tcp', 502, 1, 'sdm630', 5, 500]);
    const noHost = modbusMeterConfigSchema.safeParse(base);
    assert.ok(!noHost.success && noHost.error.issues.some((i) => i.path.join('.') === 'host'));
    const rtu = modbusMeterConfigSchema.safeParse({ ...base, transport: 'rtu', host: 'x' });
    assert.ok(!rtu.success);
    assert.deepEqual(rtu.error.issues.map((i) => i.path.join('.')).sort(), ['host', 'serial']);
    const ok = modbusMeterConfigSchema.parse({ ...base, transport: 'rtu', serial: { path: '/dev/ttyUSB0' } });
    assert.deepEqual(ok.serial, { path: '/dev/ttyUSB0', baudRate: 9600, parity: 'none', dataBits: 8, stopBits: 1, lowLatency: false });
  });

  test('generic needs registers; built-in maps refuse them; names are unique', () => {
    assert.ok(!modbusMeterConfigSchema.safeParse({ ...base, host: 'h', meter: 'generic' }).success);
    const reg = { name: 'powerW', function: 3, address: 0, type: 'int16' };
    assert.ok(!modbusMeterConfigSchema.safeParse({ ...base, host: 'h', registers: [reg] }).success);
    const dup = modbusMeterConfigSchema.safeParse({ ...base, host: 'h', meter: 'generic', registers: [reg, reg] });
    assert.ok(!dup.success && dup.error.issues.some((i) => /duplicate/.test(i.message)));
    const g = modbusMeterConfigSchema.parse({ ...base, host: 'h', meter: 'generic', registers: [reg] });
    assert.deepEqual(g.registers?.[0], { ...reg, wordOrder: 'big', scale: 1 });
    assert.ok(!modbusMeterConfigSchema.safeParse({ ...base, host: 'h', meter: 'generic', registers: [{ ...reg, function: 6 }] }).success);
  });

  test('a sampling rate the serial line cannot carry is refused, with the figures', () => {
    const rtu = (baudRate: number, sampleHz: number) =>
      modbusMeterConfigSchema.safeParse({ ...base, transport: 'rtu', serial: { path: '/dev/ttyUSB0', baudRate }, sampleHz });
    const slow = rtu(9600, 20);
    assert.ok(!slow.success);
    const issue = slow.error.issues.find((i) => i.path.join('.') === 'sampleHz');
    assert.match(issue?.message ?? '', /sampleHz 20 is more than the serial line carries: .* at 9600 baud .* at most 1[0-9](\.\d)? Hz/);
    assert.ok(rtu(19200, 20).success);
    assert.ok(rtu(9600, 10).success);
    // TCP is not bounded by a serial line
    assert.ok(modbusMeterConfigSchema.safeParse({ ...base, host: 'h', sampleHz: 20 }).success);
  });
});

describe('register maps and wire time', () => {
  test('SDM630 is one read of 0x34..0x47; PM5xxx two reads at 3059 and 3109', () => {
    assert.deepEqual(
      planReads(BUILTIN_MAPS.sdm630.registers).map((b) => [b.function, b.address, b.count]),
      [[4, 0x34, 20]],
    );
    assert.deepEqual(
      planReads(BUILTIN_MAPS.pm5xxx.registers).map((b) => [b.function, b.address, b.count]),
      [
        [3, 3059, 2],
        [3, 3109, 2],
      ],
    );
  });

  test('every type and word order decodes what the simulator encodes', () => {
    const vals: Record<string, number> = { int16: -1234, uint16: 54321, int32: -123456789, uint32: 4000000000, float32: 49.875 };
    for (const type of REGISTER_TYPES) {
      for (const wordOrder of ['big', 'little'] as const) {
        const r: RegisterDef = { name: 'x', function: 3, address: 10, type, wordOrder, scale: 1 };
        const enc = encodeRegister(r, vals[type]!);
        const got = decodeRegister(r, { function: 3, address: 9, count: 4, registers: [r] }, Buffer.concat([Buffer.alloc(2), enc, Buffer.alloc(6 - enc.length)]));
        assert.equal(got, vals[type], `${type} ${wordOrder}`);
      }
    }
    const le: RegisterDef = { name: 'x', function: 3, address: 0, type: 'uint32', wordOrder: 'little', scale: 0.1 };
    assert.deepEqual([...encodeRegister(le, 6553.7)], [0x00, 0x01, 0x00, 0x01]); // 65537 raw: low word first
  });

  test('wire time of a 2-register read matches the reference figures', () => {
    const line = (baudRate: number) => ({ baudRate, dataBits: 8 as const, parity: 'none' as const, stopBits: 1 as const });
    // reference: ~23.5 ms at 9600, ~11.7 ms at 19200 (frames only, no gaps, no turnaround)
    assert.ok(Math.abs(readWireMs(line(9600), 2, 0) - 2 * 3.5 * (10 / 9.6) - 17 * (10 / 9.6)) < 0.01);
    assert.ok(Math.abs(17 * (10 / 19.2) - 8.85) < 0.01);
    assert.ok(maxSampleHz(line(19200), planReads(BUILTIN_MAPS.sdm630.registers), 10) > 20);
  });
});

describe('modbus-meter over Modbus TCP', () => {
  test('SDM630: power and frequency, fresh, with the achieved rate', async () => {
    const { driver } = await rig({ meter: 'sdm630', frequencyHz: 50.02, powerW: 12345.5 });
    const r = await until(driver, (x) => x.freshness === 'fresh' && typeof x.fields.sampleHz === 'number');
    assert.equal(r.online, true);
    assert.ok(close(r.powerW, 12345.5), String(r.powerW));
    assert.ok(close(r.fields.frequencyHz, 50.02, 0.001));
    assert.deepEqual(driver.signalChannels, ['frequencyHz', 'powerW']);
  });

  test('PM5xxx: kW scaled to W from holding registers 3059/3109', async () => {
    const { driver, sim } = await rig({ meter: 'pm5xxx', frequencyHz: 59.95, powerW: 7500 });
    const r = await until(driver, (x) => x.freshness === 'fresh');
    assert.ok(close(r.powerW, 7500, 0.5), String(r.powerW));
    assert.ok(close(r.fields.frequencyHz, 59.95, 0.001));
    sim.model.powerSource = () => 3210;
    await until(driver, (x) => close(x.powerW, 3210, 0.5));
  });

  test('a generic map: mixed functions, types, word orders and scales; extra names become fields', async () => {
    const registers: RegisterDef[] = [
      { name: 'powerW', function: 3, address: 100, type: 'int32', wordOrder: 'little', scale: 0.1 },
      { name: 'frequencyHz', function: 4, address: 10, type: 'uint16', wordOrder: 'big', scale: 0.01 },
      { name: 'voltageV', function: 3, address: 104, type: 'float32', wordOrder: 'big', scale: 1 },
    ];
    const { driver, sim } = await rig({ meter: registers, frequencyHz: 49.9, powerW: 2048.3 });
    sim.model.base.voltageV = 231.5;
    const r = await until(driver, (x) => x.freshness === 'fresh' && x.fields.voltageV === 231.5);
    assert.ok(close(r.powerW, 2048.3, 0.05));
    assert.ok(close(r.fields.frequencyHz, 49.9, 0.001));
  });

  test('the sampling loop streams both channels and follows a scripted dip', async () => {
    const { driver, sim } = await rig({ meter: 'sdm630', frequencyHz: 60 });
    const samples: SignalSample[] = [];
    const off = driver.onSignal((s) => samples.push(s));
    sim.model.runScenario([{ atMs: 300, forMs: 400, frequencyHz: 59.8 }]);
    await until(driver, () => samples.some((s) => s.channel === 'frequencyHz' && close(s.value, 59.8, 0.001)));
    await until(driver, () => close(samples.at(-1)?.value, 60, 0.001) || close(samples.at(-2)?.value, 60, 0.001));
    off();
    const freq = samples.filter((s) => s.channel === 'frequencyHz');
    assert.ok(freq.length >= 5, `only ${freq.length} frequency samples`);
    assert.ok(samples.some((s) => s.channel === 'powerW'));
    assert.ok(samples.every((s) => s.fresh && s.device === 'm1'));
    for (let i = 1; i < freq.length; i++) assert.ok(freq[i]!.ts >= freq[i - 1]!.ts);
  });

  test('a meter that goes silent turns stale (samples fresh=false), then fresh again', async () => {
    const { driver, sim } = await rig({ meter: 'sdm630' });
    await until(driver, (x) => x.freshness === 'fresh');
    const samples: SignalSample[] = [];
    driver.onSignal((s) => samples.push(s));
    sim.fault = { kind: 'silent' };
    const stale = await until(driver, (x) => x.freshness === 'stale');
    assert.equal(stale.error?.code, 'READ_TIMEOUT');
    assert.match(stale.error?.message ?? '', /no answer within 200 ms/);
    assert.equal(stale.online, false);
    assert.ok(close(stale.fields.frequencyHz, 50), 'stale keeps the last values');
    await until(driver, () => samples.some((s) => !s.fresh));
    sim.fault = { kind: 'none' };
    await until(driver, (x) => x.freshness === 'fresh');
    await until(driver, () => samples.at(-1)?.fresh === true);
  });

  test('an exception answer is a clear error naming the registers', async () => {
    const { driver, sim } = await rig({ meter: 'sdm630' });
    sim.fault = { kind: 'exception', address: 0x46 };
    const r = await until(driver, failedPoll);
    assert.equal(r.error?.code, 'DEVICE_ERROR');
    assert.match(r.error?.message ?? '', /Modbus exception 2 \(illegal data address\)/);
    assert.match(r.error?.message ?? '', /function 04 read of 0x0034\.\.0x0047 .*frequencyHz at 0x0046/);
  });

  test('the wrong map for the meter: illegal function', async () => {
    const { driver } = await rig({ meter: 'pm5xxx' }, { meter: 'sdm630' });
    const r = await until(driver, failedPoll);
    assert.match(r.error?.message ?? '', /Modbus exception 1 \(illegal function\)/);
  });

  test('wrong unit id: a gateway exception, and an answer from another unit', async () => {
    const a = await rig({ meter: 'sdm630' }, { unitId: 5 });
    const r = await until(a.driver, failedPoll);
    assert.match(r.error?.message ?? '', /Modbus exception 11/);
    const b = await rig({ meter: 'sdm630' });
    b.sim.fault = { kind: 'wrongUnit', unitId: 7 };
    const w = await until(b.driver, failedPoll);
    assert.equal(w.error?.code, 'MALFORMED_RESPONSE');
    assert.match(w.error?.message ?? '', /came from unit 7, expected unit 1/);
  });

  test('deadlines: a slow meter times out, garbage is refused, read() never throws', async () => {
    const { driver, sim } = await rig({ meter: 'sdm630' });
    await until(driver, (x) => x.freshness === 'fresh');
    sim.fault = { kind: 'slow', delayMs: 600 };
    const t0 = Date.now();
    const r = await until(driver, (x) => x.freshness === 'stale');
    assert.equal(r.error?.code, 'READ_TIMEOUT');
    assert.ok(Date.now() - t0 < 3000);
    sim.fault = { kind: 'garbage' };
    await until(driver, (x) => x.error !== undefined && x.error.code !== 'READ_TIMEOUT');
    sim.fault = { kind: 'none' };
    await until(driver, (x) => x.freshness === 'fresh');
  });

  test('nothing listening: start() does not throw, readings are missing, and it connects once the meter is up', async () => {
    const port = await freePort();
    const cfg = modbusMeterConfigSchema.parse({ id: 'm2', driver: 'modbus-meter', host: '127.0.0.1', port, timeouts: { connectMs: 300, readMs: 200 } });
    const driver = modbusMeterDriver.create(cfg, { logger, now: Date.now });
    const sim = new ModbusMeterSim({ meter: 'sdm630' });
    rigs.push({ driver, sim });
    assert.equal((await driver.read(READ)).error?.code, 'NOT_STARTED');
    await driver.start();
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'missing');
    assert.equal(r.error?.code, 'CONNECT_REFUSED');
    await sim.listenTcp({ port });
    await until(driver, (x) => x.freshness === 'fresh', 8000);
  });

  test('a dropped connection is re-established', async () => {
    const { driver, sim } = await rig({ meter: 'sdm630' });
    await until(driver, (x) => x.freshness === 'fresh');
    const before = sim.requests;
    for (const s of (sim as unknown as { sockets: Set<import('node:net').Socket> }).sockets) s.destroy();
    await until(driver, () => sim.requests > before + 5, 8000);
    await until(driver, (x) => x.freshness === 'fresh');
  });
});
