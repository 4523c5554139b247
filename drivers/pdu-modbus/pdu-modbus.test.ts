/**
 * The Modbus TCP PDU driver against the Modbus PDU simulator (modbus-serial's
 * ServerTCP on 127.0.0.1), through modbus-serial on both sides, in both map
 * styles (coils; state/command registers). Timing is asserted only as ordering.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import { ModbusPduSim, modbusPduSimMap, type ModbusPduSimMode } from '../../hil/sim/modbus-pdu-sim.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { pduModbusDriver } from './index.js';
import { decodeRegisters, encodeRegisters, planSpans } from './registers.js';
import { pduModbusConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 4000 };
const ACT = { deadlineMs: 6000 };

const rigs = rigsClosedAfterEach<{ sim: ModbusPduSim; driver: DeviceDriver }>();

async function rig(mode: ModbusPduSimMode, cfgOver: Record<string, unknown> = {}) {
  const sim = new ModbusPduSim({ mode, outlets: 4, phases: 3, loadsW: [100, 250, 400, 1200] });
  const { port } = await sim.listen();
  const cfg = pduModbusConfigSchema.parse({
    id: 'pdu-m',
    driver: 'pdu-modbus',
    host: '127.0.0.1',
    port,
    timeouts: { connectMs: 500, readMs: 600 },
    switchOnDelayMs: 0,
    confirmPollMs: 30,
    ...modbusPduSimMap(mode, 4, 3),
    ...cfgOver,
  });
  const driver = pduModbusDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  await driver.start();
  const r = { sim, driver };
  rigs.push(r);
  return r;
}

describe('pdu-modbus registers', () => {
  test('32-bit values in both word orders, float32, int16, scale', () => {
    for (const wordOrder of ['big', 'little'] as const) {
      for (const type of ['uint32', 'int32', 'float32'] as const) {
        const v = { table: 'holding' as const, address: 0, type, scale: 0.1, wordOrder };
        assert.equal(decodeRegisters(encodeRegisters(123456.7, v), 0, v)?.toFixed(1), type === 'float32' ? '123456.7' : '123456.7');
      }
    }
    assert.equal(decodeRegisters([0xffff], 0, { table: 'holding', address: 0, type: 'int16', scale: 1, wordOrder: 'big' }), -1);
    assert.deepEqual(encodeRegisters(70000, { table: 'holding', address: 0, type: 'uint32', scale: 1, wordOrder: 'big' }), [1, 4464]);
  });
  test('span planning reads adjacent (or, with maxGap, nearby) addresses in one request', () => {
    const wanted = [
      { table: 'holding' as const, address: 0, count: 2 },
      { table: 'holding' as const, address: 2, count: 2 },
      { table: 'holding' as const, address: 100, count: 2 },
      { table: 'coil' as const, address: 0, count: 1 },
      { table: 'coil' as const, address: 3, count: 1 },
    ];
    assert.deepEqual(planSpans(wanted), [
      { table: 'holding', start: 0, count: 4 },
      { table: 'holding', start: 100, count: 2 },
      { table: 'coil', start: 0, count: 1 },
      { table: 'coil', start: 3, count: 1 },
    ]);
    assert.deepEqual(planSpans(wanted, 2), [
      { table: 'holding', start: 0, count: 4 },
      { table: 'holding', start: 100, count: 2 },
      { table: 'coil', start: 0, count: 4 },
    ]);
  });
  test('a state in an input register needs a command point', () => {
    const r = pduModbusConfigSchema.safeParse({ id: 'p', driver: 'pdu-modbus', host: 'h', outlets: [{ state: { register: 5, table: 'input' } }] });
    assert.equal(r.success, false);
    assert.deepEqual(r.error?.issues[0]?.path, ['outlets', 0, 'command']);
  });
});

for (const mode of ['coil', 'register'] as const) {
  describe(`pdu-modbus (${mode} map)`, () => {
    test('telemetry: total, phase and outlet power, outlet states', async () => {
      const { driver } = await rig(mode);
      const r = await driver.read(READ);
      assert.equal(r.freshness, 'fresh', JSON.stringify(r.error));
      assert.equal(r.powerW, 1950);
      assert.equal(r.fields.phase1PowerW, 1300);
      assert.equal(r.fields.outlet2PowerW, 250);
      assert.equal(r.fields.outlet3On, true);
    });

    test('switch off and on, confirmed by read-back; power follows', async () => {
      const { driver, sim } = await rig(mode);
      assert.equal((await driver.switchOutlet('4', false, ACT)).confirmed, true);
      assert.equal(sim.outletOn(4), false);
      const r = await driver.read(READ);
      assert.equal(r.powerW, 750);
      assert.equal(r.fields.outlet4PowerW, 0);
      assert.equal((await driver.switchOutlet('4', true, ACT)).confirmed, true);
      assert.deepEqual(sim.switches.map((s) => [s.outlet, s.on]), [[4, false], [4, true]]);
    });
  });
}

describe('pdu-modbus sequencing and faults', () => {
  test('switch-ons are spaced by switchOnDelayMs; switch-offs are not delayed', async () => {
    const { driver, sim } = await rig('coil', { switchOnDelayMs: 400 });
    for (const o of ['1', '2']) await driver.switchOutlet(o, false, ACT);
    sim.switches.length = 0;
    await Promise.all([driver.switchOutlet('1', true, ACT), driver.switchOutlet('2', true, ACT), driver.switchOutlet('3', false, ACT)]);
    const on = sim.switches.filter((s) => s.on);
    const off = sim.switches.find((s) => !s.on);
    assert.equal(on.length, 2);
    assert.ok((on[1]?.at ?? 0) - (on[0]?.at ?? 0) >= 390, JSON.stringify(on));
    assert.ok((off?.at ?? Infinity) < (on[1]?.at ?? 0));
  });

  test('a rejected write (exception 4) is DEVICE_ERROR; nothing switches', async () => {
    const { driver, sim } = await rig('register');
    sim.faults.rejectWrites = true;
    await expectCode(driver.switchOutlet('2', false, ACT), 'DEVICE_ERROR', /rejected "switch outlet 2 off".*exception 4 \(server device failure\)/);
    assert.equal(sim.outletOn(2), true);
  });

  test('an unmapped address is exception 2, a stale reading with the cause', async () => {
    const { driver } = await rig('coil', { phasePower: [{ address: 9000, type: 'uint32' }] });
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'missing');
    assert.equal(r.error?.code, 'DEVICE_ERROR');
    assert.match(r.error?.message ?? '', /exception 2 \(illegal data address\)/);
  });

  test('a silent PDU turns readings stale (READ_TIMEOUT), then fresh again', async () => {
    const { driver, sim } = await rig('coil');
    assert.equal((await driver.read(READ)).freshness, 'fresh');
    sim.faults.silent = true;
    const stale = await driver.read(READ);
    assert.equal(stale.freshness, 'stale');
    assert.equal(stale.powerW, 1950);
    assert.equal(stale.error?.code, 'READ_TIMEOUT');
    assert.match(stale.error?.message ?? '', /pdu-m: no Modbus answer/);
    sim.faults.silent = false;
    assert.equal((await driver.read(READ)).freshness, 'fresh');
  });

  test('a wrong unit id gets no answer: READ_TIMEOUT naming the device', async () => {
    const { driver } = await rig('coil', { unitId: 7 });
    const r = await driver.read(READ);
    assert.equal(r.error?.code, 'READ_TIMEOUT');
    assert.match(r.error?.message ?? '', /pdu-m: no Modbus answer from 127\.0\.0\.1:\d+ unit 7/);
  });

  test('nothing listening: CONNECT_REFUSED', async () => {
    const { driver, sim } = await rig('coil');
    await sim.close();
    const r = await driver.read(READ);
    assert.ok(r.error && ['CONNECT_REFUSED', 'CONNECTION_CLOSED'].includes(r.error.code), JSON.stringify(r.error));
  });
});
