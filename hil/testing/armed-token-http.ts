/**
 * The armed-curtail tests shared by the HTTP families whose writes carry a
 * token from a login (Auradine: login, VNish: unlock): each family's
 * armed.test.ts registers them inside its own `describe` with an adapter
 * naming its simulator's vocabulary. What differs per family (refusal
 * messages, curtail methods) stays in that file.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DeviceDriver } from '../../drivers/contract.js';
import type { Fault } from '../sim/cgminer-server.js';
import type { HttpSimServer } from '../sim/http-server.js';
import { fireArmed, outcome } from './armed.js';
import { expectCode } from './expect-code.js';
import { fdsBackTo, openFds } from './fds.js';

/** What the shared tests need of a family's simulator. */
export interface TokenHttpSim {
  readonly actions: string[];
  setFault(f: Fault): void;
  /** The device forgets every token it gave out. */
  expireTokens(): void;
}

export interface TokenHttpFamily<S extends TokenHttpSim> {
  /** A driver with a token and a warm connection, as after a poll cycle (closed by the family's afterEach). */
  warmRig(): Promise<{ driver: DeviceDriver; sim: S }>;
  /** The simulator's web server (connections accepted, keep-alive). */
  web(sim: S): HttpSimServer;
  /** Logins (or unlocks) the device has answered. */
  logins(sim: S): number;
  /** How the simulator logs the curtail and the restore, e.g. 'sleep on' / 'sleep off'. */
  curtailed: string;
  restored: string;
  /** The plain read that keeps the token and the connection current. */
  read: { deadlineMs: number };
}

const ACT = { deadlineMs: 8000 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function tokenHttpArmedTests<S extends TokenHttpSim>(f: TokenHttpFamily<S>): void {
  test(`the curtail is on the wire before any await; ackMs counts from fire() to its answer`, async () => {
    const { driver, sim } = await f.warmRig();
    const fired = fireArmed(driver);
    await sleep(200);
    assert.deepEqual(sim.actions, [f.curtailed], 'the device got it before complete()');
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(res.ackMs < 200, `ackMs ${res.ackMs} is the answer's arrival, not complete()'s wait`);
    assert.ok(res.tookMs >= 200);
    assert.deepEqual(sim.actions, [f.curtailed]);
  });

  test('a token replaced since arming: fire() gives undefined (the plain path runs)', async () => {
    const { driver, sim } = await f.warmRig();
    const armed = driver.armCurtail?.();
    assert.ok(armed);
    // the device forgets the token; the next plain write logs in again
    sim.expireTokens();
    await driver.restore!(ACT);
    assert.equal(f.logins(sim), 2);
    assert.equal(armed.fire(), undefined);
    const again = driver.armCurtail?.();
    assert.ok(again, 'armed anew with the new token');
    await again.fire()!.complete(ACT);
    assert.deepEqual(sim.actions, [f.restored, f.curtailed]);
  });

  test('a token the device dropped without our knowing: refused, one login, one plain retry', async () => {
    const { driver, sim } = await f.warmRig();
    const armed = driver.armCurtail?.();
    sim.expireTokens();
    const res = await armed!.fire()!.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(f.logins(sim), 2);
    assert.deepEqual(sim.actions, [f.curtailed]);
  });

  test('the warm connection closed by the device before fire(): a new one carries it', async () => {
    const { driver, sim } = await f.warmRig();
    f.web(sim).keepAliveMs = 50;
    await driver.read(f.read);
    await sleep(200);
    const connections = f.web(sim).connections;
    const res = await fireArmed(driver).complete(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(f.web(sim).connections > connections);
    assert.deepEqual(sim.actions, [f.curtailed]);
  });

  test('faults end as the plain curtail ends', async () => {
    const cases: { fault: Fault; deadlineMs: number }[] = [
      { fault: { kind: 'garbage' }, deadlineMs: 600 },
      { fault: { kind: 'reset' }, deadlineMs: 600 },
      { fault: { kind: 'silent' }, deadlineMs: 2500 },
      { fault: { kind: 'truncate' }, deadlineMs: 600 },
    ];
    for (const { fault, deadlineMs } of cases) {
      const plain = await f.warmRig();
      plain.sim.setFault(fault);
      const armedRig = await f.warmRig();
      const armed = armedRig.driver.armCurtail?.();
      armedRig.sim.setFault(fault);
      const want = await outcome(() => plain.driver.curtail!({ deadlineMs }));
      const got = await outcome(() => armed!.fire()!.complete({ deadlineMs }));
      assert.notEqual(want, 'ok', fault.kind);
      assert.equal(got, want, `${fault.kind}: armed ${got}, plain ${want}`);
    }
  });

  test('a garbled first answer is retried the plain way and succeeds', async () => {
    const { driver, sim } = await f.warmRig();
    const armed = driver.armCurtail?.();
    sim.setFault({ kind: 'garbage' });
    const fired = armed!.fire()!;
    setTimeout(() => sim.setFault({ kind: 'none' }), 30);
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.deepEqual(sim.actions, [f.curtailed], 'the garbled one never reached the handler');
  });

  test('aborted by opts.signal: CANCELLED, the connection closed, no unhandled rejection', async () => {
    const { driver, sim } = await f.warmRig();
    const before = openFds();
    sim.setFault({ kind: 'silent' });
    const ctl = new AbortController();
    const fired = fireArmed(driver);
    setTimeout(() => ctl.abort(), 50);
    await expectCode(fired.complete({ deadlineMs: 5000, signal: ctl.signal }), 'CANCELLED');
    assert.ok((await fdsBackTo(before - 1)) <= before - 1, 'the taken connection is closed');
    // a signal aborted before complete(): the send is dropped too
    sim.setFault({ kind: 'none' });
    await driver.read(f.read);
    const base = openFds();
    sim.setFault({ kind: 'silent' });
    const late = fireArmed(driver);
    await expectCode(late.complete({ deadlineMs: 5000, signal: AbortSignal.abort() }), 'CANCELLED');
    assert.ok((await fdsBackTo(base - 1)) <= base - 1);
  });
}
