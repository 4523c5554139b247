/**
 * The modbus-meter driver over Modbus RTU through a real serial path: a socat
 * pty pair, the driver opening one end with serialport (through
 * modbus-serial), the simulated meter speaking RTU with real CRC on the other.
 * Needs socat (skips visibly without it; fails under CI=true).
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { Reading, SignalSample } from '../contract.js';
import { ModbusMeterSim, type ModbusMeterSimOptions } from '../../hil/sim/modbus-meter-sim.js';
import { ptyPair, type PtyPair } from '../../hil/testing/pty.js';
import { requireTool } from '../../hil/testing/tools.js';
import { modbusMeterDriver } from './index.js';
import type { ModbusMeterDriver } from './driver.js';
import type { RegisterDef } from './maps.js';
import { modbusMeterConfigSchema } from './schema.js';

const READ = { deadlineMs: 1000 };
const logger = pino({ level: 'silent' });
const socat = requireTool('socat', 'socat');
const skip = 'skip' in socat ? socat.skip : false;

interface Rig {
  sim: ModbusMeterSim;
  driver: ModbusMeterDriver;
  pty: PtyPair;
}
const rigs: Rig[] = [];
afterEach(async () => {
  for (const r of rigs.splice(0)) {
    await r.driver.stop();
    await r.sim.close();
    await r.pty.dispose();
  }
});

async function rig(simOpts: ModbusMeterSimOptions, over: Record<string, unknown> = {}, serial: Record<string, unknown> = {}): Promise<Rig> {
  const pty = await ptyPair('path' in socat ? socat.path : 'socat');
  const sim = new ModbusMeterSim(simOpts);
  await sim.attachRtu(pty.b, { baudRate: 19200 });
  const meter = typeof simOpts.meter === 'string' ? simOpts.meter : 'generic';
  const cfg = modbusMeterConfigSchema.parse({
    id: 'r1',
    driver: 'modbus-meter',
    transport: 'rtu',
    serial: { path: pty.a, baudRate: 19200, ...serial },
    meter,
    ...(meter === 'generic' ? { registers: simOpts.meter } : {}),
    sampleHz: 20,
    timeouts: { connectMs: 1000, readMs: 200 },
    ...over,
  });
  const driver = modbusMeterDriver.create(cfg, { logger, now: Date.now });
  const r = { sim, driver, pty };
  rigs.push(r);
  await driver.start();
  return r;
}

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

const failedPoll = (x: Reading): boolean => x.error !== undefined && !/no sample yet/.test(x.error.message);
const close = (a: unknown, b: number, eps = 0.01): boolean => typeof a === 'number' && Math.abs(a - b) <= eps;

describe('modbus-meter over Modbus RTU (socat pty + serialport)', { skip }, () => {
  let probe: PtyPair | undefined;
  before(async () => {
    probe = await ptyPair('path' in socat ? socat.path : 'socat'); // fail early and clearly when socat cannot make ptys
  });
  after(async () => {
    await probe?.dispose();
  });

  test('SDM630 at 19200 baud: one block read, fresh values, samples on both channels', async () => {
    const { driver, sim } = await rig({ meter: 'sdm630', frequencyHz: 49.97, powerW: 8123.25 });
    const samples: SignalSample[] = [];
    driver.onSignal((s) => samples.push(s));
    const r = await until(driver, (x) => x.freshness === 'fresh' && (x.fields.polls as number) >= 5);
    assert.ok(close(r.powerW, 8123.25), String(r.powerW));
    assert.ok(close(r.fields.frequencyHz, 49.97, 0.001));
    assert.ok(samples.filter((s) => s.channel === 'powerW').length >= 4);
    assert.ok(samples.every((s) => s.fresh));
    assert.ok(sim.requests >= 5);
  });

  test('PM5xxx over RTU', async () => {
    const { driver } = await rig({ meter: 'pm5xxx', frequencyHz: 60.01, powerW: 15000 });
    const r = await until(driver, (x) => x.freshness === 'fresh');
    assert.ok(close(r.powerW, 15000, 1));
    assert.ok(close(r.fields.frequencyHz, 60.01, 0.001));
  });

  test('a generic map over RTU, 8E1 line settings', async () => {
    const registers: RegisterDef[] = [
      { name: 'powerW', function: 4, address: 0, type: 'uint32', wordOrder: 'big', scale: 1 },
      { name: 'frequencyHz', function: 4, address: 2, type: 'int16', wordOrder: 'big', scale: 0.01 },
    ];
    const { driver } = await rig({ meter: registers, frequencyHz: 50.1, powerW: 123456 }, {}, { parity: 'even' });
    const r = await until(driver, (x) => x.freshness === 'fresh');
    assert.equal(r.powerW, 123456);
    assert.ok(close(r.fields.frequencyHz, 50.1, 0.001));
  });

  test('CRC errors and garbage are refused as malformed answers; the meter recovers', async () => {
    const { driver, sim } = await rig({ meter: 'sdm630' });
    await until(driver, (x) => x.freshness === 'fresh');
    sim.fault = { kind: 'badCrc' };
    const r = await until(driver, failedPoll);
    assert.equal(r.error?.code, 'MALFORMED_RESPONSE');
    assert.match(r.error?.message ?? '', /failed its CRC check/);
    assert.equal(r.freshness, 'stale');
    sim.fault = { kind: 'garbage' };
    await until(driver, (x) => x.freshness === 'fresh' || x.error?.code === 'MALFORMED_RESPONSE' || x.error?.code === 'READ_TIMEOUT');
    sim.fault = { kind: 'none' };
    await until(driver, (x) => x.freshness === 'fresh');
  });

  test('wrong unit id: no answer is a timeout; an answer from another unit is named', async () => {
    const a = await rig({ meter: 'sdm630' }, { unitId: 3 });
    const r = await until(a.driver, failedPoll);
    assert.equal(r.error?.code, 'READ_TIMEOUT');
    assert.match(r.error?.message ?? '', /unitId 3/);
    assert.equal(r.freshness, 'missing');
    const b = await rig({ meter: 'sdm630' });
    b.sim.fault = { kind: 'wrongUnit', unitId: 9 };
    const w = await until(b.driver, failedPoll);
    assert.match(w.error?.message ?? '', /came from unit 9, expected unit 1/);
  });

  test('exception answer names the register', async () => {
    const { driver, sim } = await rig({ meter: 'pm5xxx' });
    sim.fault = { kind: 'exception', address: 3109, code: 2 };
    const r = await until(driver, failedPoll);
    assert.equal(r.error?.code, 'DEVICE_ERROR');
    assert.match(r.error?.message ?? '', /function 03 read of 0x0c25\.\.0x0c26 \(frequencyHz at 0x0c25 \(3109\)\): Modbus exception 2/);
  });

  test('silent then back: stale with fresh=false samples, then fresh; late answers are not taken for new ones', async () => {
    const { driver, sim } = await rig({ meter: 'sdm630', frequencyHz: 50 });
    await until(driver, (x) => x.freshness === 'fresh');
    const samples: SignalSample[] = [];
    driver.onSignal((s) => samples.push(s));
    sim.fault = { kind: 'silent' };
    const stale = await until(driver, (x) => x.freshness === 'stale');
    assert.equal(stale.error?.code, 'READ_TIMEOUT');
    await until(driver, () => samples.some((s) => !s.fresh));
    // answers arrive after the deadline (300 ms > 200 ms): every poll times out, none is answered by the previous poll's late reply
    sim.model.base.frequencyHz = 51;
    sim.fault = { kind: 'slow', delayMs: 300 };
    await new Promise((r) => setTimeout(r, 1500));
    const during = await driver.read(READ);
    assert.equal(during.freshness, 'stale', JSON.stringify(during));
    assert.ok(!samples.some((s) => s.fresh && close(s.value, 51, 0.001)), 'a late answer was taken as fresh');
    sim.fault = { kind: 'none' };
    const back = await until(driver, (x) => x.freshness === 'fresh');
    assert.ok(close(back.fields.frequencyHz, 51, 0.001));
  });

  test('lowLatency on a tty without it (a pty) is a warning, not a failure; a missing port is a clear error', async () => {
    const { driver } = await rig({ meter: 'sdm630' }, {}, { lowLatency: true });
    await until(driver, (x) => x.freshness === 'fresh');
    const cfg = modbusMeterConfigSchema.parse({ id: 'r9', driver: 'modbus-meter', transport: 'rtu', serial: { path: '/nonexistent/ttyUSB9' }, timeouts: { connectMs: 500 } });
    const d = modbusMeterDriver.create(cfg, { logger, now: Date.now });
    await d.start();
    const r = await d.read(READ);
    await d.stop();
    assert.equal(r.error?.code, 'UNREACHABLE');
    assert.match(r.error?.message ?? '', /cannot open serial port \/nonexistent\/ttyUSB9: .*dialout/);
  });
});
