/**
 * The Auradine driver against the Auradine simulator (web API over HTTP and
 * gcminer TCP API) on 127.0.0.1. Sim timings are shrunk; deadlines generous.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver, Reading } from '../contract.js';
import type { ErrorCode } from '../lib/errors.js';
import type { Fault } from '../../hil/sim/cgminer-server.js';
import { AuradineSim, type AuradineSimOptions } from '../../hil/sim/auradine-sim.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { faultMatrix } from '../../hil/testing/fault-matrix.js';
import { auradineDriver } from './index.js';
import { auradineConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 5000 };
const ACT = { deadlineMs: 8000 };
const SECRET = 'aura-S3cret';

interface Rig {
  sim: AuradineSim;
  driver: DeviceDriver;
}
const rigs = rigsClosedAfterEach<Rig>();

async function rig(simOpts: AuradineSimOptions = {}, cfgOver: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new AuradineSim({ sleepDelayMs: 150, wakeRampMs: 150, password: SECRET, ...simOpts });
  const { port, apiPort } = await sim.listen();
  const cfg = auradineConfigSchema.parse({
    id: 'a1',
    driver: 'auradine',
    host: '127.0.0.1',
    port,
    apiPort,
    password: SECRET,
    timeouts: { connectMs: 500, readMs: 1000 },
    confirmPollMs: 50,
    ...cfgOver,
  });
  const driver = auradineDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  const r = { sim, driver };
  rigs.push(r);
  return r;
}

function assertFreshRunning(r: Reading): void {
  assert.equal(r.freshness, 'fresh', r.error?.message);
  assert.equal(r.state, 'running');
  assert.equal(r.error, undefined);
}

describe('auradine config', () => {
  test('defaults come from the schema', () => {
    const cfg = auradineConfigSchema.parse({ id: 'a1', driver: 'auradine', host: '10.0.0.5' });
    assert.equal(cfg.port, 8080);
    assert.equal(cfg.apiPort, 4028);
    assert.equal(cfg.username, 'admin');
    assert.equal(cfg.password, 'admin');
  });

  test('capabilities: a watt target only with a configured range', async () => {
    const { driver } = await rig();
    assert.equal(driver.capabilities.powerTarget, null);
    await expectCode(driver.setPowerTarget!(2000, ACT), 'UNSUPPORTED');
    const ranged = await rig({}, { powerTarget: { minW: 1500, maxW: 3500 } });
    assert.deepEqual(ranged.driver.capabilities.powerTarget, { minW: 1500, maxW: 3500, reboots: false });
  });
});

describe('auradine read', () => {
  test('returns fresh telemetry from /mode, /psu, /fan and the TCP API', async () => {
    const { driver } = await rig();
    const r = await driver.read(READ);
    assertFreshRunning(r);
    assert.equal(r.powerW, 3500);
    assert.equal(r.fields.hashrateThs, 130);
    assert.equal(r.fields.temperatureC, 70);
    assert.equal(r.fields.fanRpm, 5000);
    assert.equal(r.fields.sleep, 'off');
    assert.equal(r.fields.psuMaxW, 3800);
    assert.equal(r.fields.apiError, null);
  });

  test('with the TCP API down, hashrate is null and power decides; the cause is in apiError', async () => {
    const { sim, driver } = await rig();
    await sim.api.close();
    const r = await driver.read(READ);
    assertFreshRunning(r);
    assert.equal(r.fields.hashrateThs, null);
    assert.equal(r.fields.apiError, 'CONNECT_REFUSED');
  });

  test('the web page carries the detection fingerprint', async () => {
    const { sim } = await rig();
    const body = await (await fetch(`http://127.0.0.1:${sim.web.port}/`)).text();
    for (const s of auradineDriver.fingerprint.web.bodyIncludes) assert.ok(body.includes(s), s);
  });
});

describe('auradine curtail, restore, power target', () => {
  test('start() gets the token; sleep on/off are confirmed by read-back with no further login', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    assert.equal(sim.logins, 1);
    const res = await driver.curtail!(ACT);
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(res.reading.fields.sleep, 'on');
    assert.equal(res.reading.fields.hashrateThs, 0);
    assert.ok(res.reading.powerW !== null && res.reading.powerW <= 150);
    const back = await driver.restore!(ACT);
    assertFreshRunning(back.reading);
    assert.deepEqual(sim.actions, ['sleep on', 'sleep off']);
    assert.equal(sim.logins, 1);
  });

  test('a token the miner forgot gets one new login and the write goes through', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    sim.expireTokens();
    assert.equal((await driver.curtail!(ACT)).confirmed, true);
    assert.equal(sim.logins, 2);
  });

  test('a watt target sets custom power mode, confirmed by Mode[0].Power', async () => {
    const { sim, driver } = await rig({}, { powerTarget: { minW: 1500, maxW: 3500 } });
    const res = await driver.setPowerTarget!(2500, ACT);
    assert.equal(res.reading.fields.modePowerW, 2500);
    assert.equal(res.reading.fields.mode, 'custom');
    assert.equal(res.reading.powerW, 2500);
    assert.deepEqual(sim.actions, ['custom power 2500']);
    await expectCode(driver.setPowerTarget!(5000, ACT), 'UNSUPPORTED', /outside 1500\.\.3500 W/);
  });

  test('a wrong password: start() does not throw; curtail is AUTH_FAILED naming the device, never the password', async () => {
    const { sim, driver } = await rig({ password: 'other' });
    await driver.start();
    const err = await expectCode(driver.curtail!(ACT), 'AUTH_FAILED', /^a1: .*refused the login \(HTTP 401: Invalid username or password/);
    assert.ok(!err.message.includes(SECRET) && !JSON.stringify(err.context).includes(SECRET));
    assert.deepEqual(sim.actions, []);
    const r = await driver.read(READ);
    assert.equal(r.error?.code, 'AUTH_FAILED', 'telemetry needs the token too');
  });

  test('writes denied (403) is AUTH_FAILED with the cause', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.writesDenied = true;
    await expectCode(driver.curtail!(ACT), 'AUTH_FAILED', /^a1: .*refused POST \/mode \(HTTP 403: Permission denied\)/);
  });

  test('a miner that ignores sleep gives NOT_CONFIRMED within the deadline', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.ignoreCurtail = true;
    await expectCode(driver.curtail!({ deadlineMs: 600 }), 'NOT_CONFIRMED', /a1: POST \/mode sleep on acknowledged after \d+ ms .*last read-back: state running/);
  });
});

describe('auradine faults: read() never throws and reports stale data', () => {
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
    const orig = sim.handle.bind(sim);
    sim.handle = (req) => (req.path === '/mode' && req.method === 'GET' ? { body: { STATUS: [{ STATUS: 'S' }], Mode: 'x' } } : orig(req));
    assert.equal((await driver.read(READ)).error?.code, 'MALFORMED_RESPONSE');
    sim.handle = (req) => (req.path === '/psu' ? { body: '{"PSU": [' } : orig(req));
    assert.equal((await driver.read(READ)).error?.code, 'MALFORMED_RESPONSE');
    sim.handle = (req) =>
      req.path === '/psu' ? { body: { STATUS: [{ STATUS: 'S' }], PSU: [{ PowerIn: 'lots' }] } } : req.path === '/fan' ? { body: { Fan: 3 } } : orig(req);
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'fresh', r.error?.message);
    assert.equal(r.powerW, null);
    assert.equal(r.fields.fanRpm, null);
  });

  test('a refused port is CONNECT_REFUSED', async () => {
    const { sim, driver } = await rig();
    await sim.close();
    assert.equal((await driver.read(READ)).error?.code, 'CONNECT_REFUSED');
  });
});
