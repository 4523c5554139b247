/**
 * The armed curtail of the ePIC driver (armCurtail / fire / complete, see
 * ArmedAction) against the ePIC simulator over real HTTP on 127.0.0.1.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import type { Fault } from '../../hil/sim/cgminer-server.js';
import { EpicSim } from '../../hil/sim/epic-sim.js';
import { fireArmed, outcome } from '../../hil/testing/armed.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { fdsBackTo, openFds } from '../../hil/testing/fds.js';
import { epicDriver } from './index.js';
import { epicConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const ACT = { deadlineMs: 8000 };
const READ = { deadlineMs: 5000 };

interface Rig {
  sim: EpicSim;
  driver: DeviceDriver;
}
const rigs = rigsClosedAfterEach<Rig>();

async function rig(cfgOver: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new EpicSim({ sleepDelayMs: 100, wakeRampMs: 100, password: 'pw' });
  const { port } = await sim.listen();
  const cfg = epicConfigSchema.parse({
    id: 'e1',
    driver: 'epic',
    host: '127.0.0.1',
    port,
    password: 'pw',
    timeouts: { connectMs: 500, readMs: 1000 },
    confirmPollMs: 50,
    ...cfgOver,
  });
  const driver = epicDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  const r = { sim, driver };
  rigs.push(r);
  return r;
}

/** A rig with a warm connection, as after a poll cycle. */
async function warmRig(cfgOver: Record<string, unknown> = {}): Promise<Rig> {
  const r = await rig(cfgOver);
  await r.driver.start();
  assert.equal((await r.driver.read(READ)).freshness, 'fresh');
  return r;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('epic armed curtail', () => {
  test('armed before any request (no session to wait for): fire() opens the connection', async () => {
    const { driver, sim } = await rig();
    const armed = driver.armCurtail?.();
    assert.ok(armed);
    assert.equal(sim.server.requests, 0, 'arming does no I/O');
    const res = await armed.fire()!.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.deepEqual(sim.actions, ['miner Stop']);
  });

  test('fire() + complete(): one Stop on the warm connection, confirmed', async () => {
    const { driver, sim } = await warmRig();
    const connections = sim.server.connections;
    let connectionsAtStop = -1;
    const handle = sim.handle.bind(sim);
    sim.handle = (req) => {
      if (req.path === '/miner') connectionsAtStop = sim.server.connections;
      return handle(req);
    };
    const res = await fireArmed(driver).complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.state, 'curtailed');
    assert.ok(res.ackMs <= res.tookMs);
    assert.deepEqual(sim.actions, ['miner Stop']);
    assert.equal(connectionsAtStop, connections, 'the Stop went over the pooled connection');
  });

  test('the Stop is on the wire before any await; ackMs counts from fire() to its answer', async () => {
    const { driver, sim } = await warmRig();
    const fired = fireArmed(driver);
    await sleep(200);
    assert.deepEqual(sim.actions, ['miner Stop'], 'the device got it before complete()');
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(res.ackMs < 200, `ackMs ${res.ackMs} is the answer's arrival, not complete()'s wait`);
    assert.ok(res.tookMs >= 200);
    assert.deepEqual(sim.actions, ['miner Stop']);
  });

  test('one armed action re-fired after use sends again (idempotent Stop); arming keeps the encoded request', async () => {
    const { driver, sim } = await warmRig();
    const a = driver.armCurtail?.();
    assert.ok(a);
    await a.fire()!.complete(ACT);
    await driver.restore!(ACT);
    await driver.armCurtail!()!.fire()!.complete(ACT);
    assert.deepEqual(sim.actions, ['miner Stop', 'miner Autostart', 'miner Stop']);
  });

  test('the warm connection closed by the device before fire(): a new one carries it', async () => {
    const { driver, sim } = await warmRig();
    sim.server.keepAliveMs = 50;
    await driver.read(READ);
    await sleep(200);
    const connections = sim.server.connections;
    const res = await fireArmed(driver).complete(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(sim.server.connections > connections);
    assert.deepEqual(sim.actions, ['miner Stop']);
  });

  test('faults end as the plain curtail ends', async () => {
    const cases: { fault: Fault; deadlineMs: number }[] = [
      { fault: { kind: 'garbage' }, deadlineMs: 600 },
      { fault: { kind: 'reset' }, deadlineMs: 600 },
      { fault: { kind: 'silent' }, deadlineMs: 2500 },
      { fault: { kind: 'truncate' }, deadlineMs: 600 },
    ];
    for (const { fault, deadlineMs } of cases) {
      const plain = await warmRig();
      plain.sim.setFault(fault);
      const armedRig = await warmRig();
      const armed = armedRig.driver.armCurtail?.();
      armedRig.sim.setFault(fault);
      const want = await outcome(() => plain.driver.curtail!({ deadlineMs }));
      const got = await outcome(() => armed!.fire()!.complete({ deadlineMs }));
      assert.notEqual(want, 'ok', fault.kind);
      assert.equal(got, want, `${fault.kind}: armed ${got}, plain ${want}`);
    }
    const denied = await warmRig();
    const armed = denied.driver.armCurtail?.();
    denied.sim.behaviour.writesDenied = true;
    await expectCode(armed!.fire()!.complete(ACT), 'AUTH_FAILED', /^e1: .*denied POST \/miner \(HTTP 403/);
    const wrongPw = await warmRig({ password: 'wrong' });
    await expectCode(wrongPw.driver.armCurtail!()!.fire()!.complete(ACT), 'AUTH_FAILED', /refused the password \(HTTP 401/);
    const rejecting = await warmRig();
    const handle = rejecting.sim.handle.bind(rejecting.sim);
    rejecting.sim.handle = (req) => (req.path === '/miner' ? { body: { result: false, error: 'Busy tuning' } } : handle(req));
    await expectCode(rejecting.driver.armCurtail!()!.fire()!.complete(ACT), 'DEVICE_ERROR', /rejected POST \/miner: Busy tuning/);
  });

  test('a garbled first answer is retried the plain way and succeeds', async () => {
    const { driver, sim } = await warmRig();
    const armed = driver.armCurtail?.();
    sim.setFault({ kind: 'garbage' });
    const fired = armed!.fire()!;
    setTimeout(() => sim.setFault({ kind: 'none' }), 30);
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.deepEqual(sim.actions, ['miner Stop'], 'the garbled one never reached the handler');
  });

  test('aborted by opts.signal: CANCELLED, the connection closed, no unhandled rejection', async () => {
    const { driver, sim } = await warmRig();
    const before = openFds();
    sim.setFault({ kind: 'silent' });
    const ctl = new AbortController();
    const fired = fireArmed(driver);
    setTimeout(() => ctl.abort(), 50);
    await expectCode(fired.complete({ deadlineMs: 5000, signal: ctl.signal }), 'CANCELLED');
    assert.ok((await fdsBackTo(before - 1)) <= before - 1, 'the taken connection is closed');
    // a signal aborted before complete(): the send is dropped too
    sim.setFault({ kind: 'none' });
    await driver.read(READ);
    const base = openFds();
    sim.setFault({ kind: 'silent' });
    const late = fireArmed(driver);
    await expectCode(late.complete({ deadlineMs: 5000, signal: AbortSignal.abort() }), 'CANCELLED');
    assert.ok((await fdsBackTo(base - 1)) <= base - 1);
  });
});
