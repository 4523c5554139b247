/**
 * The Vnish driver against the Vnish simulator over real HTTP on 127.0.0.1.
 * Sim timings are shrunk (stop 150 ms, ramp 150 ms); deadlines are generous.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver, Reading } from '../contract.js';
import type { ErrorCode } from '../lib/errors.js';
import type { Fault } from '../../hil/sim/cgminer-server.js';
import { VnishSim, type VnishSimOptions } from '../../hil/sim/vnish-sim.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { faultMatrix } from '../../hil/testing/fault-matrix.js';
import { vnishDriver } from './index.js';
import { vnishConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 5000 };
const ACT = { deadlineMs: 8000 };
const SECRET = 's3cret-Pw';

interface Rig {
  sim: VnishSim;
  driver: DeviceDriver;
  port: number;
}
const rigs = rigsClosedAfterEach<Rig>();

async function rig(simOpts: VnishSimOptions = {}, cfgOver: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new VnishSim({ sleepDelayMs: 150, wakeRampMs: 150, password: SECRET, ...simOpts });
  const { port } = await sim.listen();
  const cfg = vnishConfigSchema.parse({
    id: 'v1',
    driver: 'vnish',
    host: '127.0.0.1',
    port,
    password: SECRET,
    timeouts: { connectMs: 500, readMs: 1000 },
    confirmPollMs: 50,
    ...cfgOver,
  });
  const driver = vnishDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  const r = { sim, driver, port };
  rigs.push(r);
  return r;
}

function assertFreshRunning(r: Reading): void {
  assert.equal(r.freshness, 'fresh', r.error?.message);
  assert.equal(r.online, true);
  assert.equal(r.state, 'running');
  assert.equal(r.error, undefined);
}

describe('vnish config', () => {
  test('defaults come from the schema', () => {
    const cfg = vnishConfigSchema.parse({ id: 'v1', driver: 'vnish', host: '10.0.0.5' });
    assert.equal(cfg.port, 80);
    assert.equal(cfg.password, 'admin');
    assert.equal(cfg.curtailMethod, 'stop');
    assert.equal(cfg.fullPowerW, undefined);
    assert.equal(cfg.sleepPowerMaxW, 150);
  });

  test('unknown keys and bad values are all reported with their paths', () => {
    const res = vnishConfigSchema.safeParse({ id: 'v1', driver: 'vnish', host: '', curtailMethod: 'sleep', pasword: 'x' });
    assert.equal(res.success, false);
    const paths = res.error.issues.map((i) => i.path.join('.'));
    assert.ok(paths.includes('host') && paths.includes('curtailMethod'), paths.join());
    assert.ok(res.error.issues.some((i) => i.code === 'unrecognized_keys'));
  });

  test('capabilities: a watt target only with fullPowerW (20..100 % of it), never rebooting', async () => {
    const { driver } = await rig();
    assert.equal(driver.capabilities.powerTarget, null);
    const withFull = await rig({}, { fullPowerW: 3250 });
    assert.deepEqual(withFull.driver.capabilities.powerTarget, { minW: 650, maxW: 3250, reboots: false });
    await expectCode(driver.setPowerTarget!(2000, ACT), 'UNSUPPORTED', /fullPowerW/);
  });
});

describe('vnish read', () => {
  test('returns fresh telemetry of a mining rig, from one summary request', async () => {
    const { sim, driver } = await rig();
    const r = await driver.read(READ);
    assertFreshRunning(r);
    assert.equal(r.powerW, 3250);
    assert.equal(r.fields.hashrateThs, 95);
    assert.equal(r.fields.temperatureC, 70);
    assert.equal(r.fields.pcbTemperatureC, 57);
    assert.equal(r.fields.fanRpm, 4500);
    assert.equal(r.fields.minerState, 'mining');
    assert.equal(r.fields.throttlePercent, 100);
    assert.equal(r.fields.minerType, 'Antminer S19 (Vnish 1.2.6)');
    assert.equal(sim.unlocks, 1, 'the first read also warmed the token');
  });

  test('the web page carries the detection fingerprint', async () => {
    const { port } = await rig();
    const body = await (await fetch(`http://127.0.0.1:${port}/`)).text();
    for (const s of vnishDriver.fingerprint.web.bodyIncludes) assert.ok(body.includes(s), s);
  });
});

describe('vnish curtail, restore, power target', () => {
  test('start() unlocks; curtail and restore are confirmed by read-back with no further unlock', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    assert.equal(sim.unlocks, 1);
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(res.ackMs <= res.tookMs);
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(res.reading.fields.hashrateThs, 0);
    assert.ok(res.reading.powerW !== null && res.reading.powerW <= 150);
    assert.equal(res.reading.fields.minerState, 'stopped');
    const back = await driver.restore!(ACT);
    assertFreshRunning(back.reading);
    assert.deepEqual(sim.actions, ['mining/stop', 'mining/start']);
    assert.equal(sim.unlocks, 1, 'the warm token carried both writes');
  });

  test('curtailMethod "pause" uses pause/resume', async () => {
    const { sim, driver } = await rig({}, { curtailMethod: 'pause' });
    assert.equal((await driver.curtail!(ACT)).reading.fields.minerState, 'paused');
    await driver.restore!(ACT);
    assert.deepEqual(sim.actions, ['mining/pause', 'mining/resume']);
  });

  test('a token the miner forgot (401) gets one fresh unlock and the write goes through', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    sim.expireTokens();
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(sim.unlocks, 2);
    assert.deepEqual(sim.actions, ['mining/stop']);
  });

  test('a power target maps watts to throttle percent and is confirmed by the read-back percent', async () => {
    const { sim, driver } = await rig({}, { fullPowerW: 3250 });
    const res = await driver.setPowerTarget!(1625, ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.fields.throttlePercent, 50);
    assert.equal(res.reading.powerW, 1625);
    assert.deepEqual(sim.actions, ['mining/throttle 50']);
    await expectCode(driver.setPowerTarget!(100, ACT), 'UNSUPPORTED', /outside 650\.\.3250 W/);
    await expectCode(driver.setPowerTarget!(5000, ACT), 'UNSUPPORTED');
    assert.equal(sim.actions.length, 1, 'out-of-range targets are never sent');
  });

  test('a wrong password: start() does not throw, curtail fails AUTH_FAILED naming the device, never the password', async () => {
    const { sim, driver } = await rig({ password: 'other' });
    await driver.start();
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'fresh', 'telemetry does not need the password');
    const err = await expectCode(driver.curtail!(ACT), 'AUTH_FAILED', /^v1: .*refused the password \(HTTP 401/);
    assert.ok(!err.message.includes(SECRET) && !JSON.stringify(err.context).includes(SECRET));
    assert.equal(err.context.device, 'v1');
    assert.deepEqual(sim.actions, []);
  });

  test('writes denied on the device (403) is AUTH_FAILED with the cause, no retry loop', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.writesDenied = true;
    const err = await expectCode(driver.curtail!(ACT), 'AUTH_FAILED', /^v1: .*refused POST \/api\/v1\/mining\/stop \(HTTP 403: Forbidden\)/);
    assert.equal(err.retriable, false);
    assert.equal(sim.unlocks, 1);
  });

  test('a miner that ignores stop gives NOT_CONFIRMED within the deadline', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.ignoreCurtail = true;
    const err = await expectCode(driver.curtail!({ deadlineMs: 600 }), 'NOT_CONFIRMED', /v1: POST \/mining\/stop acknowledged after \d+ ms/);
    assert.match(err.message, /last read-back: state running/);
  });
});

describe('vnish faults: read() never throws and reports stale data', () => {
  const cases: { fault: Fault; code: ErrorCode }[] = [
    { fault: { kind: 'silent' }, code: 'READ_TIMEOUT' },
    { fault: { kind: 'slow', delayMs: 2500 }, code: 'READ_TIMEOUT' },
    { fault: { kind: 'garbage' }, code: 'MALFORMED_RESPONSE' },
    { fault: { kind: 'truncate' }, code: 'CONNECTION_CLOSED' },
    { fault: { kind: 'reset' }, code: 'CONNECTION_CLOSED' },
  ];
  faultMatrix(cases, () => rig(), {
    read: READ,
    name: ({ fault, code }) => `${fault.kind} -> ${code}, stale after a good read, fresh again once cleared`,
    good: assertFreshRunning,
    bad: (bad, good) => {
      assert.ok(bad.error.message.includes('127.0.0.1'), bad.error.message);
      assert.equal(bad.powerW, good.powerW);
    },
    recovered: assertFreshRunning,
  });

  test('an oversized answer is refused (RESPONSE_TOO_LARGE)', async () => {
    const { sim, driver } = await rig({}, { maxResponseBytes: 4096 });
    sim.setFault({ kind: 'flood', bytes: 1024 * 1024 });
    const r = await driver.read(READ);
    assert.equal(r.error?.code, 'RESPONSE_TOO_LARGE');
    assert.equal(r.freshness, 'missing');
  });

  test('malformed JSON and wrong-type answers are MALFORMED_RESPONSE; wrong-type fields become null', async () => {
    const { sim, driver } = await rig();
    sim.summary = () => ({ miner: 'not an object' });
    assert.equal((await driver.read(READ)).error?.code, 'MALFORMED_RESPONSE');
    const orig = sim.handle.bind(sim);
    sim.handle = (req) => (req.path === '/api/v1/summary' ? { body: '{"miner": {"power_usage": 12' } : orig(req));
    assert.equal((await driver.read(READ)).error?.code, 'MALFORMED_RESPONSE');
    sim.handle = (req) =>
      req.path === '/api/v1/summary'
        ? { body: { miner: { power_consumption: 'lots', instant_hashrate: [1], chip_temp: 5, cooling: { fans: 'x' }, miner_status: { miner_state: 7 } } } }
        : orig(req);
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'fresh');
    assert.equal(r.powerW, null);
    assert.equal(r.fields.hashrateThs, null);
    assert.equal(r.fields.fanRpm, null);
    assert.equal(r.state, 'unknown');
  });

  test('a refused port is CONNECT_REFUSED', async () => {
    const { sim, driver } = await rig();
    await sim.close();
    const r = await driver.read(READ);
    assert.equal(r.error?.code, 'CONNECT_REFUSED');
    assert.equal(r.state, 'unreachable');
  });
});
