/**
 * The armed curtail of the Braiins driver against the Braiins simulator (a
 * real grpc-js server behind a fault-injecting TCP front): PauseMining
 * prepared with the warm token, fired as one HTTP/2 request on the driver's
 * prepared-calls session, completed through the plain path's checks.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { ArmedAction, DeviceDriver } from '../contract.js';
import { BraiinsSim, type BraiinsSimOptions } from '../../hil/sim/braiins-sim.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { fdsBackTo, openFds } from '../../hil/testing/fds.js';
import { braiinsDriver } from './index.js';
import { braiinsConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const ACT = { deadlineMs: 8000 };
const READ = { deadlineMs: 5000 };
const PASSWORD = 'secret';

type Driver = DeviceDriver & { logins: number; armCurtail(): ArmedAction | undefined };

interface Rig {
  sim: BraiinsSim;
  driver: Driver;
}

const rigs = rigsClosedAfterEach<Rig>();

const unhandled: unknown[] = [];
process.on('unhandledRejection', (err) => unhandled.push(err));

async function rig(simOpts: BraiinsSimOptions = {}, password = PASSWORD): Promise<Rig> {
  const sim = new BraiinsSim({ sleepDelayMs: 150, wakeRampMs: 150, password: PASSWORD, ...simOpts });
  const { port, legacyPort } = await sim.listen();
  const cfg = braiinsConfigSchema.parse({
    id: 'm1',
    driver: 'braiins',
    host: '127.0.0.1',
    port,
    password,
    apiPort: legacyPort,
    apiFallback: false,
    timeouts: { connectMs: 500, readMs: 1000 },
    confirmPollMs: 50,
  });
  const driver = braiinsDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now }) as Driver;
  const r = { sim, driver };
  rigs.push(r);
  return r;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const pauses = (sim: BraiinsSim): number => sim.calls.filter((c) => c === 'PauseMining').length;

/** Arms once the prepared-calls session is up (the first armCurtail asks for it). */
async function armed(driver: Driver): Promise<ArmedAction> {
  for (let i = 0; i < 300; i++) {
    const a = driver.armCurtail();
    if (a) return a;
    await delay(10);
  }
  assert.fail('armCurtail never returned an armed action');
}

function fire(a: ArmedAction) {
  const f = a.fire();
  assert.ok(f, 'fire() sent');
  return f;
}

describe('braiins armed curtail', () => {
  test('not armed before a token exists, nor with wrong credentials', async () => {
    const { sim, driver } = await rig();
    assert.equal(driver.armCurtail(), undefined, 'before start: no token');
    assert.deepEqual(sim.calls, [], 'armCurtail does no I/O before a token exists');
    const bad = await rig({}, 'wrong');
    await expectCode(bad.driver.start(), 'AUTH_FAILED');
    assert.equal(bad.driver.armCurtail(), undefined);
  });

  test('polls, the armed curtail and its read-backs share one HTTP/2 connection', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    assert.equal((await driver.read({ deadlineMs: 2000 })).error, undefined);
    const res = await fire(await armed(driver)).complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal((await driver.read({ deadlineMs: 2000 })).state, 'curtailed');
    assert.equal(sim.accepted, 1, 'one TCP connection to the gRPC port, for every call');
  });

  test('fire + complete curtails and confirms with one PauseMining and no login', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const a = await armed(driver);
    const before = sim.calls.length;
    const res = await fire(a).complete(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(res.ackMs > 0 && res.ackMs <= res.tookMs);
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(sim.calls[before], 'PauseMining', 'the first call is the write itself');
    assert.equal(pauses(sim), 1);
    assert.deepEqual(sim.actions, ['PauseMining']);
    assert.equal(driver.logins, 1);
    assert.equal(sim.sleeping, true);
  });

  test('fire() puts the request on the wire before any await; times count from fire()', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const a = await armed(driver);
    const f = fire(a);
    await delay(150);
    assert.deepEqual(sim.actions, ['PauseMining'], 'the sim got it before complete() was called');
    const res = await f.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(res.ackMs > 0 && res.ackMs < 150, `ackMs ${res.ackMs}: from fire() to when the answer arrived, before complete() was called`);
    assert.ok(res.tookMs >= 150, `tookMs ${res.tookMs} counts from fire()`);
    assert.equal(pauses(sim), 1);
  });

  test('the same armed action is reusable across polls; a token renewed by reads keeps it armed', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    await armed(driver);
    for (let i = 0; i < 3; i++) {
      assert.equal((await driver.read(READ)).freshness, 'fresh');
      assert.ok(driver.armCurtail(), `armed again after poll ${i}`);
    }
    assert.equal(sim.calls.filter((c) => c === 'PauseMining').length, 0, 'arming sends nothing');
  });

  test('a token the miner forgot (UNAUTHENTICATED): one new login and the plain call, which succeeds', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const a = await armed(driver);
    sim.expireTokens();
    const res = await fire(a).complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(driver.logins, 2);
    assert.equal(pauses(sim), 2, 'the refused prepared one, then the plain one');
    assert.deepEqual(sim.actions, ['PauseMining']);
  });

  test('a token replaced since arming: fire() returns undefined; the plain curtail works', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const a = await armed(driver);
    sim.expireTokens();
    assert.equal((await driver.read(READ)).freshness, 'fresh', 'the read logs in again');
    assert.equal(driver.logins, 2);
    assert.equal(a.fire(), undefined);
    assert.equal(pauses(sim), 0);
    assert.ok(driver.armCurtail(), 'armed again at once with the new token');
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
  });

  test('the armed session closed by the peer: fire() returns undefined, and arming reopens it', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const a = await armed(driver);
    sim.setFault({ kind: 'garbage' }); // drops every open connection
    sim.setFault({ kind: 'none' });
    await delay(100);
    assert.equal(a.fire(), undefined);
    assert.equal(pauses(sim), 0);
    const again = await armed(driver);
    const res = await fire(again).complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(pauses(sim), 1);
  });

  test('the armed session reset under a fire() (not yet noticed): completes through the plain retry', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const a = await armed(driver);
    sim.setFault({ kind: 'reset' }); // RST on every open connection
    sim.setFault({ kind: 'none' });
    const f = fire(a);
    const res = await f.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.deepEqual(sim.actions, ['PauseMining'], 'only the plain retry reached the miner');
    assert.ok(res.ackMs >= 95, `acknowledged after actAndConfirm's first retry backoff (${res.ackMs} ms)`);
  });

  test('an error answer rejects as the plain curtail does (PERMISSION_DENIED -> AUTH_FAILED, not retried)', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const a = await armed(driver);
    sim.behaviour.writesDenied = true;
    const plain = await expectCode(driver.curtail!(ACT), 'AUTH_FAILED');
    const err = await expectCode(fire(a).complete(ACT), 'AUTH_FAILED', /^m1 \(127\.0\.0\.1:\d+\) ActionsService\/PauseMining: permission denied by the miner/);
    assert.equal(err.message, plain.message);
    assert.equal(driver.logins, 1);
    assert.equal(pauses(sim), 2);
    assert.equal(sim.sleeping, false);
  });

  test('a miner that acknowledges but ignores the pause: NOT_CONFIRMED, as the plain curtail', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const a = await armed(driver);
    sim.behaviour.ignoreCurtail = true;
    const err = await expectCode(fire(a).complete({ deadlineMs: 800 }), 'NOT_CONFIRMED', /^m1: PauseMining acknowledged after \d+ ms but the device did not reach state "curtailed"/);
    assert.match(err.message, /last read-back: state running/);
    assert.equal(pauses(sim), 1);
  });

  test('a silent peer: complete() ends with READ_TIMEOUT at the call deadline, as the plain curtail', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const a = await armed(driver);
    sim.setFault({ kind: 'silent' });
    const t0 = performance.now();
    const f = fire(a);
    const err = await expectCode(f.complete(ACT), 'READ_TIMEOUT', /ActionsService\/PauseMining: connected but no reply within 1500 ms/);
    const took = performance.now() - t0;
    assert.ok(took >= 1400 && took < 2500, `settled at the 1500 ms call deadline (${Math.round(took)} ms)`);
    assert.equal(driver.armCurtail(), undefined, 'the stuck session was dropped');
    // the plain curtail after it opens a new session, which the silent peer never completes
    // (on a session that stays open, the plain call's own timeout is READ_TIMEOUT: braiins.test.ts)
    await expectCode(driver.curtail!(ACT), 'CONNECT_TIMEOUT', /ActionsService\/PauseMining: no gRPC connection within 1500 ms/);
    assert.ok(err.message.startsWith('m1 (127.0.0.1:'), err.message);
    sim.setFault({ kind: 'none' });
    const res = await fire(await armed(driver)).complete(ACT);
    assert.equal(res.confirmed, true);
  });

  test('a caller that aborts: CANCELLED, the stream reset, no unhandled rejection', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const a = await armed(driver);
    sim.setFault({ kind: 'slow', delayMs: 1000 });
    const ctl = new AbortController();
    const f = fire(a);
    setTimeout(() => ctl.abort(), 100);
    const t0 = performance.now();
    await expectCode(f.complete({ deadlineMs: 8000, signal: ctl.signal }), 'CANCELLED');
    assert.ok(performance.now() - t0 < 500);
    sim.setFault({ kind: 'none' });
    await delay(1200);
    assert.deepEqual(unhandled, []);
    // the session survives a cancelled stream
    assert.ok(driver.armCurtail());
  });

  test('stop() closes the armed session: no descriptor left, fire() afterwards returns undefined', async () => {
    const { driver } = await rig();
    const base = openFds();
    await driver.start();
    const a = await armed(driver);
    assert.ok(openFds() > base);
    await driver.stop();
    // the sim's side of each connection closes when ours does
    const after = await fdsBackTo(base);
    assert.ok(after <= base, `file descriptors: ${base} before, ${after} after stop`);
    assert.equal(a.fire(), undefined);
  });
});
