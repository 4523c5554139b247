/**
 * The ePIC driver against the ePIC simulator over real HTTP on 127.0.0.1.
 * Sim timings are shrunk (stop 150 ms, ramp 150 ms); deadlines are generous.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver, Reading } from '../contract.js';
import type { ErrorCode } from '../lib/errors.js';
import type { Fault } from '../../hil/sim/cgminer-server.js';
import { EpicSim, type EpicSimOptions } from '../../hil/sim/epic-sim.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { faultMatrix } from '../../hil/testing/fault-matrix.js';
import { epicDriver } from './index.js';
import { epicConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 5000 };
const ACT = { deadlineMs: 8000 };
const SECRET = 'epic-S3cret';

interface Rig {
  sim: EpicSim;
  driver: DeviceDriver;
}
const rigs = rigsClosedAfterEach<Rig>();

async function rig(simOpts: EpicSimOptions = {}, cfgOver: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new EpicSim({ sleepDelayMs: 150, wakeRampMs: 150, password: SECRET, ...simOpts });
  const { port } = await sim.listen();
  const cfg = epicConfigSchema.parse({
    id: 'e1',
    driver: 'epic',
    host: '127.0.0.1',
    port,
    password: SECRET,
    timeouts: { connectMs: 500, readMs: 1000 },
    confirmPollMs: 50,
    ...cfgOver,
  });
  const driver = epicDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  const r = { sim, driver };
  rigs.push(r);
  return r;
}

function assertFreshRunning(r: Reading): void {
  assert.equal(r.freshness, 'fresh', r.error?.message);
  assert.equal(r.state, 'running');
  assert.equal(r.error, undefined);
}

describe('epic config', () => {
  test('defaults come from the schema', () => {
    const cfg = epicConfigSchema.parse({ id: 'e1', driver: 'epic', host: '10.0.0.5' });
    assert.equal(cfg.port, 4028);
    assert.equal(cfg.password, 'letmein');
    assert.equal(cfg.powerTuneAlgo, 'PowerTune');
    assert.equal(cfg.powerTarget, undefined);
  });

  test('a half-set or inverted power range is rejected with its path', () => {
    const half = epicConfigSchema.safeParse({ id: 'e1', driver: 'epic', host: 'h', powerTarget: { minW: 1000 } });
    assert.equal(half.success, false);
    assert.ok(half.error.issues.some((i) => i.path.join('.') === 'powerTarget.maxW'));
    const inverted = epicConfigSchema.safeParse({ id: 'e1', driver: 'epic', host: 'h', powerTarget: { minW: 3000, maxW: 2000 } });
    assert.equal(inverted.success, false);
    assert.ok(inverted.error.issues.some((i) => i.path.join('.') === 'powerTarget.minW'));
    const old = epicConfigSchema.safeParse({ id: 'e1', driver: 'epic', host: 'h', powerTargetMinW: 1000, powerTargetMaxW: 3000 });
    assert.equal(old.success, false, 'the old flat keys are unknown');
  });

  test('capabilities: a watt target only with a configured range, never rebooting', async () => {
    const { driver } = await rig();
    assert.equal(driver.capabilities.powerTarget, null);
    await expectCode(driver.setPowerTarget!(2000, ACT), 'UNSUPPORTED', /powerTarget \{minW, maxW\}/);
    const ranged = await rig({}, { powerTarget: { minW: 1500, maxW: 3300 } });
    assert.deepEqual(ranged.driver.capabilities.powerTarget, { minW: 1500, maxW: 3300, reboots: false });
  });
});

describe('epic read', () => {
  test('returns fresh telemetry from one GET /summary', async () => {
    const { sim, driver } = await rig();
    const r = await driver.read(READ);
    assertFreshRunning(r);
    assert.equal(sim.server.requests, 1);
    assert.equal(r.powerW, 3300);
    assert.equal(r.fields.hashrateThs, 110);
    assert.equal(r.fields.temperatureC, 68);
    assert.equal(r.fields.fanRpm, 4800);
    assert.equal(r.fields.operatingState, 'Mining');
    assert.equal(r.fields.tuneAlgorithm, 'VoltageOptimizer');
    assert.equal(r.fields.software, 'PowerPlay-BM v1.10.0');
  });

  test('the web page carries the detection fingerprint', async () => {
    const { sim } = await rig();
    const body = await (await fetch(`http://127.0.0.1:${sim.server.port}/`)).text();
    for (const s of epicDriver.fingerprint.web.bodyIncludes) assert.ok(body.includes(s), s);
  });
});

describe('epic curtail, restore, power target', () => {
  test('Stop and Autostart are confirmed by read-back', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    assert.equal(sim.server.requests, 0, 'start() does no I/O');
    const res = await driver.curtail!(ACT);
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(res.reading.fields.operatingState, 'Idling');
    assert.equal(res.reading.fields.hashrateThs, 0);
    assert.ok(res.reading.powerW !== null && res.reading.powerW <= 150);
    const back = await driver.restore!(ACT);
    assertFreshRunning(back.reading);
    assert.deepEqual(sim.actions, ['miner Stop', 'miner Autostart']);
  });

  test('a watt target enables the tuner and sets the PowerTune algorithm; read-back confirms it', async () => {
    const { sim, driver } = await rig({}, { powerTarget: { minW: 1500, maxW: 3300 } });
    const res = await driver.setPowerTarget!(2500, ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.fields.tuneAlgorithm, 'PowerTune');
    assert.equal(res.reading.fields.tuneTarget, 2500);
    assert.equal(res.reading.powerW, 2500);
    assert.deepEqual(sim.actions, ['perpetualtune true', 'perpetualtune/algo PowerTune 2500']);
    assert.deepEqual(sim.algorithm, { name: 'PowerTune', target: 2500, minThrottle: 1000, step: 100 });
    await expectCode(driver.setPowerTarget!(900, ACT), 'UNSUPPORTED', /outside 1500\.\.3300 W/);
  });

  test('the device rejecting a target (result false) is DEVICE_ERROR with its reason', async () => {
    const { driver } = await rig({ powerTuneMinW: 2000 }, { powerTarget: { minW: 1500, maxW: 3300 } });
    await expectCode(driver.setPowerTarget!(1600, ACT), 'DEVICE_ERROR', /^e1: .*rejected POST \/perpetualtune\/algo: Target 1600 outside 2000\.\.3300/);
  });

  test('a wrong password is AUTH_FAILED naming the device, never the password', async () => {
    const { sim, driver } = await rig({ password: 'other' });
    const err = await expectCode(driver.curtail!(ACT), 'AUTH_FAILED', /^e1: .*refused the password \(HTTP 401/);
    assert.ok(!err.message.includes(SECRET) && !JSON.stringify(err.context).includes(SECRET));
    assert.deepEqual(sim.actions, []);
  });

  test('writes disabled (403) is AUTH_FAILED with the cause', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.writesDenied = true;
    await expectCode(driver.curtail!(ACT), 'AUTH_FAILED', /^e1: .*denied POST \/miner \(HTTP 403: API writes are disabled\)/);
  });

  test('a miner that ignores Stop gives NOT_CONFIRMED within the deadline', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.ignoreCurtail = true;
    await expectCode(driver.curtail!({ deadlineMs: 600 }), 'NOT_CONFIRMED', /e1: POST Stop acknowledged after \d+ ms .*last read-back: state running/);
  });
});

describe('epic faults: read() never throws and reports stale data', () => {
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
    bad: (bad) => assert.ok(bad.error.message.includes('127.0.0.1'), bad.error.message),
    recovered: assertFreshRunning,
  });

  test('an oversized answer is refused (RESPONSE_TOO_LARGE)', async () => {
    const { sim, driver } = await rig({}, { maxResponseBytes: 4096 });
    sim.setFault({ kind: 'flood', bytes: 1024 * 1024 });
    assert.equal((await driver.read(READ)).error?.code, 'RESPONSE_TOO_LARGE');
  });

  test('malformed JSON and wrong-type answers are MALFORMED_RESPONSE; wrong-type fields become null', async () => {
    const { sim, driver } = await rig();
    sim.summary = () => ({ Status: 'Mining' });
    assert.equal((await driver.read(READ)).error?.code, 'MALFORMED_RESPONSE');
    const orig = sim.handle.bind(sim);
    sim.handle = (req) => (req.path === '/summary' ? { body: '{"Status": {' } : orig(req));
    assert.equal((await driver.read(READ)).error?.code, 'MALFORMED_RESPONSE');
    sim.handle = (req) =>
      req.path === '/summary' ? { body: { Status: { 'Operating State': 5 }, HBs: 'x', 'Power Supply Stats': [], 'Fans Rpm': 7, PerpetualTune: null } } : orig(req);
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
    assert.equal((await driver.read(READ)).error?.code, 'CONNECT_REFUSED');
  });
});
