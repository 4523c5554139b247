/**
 * The Avalon driver against hil/sim/avalon-sim.ts over real TCP on 127.0.0.1,
 * plus the bracketed estats parser on captured strings. scheduleOffsetS is 0
 * in most tests (the sim acts at once); one test uses 1 s.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver, Reading } from '../contract.js';
import type { ErrorCode } from '../lib/errors.js';
import { AvalonSim, type AvalonSimOptions } from '../../hil/sim/avalon-sim.js';
import type { Fault } from '../../hil/sim/cgminer-server.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { faultMatrix } from '../../hil/testing/fault-matrix.js';
import { estatsMap, parseBracketed, powerOf, workState } from './estats.js';
import { avalonDriver } from './index.js';
import { avalonConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 5000 };
const ACT = { deadlineMs: 10_000 };

interface Rig {
  sim: AvalonSim;
  driver: DeviceDriver;
}
const rigs = rigsClosedAfterEach<Rig>();

async function rig(simOpts: AvalonSimOptions = {}, over: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new AvalonSim({ sleepDelayMs: 150, wakeRampMs: 150, ...simOpts });
  const { port } = await sim.listen();
  const cfg = avalonConfigSchema.parse({
    id: 'av1',
    driver: 'avalon',
    host: '127.0.0.1',
    port,
    timeouts: { connectMs: 500, readMs: 1000 },
    scheduleOffsetS: 0,
    confirmPollMs: 50,
    workLevels: [
      { name: 'eco', level: -1, powerW: 3357 },
      { name: 'normal', level: 0 },
      { name: 'boost', level: 1 },
    ],
    ...over,
  });
  const driver = avalonDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  const r = { sim, driver };
  rigs.push(r);
  return r;
}

function assertRunning(r: Reading): void {
  assert.equal(r.freshness, 'fresh');
  assert.equal(r.state, 'running', JSON.stringify(r));
}

// Captured from public fixtures (see api-facts.md): an A1466 running and an Avalon Q in standby.
const A1466 =
  'Ver[15-194-24102401_25462b2_9ddf522] DNA[020100008c699117] SYSTEMSTATU[Work: In Work, Hash Board: 3 ] Elapsed[975] BOOTBY[0x04.00000000] Temp[31] TMax[78] TAvg[70] Fan1[4275] Fan2[4282] FanR[49%] Vo[296] PS[0 1209 1187 297 3526 1188 3731] WALLPOWER[3731] GHSspd[199241.07] GHSavg[184007.00] MGHS[59459.52 61407.83 63139.66] SoftOFF[0]';
const Q_STANDBY =
  'Ver[Q-25052801_14a19a2] STATE[2] SYSTEMSTATU[Work: In Idle, Hash Board: 1] ITemp[24] TMax[0] Fan1[0] Fan2[0] PS[0 1216 1 0 0 2243 17] GHSspd[0.00] GHSavg[70967.01] SoftOFF[4] WORKMODE[0] WORKLEVEL[0] MPO[800] Nonce Mask[25]';
const A1047 = 'Ver[1047-19120401_d46bc64_0367a8b] SYSTEMSTATU[Work: In Work, Hash Board: 2 ] Elapsed[103840]BOOTBY[1] PS[0 1212 1315 174 2288 1320] GHSspd[37000.1] DH[nan%]';

describe('avalon estats parser', () => {
  test('bracketed pairs: spaces in keys and values, touching pairs, empty values', () => {
    const m = parseBracketed('Key1[] SYSTEMSTATU[Work: In Work, Hash Board: 3 ] Elapsed[1]BOOTBY[0x1] Nonce Mask[25]');
    assert.equal(m.get('Key1'), '');
    assert.equal(m.get('SYSTEMSTATU'), 'Work: In Work, Hash Board: 3');
    assert.equal(m.get('Elapsed'), '1');
    assert.equal(m.get('BOOTBY'), '0x1');
    assert.equal(m.get('Nonce Mask'), '25');
  });

  test('power: WALLPOWER, else the last of a 7-field PS, else the 5th of a 6-field PS', () => {
    assert.equal(powerOf(parseBracketed(A1466)), 3731);
    assert.equal(powerOf(parseBracketed(Q_STANDBY)), 17);
    assert.equal(powerOf(parseBracketed(A1047)), 2288);
    assert.equal(powerOf(parseBracketed('PS[0 1]')), undefined);
    assert.equal(workState(parseBracketed(Q_STANDBY)), 'In Idle');
  });

  test('estatsMap reads every MM ID string and flattens object-shaped summaries', () => {
    const m = estatsMap([{ STATS: 0, 'MM ID0': A1466 }, { 'MM ID0:Summary': { STATS: { GHSmm: '1.5', MGHS: ['1', '2'] } } }, { ID: 'POOL0' }]);
    assert.equal(m.get('GHSspd'), '199241.07');
    assert.equal(m.get('GHSmm'), '1.5');
    assert.equal(m.get('MGHS'), '59459.52 61407.83 63139.66', 'the first occurrence wins');
  });
});

describe('avalon config', () => {
  test('defaults, and no work levels are assumed', () => {
    const cfg = avalonConfigSchema.parse({ id: 'a', driver: 'avalon', host: '10.0.0.7' });
    assert.equal(cfg.port, 4028);
    assert.equal(cfg.scheduleOffsetS, 5);
    assert.deepEqual(cfg.workLevels, []);
    const d = avalonDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
    assert.equal(d.capabilities.profiles, false);
    assert.equal(d.capabilities.powerTarget, null);
  });

  test('bad values are reported with paths', () => {
    const res = avalonConfigSchema.safeParse({ id: 'a', driver: 'avalon', host: 'h', scheduleOffsetS: -1, workLevels: [{ name: 'bad name', level: 99 }] });
    assert.equal(res.success, false);
    const paths = res.error.issues.map((i) => i.path.join('.'));
    for (const p of ['scheduleOffsetS', 'workLevels.0.name', 'workLevels.0.level']) assert.ok(paths.includes(p), paths.join());
  });
});

describe('avalon read', () => {
  test('telemetry from estats in one request', async () => {
    const { driver, sim } = await rig();
    const r = await driver.read(READ);
    assertRunning(r);
    assert.equal(sim.server.requests, 1);
    assert.equal(r.powerW, 3730);
    assert.equal(r.fields.hashrateThs, 200);
    assert.equal(r.fields.temperatureC, 78);
    assert.equal(r.fields.fanRpm, 4304);
    assert.equal(r.fields.workState, 'In Work');
    assert.equal(r.fields.workLevel, 0);
    assert.equal(r.fields.inletTemperatureC, 31);
  });

  test('older firmware with a 6-field PS', async () => {
    const { driver } = await rig({ powerStyle: 'ps6' });
    assert.equal((await driver.read(READ)).powerW, 3730);
  });

  test('a reply without an MM ID section is MALFORMED_RESPONSE, not a crash', async () => {
    const { driver, sim } = await rig();
    sim.handle = () => ({ STATUS: [{ STATUS: 'S', Code: 70 }], STATS: [{ STATS: 0, ID: 'X', 'MM ID0': 42 }] });
    const r = await driver.read(READ);
    assert.equal(r.error?.code, 'MALFORMED_RESPONSE');
    assert.match(r.error?.message ?? '', /av1: .*no "MM ID" section/);
  });

  test('bare inf/nan in the JSON and wrong-type values are tolerated', async () => {
    const { driver, sim } = await rig();
    sim.handle = () =>
      `{"STATUS":[{"STATUS":"S","Code":70}],"STATS":[{"STATS":0,"Max":inf,"Min":nan,"MM ID0":"SYSTEMSTATU[Work: In Work, Hash Board: 1] GHSspd[nan] PS[0 1 2 3 4 5 60] TMax[abc] Fan1[]"}],"id":1}`;
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'fresh');
    assert.equal(r.fields.hashrateThs, null);
    assert.equal(r.powerW, 60);
    assert.equal(r.fields.temperatureC, null);
    assert.equal(r.state, 'unknown');
  });
});

describe('avalon curtail and restore', () => {
  test('softoff/softon with a timestamp, confirmed by read-back (GHSavg stays high in standby)', async () => {
    const { driver, sim } = await rig();
    const t0s = Math.floor(Date.now() / 1000);
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(res.reading.fields.hashrateThs, 0);
    assert.ok((res.reading.powerW ?? 999) <= 60);
    assert.equal(res.reading.fields.workState, 'In Idle');
    const m = /^0,softoff,1:(\d+)$/.exec(sim.actions[0] ?? '');
    assert.ok(m, sim.actions.join());
    assert.ok(Number(m[1]) >= t0s && Number(m[1]) <= t0s + 2);

    const back = await driver.restore!(ACT);
    assertRunning(back.reading);
    assert.match(sim.actions[1] ?? '', /^0,softon,1:\d+$/);
  });

  test('the scheduled time is honoured: with a 1 s offset the miner sleeps only then', async () => {
    const { driver, sim } = await rig({}, { scheduleOffsetS: 1 });
    const t0 = Date.now();
    const res = await driver.curtail!(ACT);
    assert.equal(res.reading.state, 'curtailed');
    assert.ok(res.ackMs < 1000, `acknowledged at once (${res.ackMs} ms)`);
    const ts = Number(/1:(\d+)$/.exec(sim.actions[0] ?? '')?.[1]);
    assert.ok(Date.now() >= ts * 1000, 'confirmed no earlier than the scheduled time');
    assert.ok(Date.now() - t0 < 8000);
  });

  test('firmware reply variants: S "ASC 0 set OK", and softon closing without a reply', async () => {
    const { driver, sim } = await rig({ softoffReply: 'ok', softonReply: 'close' });
    assert.equal((await driver.curtail!(ACT)).reading.state, 'curtailed');
    assertRunning((await driver.restore!(ACT)).reading);
    assert.equal(sim.sleeping, false);
  });

  test('API write access denied (code 45): AUTH_FAILED naming the device', async () => {
    const { driver, sim } = await rig();
    sim.behaviour.denyWrites = true;
    await expectCode(driver.curtail!(ACT), 'AUTH_FAILED', /av1: .*ascset 0,softoff,1:\d+: access denied by the miner \(code 45/);
    assert.equal(sim.sleeping, false);
  });

  test('a model without softoff: DEVICE_ERROR with the firmware message', async () => {
    const { driver, sim } = await rig();
    const handle = sim.handle.bind(sim);
    sim.handle = (req) => (req.command === 'ascset' ? { STATUS: [{ STATUS: 'E', Code: 120, Msg: 'ASC 0 set failed: Unknown option: softoff' }], id: 1 } : handle(req));
    await expectCode(driver.curtail!(ACT), 'DEVICE_ERROR', /Unknown option: softoff/);
  });

  test('acknowledged but ignored: NOT_CONFIRMED naming the last read-back', async () => {
    const { driver, sim } = await rig();
    sim.behaviour.ignoreCurtail = true;
    await expectCode(driver.curtail!({ deadlineMs: 700 }), 'NOT_CONFIRMED', /last read-back: state running, 3730 W, 200 TH\/s/);
  });

  test('a miner that resets the connection fails curtail with the transport error', async () => {
    const { driver, sim } = await rig();
    sim.setFault({ kind: 'reset' });
    await expectCode(driver.curtail!(ACT), 'CONNECTION_CLOSED');
  });
});

describe('avalon work levels as profiles', () => {
  test('listProfiles and setProfile confirmed by WORKLEVEL read-back; out-of-range is the device error', async () => {
    const { driver, sim } = await rig();
    assert.deepEqual(await driver.listProfiles!(READ), [{ name: 'eco', powerW: 3357 }, { name: 'normal' }, { name: 'boost' }]);
    const eco = await driver.setProfile!('eco', ACT);
    assert.equal(eco.reading.fields.workLevel, -1);
    assert.equal(eco.reading.powerW, Math.round(18 + (3730 * 0.9 - 18)));
    assert.equal(sim.workLevel, -1);
    await expectCode(driver.setProfile!('nope', ACT), 'UNSUPPORTED');
    const narrow = await rig({ levelRange: [0, 0] });
    await expectCode(narrow.driver.setProfile!('boost', ACT), 'DEVICE_ERROR', /worklevel out of range/);
  });
});

describe('avalon faults: read() never throws', () => {
  const cases: { fault: Fault; code: ErrorCode }[] = [
    { fault: { kind: 'silent' }, code: 'READ_TIMEOUT' },
    { fault: { kind: 'garbage' }, code: 'MALFORMED_RESPONSE' },
    { fault: { kind: 'truncate' }, code: 'MALFORMED_RESPONSE' },
    { fault: { kind: 'reset' }, code: 'CONNECTION_CLOSED' },
  ];
  faultMatrix(cases, () => rig(), {
    read: READ,
    bad: (bad, good) => assert.equal(bad.powerW, good.powerW),
    recovered: assertRunning,
  });

  test('an oversized reply is capped', async () => {
    const { driver, sim } = await rig({}, { maxResponseBytes: 4096 });
    sim.setFault({ kind: 'flood', bytes: 1 << 20 });
    const r = await driver.read(READ);
    assert.equal(r.error?.code, 'RESPONSE_TOO_LARGE');
    assert.equal(r.freshness, 'missing');
  });
});
