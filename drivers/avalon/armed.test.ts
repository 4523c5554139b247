/**
 * The Avalon armed curtail (DeviceDriver.armCurtail) against the simulator
 * over TCP on 127.0.0.1: encoded ahead, its schedule time stamped and sent by
 * fire() alone, finished by complete() like the plain curtail.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import { AvalonSim, type AvalonSimOptions } from '../../hil/sim/avalon-sim.js';
import { armedSilentThenAborted } from '../../hil/testing/armed.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { avalonDriver } from './index.js';
import { avalonConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const ACT = { deadlineMs: 10_000 };

interface Rig {
  sim: AvalonSim;
  driver: DeviceDriver;
}

const rigs = rigsClosedAfterEach<Rig>();

async function rig(simOpts: AvalonSimOptions = {}, over: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new AvalonSim({ sleepDelayMs: 100, wakeRampMs: 100, ...simOpts });
  const { port } = await sim.listen();
  const cfg = avalonConfigSchema.parse({
    id: 'av1',
    driver: 'avalon',
    host: '127.0.0.1',
    port,
    timeouts: { connectMs: 500, readMs: 1000 },
    scheduleOffsetS: 0,
    confirmPollMs: 50,
    ...over,
  });
  const driver = avalonDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  const r = { sim, driver };
  rigs.push(r);
  return r;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const softoffs = (r: Rig) => r.sim.actions.filter((a) => a.startsWith('0,softoff,'));

describe('avalon armed curtail', () => {
  test('armed without any I/O (there is no session to wait for)', async () => {
    const { sim, driver } = await rig();
    assert.ok(driver.armCurtail!());
    assert.equal(sim.server.requests, 0);
  });

  test('fire() alone puts softoff on the wire; complete() confirms it with times counted from the fire', async () => {
    const r = await rig();
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    const fired = armed.fire();
    assert.ok(fired);
    // nobody waits: the sim still gets the command
    await delay(200);
    assert.equal(softoffs(r).length, 1);
    const t0 = performance.now();
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.state, 'curtailed');
    assert.ok(res.ackMs < 200, `acknowledged when the answer came in, before complete() was called (ackMs ${res.ackMs.toFixed(1)})`);
    assert.ok(res.tookMs >= performance.now() - t0, 'tookMs counts from fire()');
    assert.equal(softoffs(r).length, 1, 'sent once');
    assert.equal(armed.fire(), undefined, 'an arm fires once');
  });

  test('the schedule time is the fire time + scheduleOffsetS, not the arming time', async () => {
    const r = await rig({}, { scheduleOffsetS: 1 });
    const armedAt = Math.floor(Date.now() / 1000);
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    // the next second, as after waiting for a signal edge since the last telemetry cycle
    await delay(1000 - (Date.now() % 1000) + 20);
    const firedAt = Math.floor(Date.now() / 1000);
    assert.ok(firedAt > armedAt);
    const fired = armed.fire();
    assert.ok(fired);
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.deepEqual(softoffs(r), [`0,softoff,1:${firedAt + 1}`]);
    assert.ok(Date.now() >= (firedAt + 1) * 1000, 'confirmed no earlier than the scheduled time');
  });

  test('the answer variants the plain curtail takes: S "ASC 0 set OK", and a close without a reply (read-back decides)', async () => {
    const ok = await rig({ softoffReply: 'ok' });
    const f1 = ok.driver.armCurtail!()?.fire();
    assert.ok(f1);
    assert.equal((await f1.complete(ACT)).reading.state, 'curtailed');

    const closing = await rig();
    const handle = closing.sim.handle.bind(closing.sim);
    // acts on the command, then closes with nothing but the trailing NUL
    closing.sim.handle = (req) => (req.command === 'ascset' ? (handle(req), '') : handle(req));
    const f2 = closing.driver.armCurtail!()?.fire();
    assert.ok(f2);
    assert.equal((await f2.complete(ACT)).reading.state, 'curtailed');
    assert.equal(softoffs(closing).length, 1);
  });

  test('device errors are the plain curtail\'s: code 45 AUTH_FAILED, an unknown option DEVICE_ERROR', async () => {
    const r = await rig();
    r.sim.behaviour.denyWrites = true;
    const f1 = r.driver.armCurtail!()?.fire();
    assert.ok(f1);
    await expectCode(f1.complete(ACT), 'AUTH_FAILED', /av1: .*ascset 0,softoff,1:\d+: access denied by the miner \(code 45/);
    r.sim.behaviour.denyWrites = false;

    const handle = r.sim.handle.bind(r.sim);
    r.sim.handle = (req) => (req.command === 'ascset' ? { STATUS: [{ STATUS: 'E', Code: 120, Msg: 'ASC 0 set failed: Unknown option: softoff' }], id: 1 } : handle(req));
    const f2 = r.driver.armCurtail!()?.fire();
    assert.ok(f2);
    await expectCode(f2.complete(ACT), 'DEVICE_ERROR', /Unknown option: softoff/);
    assert.equal(r.sim.sleeping, false);
  });

  test('faults: reset and garbage are retried the plain way, then reported as the plain curtail does', async () => {
    const r = await rig();
    r.sim.setFault({ kind: 'reset' });
    const f1 = r.driver.armCurtail!()?.fire();
    assert.ok(f1);
    await expectCode(f1.complete({ deadlineMs: 700 }), 'CONNECTION_CLOSED');

    r.sim.setFault({ kind: 'garbage' });
    const f2 = r.driver.armCurtail!()?.fire();
    assert.ok(f2);
    await expectCode(f2.complete({ deadlineMs: 700 }), 'MALFORMED_RESPONSE');
  });

  test('a transient failure of the armed send is retried and confirms', async () => {
    const r = await rig();
    r.sim.setFault({ kind: 'reset' });
    const f = r.driver.armCurtail!()?.fire();
    assert.ok(f);
    setTimeout(() => r.sim.setFault({ kind: 'none' }), 50);
    const res = await f.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(softoffs(r).length, 1);
  });

  test('a silent miner ends in the deadline; an aborted action is CANCELLED and leaves no socket open', async () => {
    const r = await rig();
    r.sim.setFault({ kind: 'silent' });
    await armedSilentThenAborted(r.driver);
  });
});
