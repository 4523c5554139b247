/**
 * The SNMP PDU driver against the SNMP PDU simulator (net-snmp's agent on
 * UDP 127.0.0.1, one per vendor profile), through net-snmp on both sides.
 * Deadlines are generous; timing is asserted only as ordering.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import { SnmpPduSim, type SnmpPduSimOptions } from '../../hil/sim/snmp-pdu-sim.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { pduSnmpDriver } from './index.js';
import { PROFILE_IDS, type ProfileId } from './profiles.js';
import { pduSnmpConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 4000 };
const ACT = { deadlineMs: 6000 };

interface Rig {
  sim: SnmpPduSim;
  driver: DeviceDriver;
}
const rigs = rigsClosedAfterEach<Rig>();

async function rig(profile: ProfileId, simOver: Partial<SnmpPduSimOptions> = {}, cfgOver: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new SnmpPduSim({ profile, outlets: 4, phases: 3, loadsW: [100, 250, 400, 1200], ...simOver });
  const { port } = await sim.listen();
  const cfg = pduSnmpConfigSchema.parse({
    id: 'pdu-1',
    driver: 'pdu-snmp',
    host: '127.0.0.1',
    port,
    profile,
    outlets: 4,
    phases: 3,
    snmp: { version: '2c', community: 'private' },
    timeouts: { readMs: 800 },
    switchOnDelayMs: 0,
    confirmPollMs: 30,
    ...cfgOver,
  });
  const driver = pduSnmpDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  await driver.start();
  const r = { sim, driver };
  rigs.push(r);
  return r;
}

describe('pdu-snmp config', () => {
  test('defaults: v2c "public", port 161, 1 s switch-on spacing', () => {
    const c = pduSnmpConfigSchema.parse({ id: 'p', driver: 'pdu-snmp', host: '10.0.0.9', profile: 'sentry4' });
    assert.equal(c.port, 161);
    assert.deepEqual(c.snmp, { version: '2c', community: 'public', retries: 0 });
    assert.equal(c.switchOnDelayMs, 1000);
  });
  test('v3 privKey without authKey is refused, with its path', () => {
    const r = pduSnmpConfigSchema.safeParse({ id: 'p', driver: 'pdu-snmp', host: 'h', profile: 'sentry4', snmp: { version: '3', user: 'u', privKey: '12345678' } });
    assert.equal(r.success, false);
    assert.deepEqual(r.error?.issues[0]?.path, ['snmp', 'privKey']);
  });
});

for (const profile of PROFILE_IDS) {
  describe(`pdu-snmp ${profile}`, () => {
    test('telemetry: total, phase and outlet power in W, outlet states', async () => {
      // Raritan with 2 decimal digits exercises the sensor scaling; APC reports hundredths of kW
      const { driver } = await rig(profile, { powerDigits: 2 });
      const r = await driver.read(READ);
      assert.equal(r.freshness, 'fresh', JSON.stringify(r.error));
      assert.equal(r.powerW, 1950);
      assert.equal(r.fields.outlet2PowerW, 250);
      assert.equal(r.fields.outlet4PowerW, 1200);
      assert.equal(r.fields.outlet3On, true);
      if (profile !== 'eaton-epdu') {
        assert.equal(r.fields.phase1PowerW, 1300); // outlets 1 and 4
        assert.equal(r.fields.phase2PowerW, 250);
      }
    });

    test('switch off and on, each confirmed by read-back; power follows', async () => {
      const { driver, sim } = await rig(profile);
      const off = await driver.switchOutlet!('4', false, ACT);
      assert.equal(off.confirmed, true);
      assert.equal(off.reading.fields.outlet4On, false);
      assert.equal(sim.outletState(4), 'off');
      const r = await driver.read(READ);
      assert.equal(r.powerW, 750);
      assert.equal(r.fields.outlet4PowerW, 0);
      const on = await driver.switchOutlet!('4', true, ACT);
      assert.equal(on.confirmed, true);
      assert.equal(sim.outletState(4), 'on');
      assert.deepEqual(sim.switches.map((s) => [s.outlet, s.on]), [[4, false], [4, true]]);
    });
  });
}

describe('pdu-snmp sequencing, auth and faults', () => {
  test('switch-ons are spaced by switchOnDelayMs; switch-offs are not delayed', async () => {
    const { driver, sim } = await rig('apc-rpdu2', {}, { switchOnDelayMs: 400 });
    for (const o of ['1', '2', '3']) await driver.switchOutlet!(o, false, ACT);
    sim.switches.length = 0;
    const started = Date.now();
    await Promise.all([driver.switchOutlet!('1', true, ACT), driver.switchOutlet!('2', true, ACT), driver.switchOutlet!('3', false, ACT)]);
    const on = sim.switches.filter((s) => s.on);
    const off = sim.switches.find((s) => !s.on);
    assert.equal(on.length, 2);
    // the second switch-on reached the PDU no earlier than the delay after the first
    assert.ok((on[1]?.at ?? 0) - (on[0]?.at ?? 0) >= 390, `switch-ons ${JSON.stringify(on)}`);
    // the switch-off did not queue behind the switch-ons
    assert.ok((off?.at ?? Infinity) < (on[1]?.at ?? 0), `off at ${off?.at}, second on at ${on[1]?.at}`);
    assert.ok(Date.now() - started >= 400);
  });

  test('SNMPv3 authPriv user reads and switches', async () => {
    const user = { name: 'ops', authProtocol: 'sha' as const, authKey: 'authkey-123', privProtocol: 'aes' as const, privKey: 'privkey-123' };
    const { driver } = await rig('raritan-pdu2', { users: [user] }, { snmp: { version: '3', user: 'ops', authProtocol: 'sha', authKey: 'authkey-123', privProtocol: 'aes', privKey: 'privkey-123' } });
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'fresh', JSON.stringify(r.error));
    assert.equal((await driver.switchOutlet!('1', false, ACT)).confirmed, true);
  });

  test('SNMPv3 with a wrong auth key fails with a clear error, no crash', async () => {
    const { driver } = await rig(
      'sentry4',
      { users: [{ name: 'ops', authProtocol: 'sha', authKey: 'authkey-123' }] },
      { snmp: { version: '3', user: 'ops', authProtocol: 'sha', authKey: 'wrong-key-9' } },
    );
    // net-snmp's agent drops a message with a wrong digest (no usmStatsWrongDigests report)
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'missing');
    assert.equal(r.error?.code, 'READ_TIMEOUT');
    assert.match(r.error?.message ?? '', /pdu-1: no SNMP answer.*wrong v3 user or keys/);
  });

  test('SNMPv3 with an unknown user gets a report: AUTH_FAILED', async () => {
    const { driver } = await rig(
      'eaton-epdu',
      { users: [{ name: 'ops', authProtocol: 'sha', authKey: 'authkey-123' }] },
      { snmp: { version: '3', user: 'nobody', authProtocol: 'sha', authKey: 'authkey-123' } },
    );
    const r = await driver.read(READ);
    assert.equal(r.error?.code, 'AUTH_FAILED');
    assert.match(r.error?.message ?? '', /pdu-1: SNMPv3 authentication .* failed \(Unknown User Name\)/);
  });

  test('a wrong community gets no answer: READ_TIMEOUT naming the device', async () => {
    const { driver } = await rig('eaton-epdu', {}, { snmp: { version: '2c', community: 'wrong' } });
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'missing');
    assert.equal(r.error?.code, 'READ_TIMEOUT');
    assert.match(r.error?.message ?? '', /pdu-1.*no SNMP answer.*wrong community/);
  });

  test('noSuchObject: an outlet the PDU does not have reads null and cannot be switched; a wrong profile is a clear error', async () => {
    const { driver } = await rig('vertiv-v5', {}, { outlets: 6 });
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'fresh');
    assert.equal(r.fields.outlet5On, null);
    assert.equal(r.fields.outlet5PowerW, null);
    await expectCode(driver.switchOutlet!('7', true, ACT), 'CONFIG_INVALID', /outlet "7" does not exist/);
    await expectCode(driver.switchOutlet!('5', false, ACT), 'DEVICE_ERROR', /outlet 5 does not exist on this PDU \(noSuchInstance/);

    const other = await rig('vertiv-v5');
    const wrong = pduSnmpDriver.create(
      pduSnmpConfigSchema.parse({ id: 'pdu-2', driver: 'pdu-snmp', host: '127.0.0.1', port: other.sim.port, profile: 'apc-rpdu2', snmp: { version: '2c', community: 'private' } }),
      { logger: pino({ level: 'silent' }), now: Date.now },
    );
    await wrong.start();
    const w = await wrong.read(READ);
    await wrong.stop();
    assert.equal(w.error?.code, 'DEVICE_ERROR');
    assert.match(w.error?.message ?? '', /noSuchObject for every OID of profile apc-rpdu2/);
  });

  test('a rejected write (Vertiv not in manual mode) is DEVICE_ERROR with the hint; nothing switches', async () => {
    const { driver, sim } = await rig('vertiv-v5');
    sim.faults.rejectWrites = true;
    await expectCode(driver.switchOutlet!('2', false, ACT), 'DEVICE_ERROR', /rejected "switch outlet 2 off".*manual control mode/);
    assert.equal(sim.outletState(2), 'on');
  });

  test('a silent PDU turns readings stale, then fresh again; a slow one times out', async () => {
    const { driver, sim } = await rig('apc-rpdu2');
    assert.equal((await driver.read(READ)).freshness, 'fresh');
    sim.faults.silent = true;
    const stale = await driver.read(READ);
    assert.equal(stale.freshness, 'stale');
    assert.equal(stale.online, false);
    assert.equal(stale.powerW, 1950);
    assert.equal(stale.error?.code, 'READ_TIMEOUT');
    await expectCode(driver.switchOutlet!('1', false, ACT), 'READ_TIMEOUT', /pdu-1: no SNMP answer/);
    sim.faults.silent = false;
    sim.faults.slowMs = 1500;
    assert.equal((await driver.read(READ)).error?.code, 'READ_TIMEOUT');
    sim.faults.slowMs = 0;
    await new Promise((r) => setTimeout(r, 1600));
    assert.equal((await driver.read(READ)).freshness, 'fresh');
  });

  test('a read before start() is missing with NOT_STARTED, no throw', async () => {
    const d = pduSnmpDriver.create(pduSnmpConfigSchema.parse({ id: 'p', driver: 'pdu-snmp', host: '127.0.0.1', profile: 'sentry4' }), { logger: pino({ level: 'silent' }), now: Date.now });
    const r = await d.read(READ);
    assert.equal(r.error?.code, 'NOT_STARTED');
  });
});
