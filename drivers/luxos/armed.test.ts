/**
 * The LuxOS armed curtail (DeviceDriver.armCurtail) against the LuxOS
 * simulator over TCP on 127.0.0.1: prepared with the session held, sent by
 * fire() alone, finished by complete() like the plain curtail.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import { LuxosSim, type LuxosSimOptions } from '../../hil/sim/luxos-sim.js';
import { luxosDriver } from './index.js';
import { luxosConfigSchema } from './schema.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const ACT = { deadlineMs: 8000 };
const READ = { deadlineMs: 5000 };

interface Rig {
  sim: LuxosSim;
  driver: DeviceDriver;
  commands: string[];
}

const rigs = rigsClosedAfterEach<Rig>();

async function rig(simOpts: LuxosSimOptions = {}): Promise<Rig> {
  const sim = new LuxosSim({ sleepDelayMs: 100, wakeRampMs: 100, ...simOpts });
  const { port } = await sim.listen();
  const cfg = luxosConfigSchema.parse({ id: 'm1', driver: 'luxos', host: '127.0.0.1', port, timeouts: { connectMs: 500, readMs: 1000 }, confirmPollMs: 50 });
  const driver = luxosDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  const commands: string[] = [];
  const handle = sim.handle.bind(sim);
  sim.handle = (req) => {
    commands.push(req.command);
    return handle(req);
  };
  const r = { sim, driver, commands };
  rigs.push(r);
  return r;
}

/** A read (which warms the session in the background), then waits until the session is there. */
async function withSession(r: Rig): Promise<void> {
  await r.driver.read(READ);
  for (let i = 0; i < 100 && (r.driver as unknown as { sessionId?: string }).sessionId === undefined; i++) await new Promise((res) => setTimeout(res, 10));
  assert.ok((r.driver as unknown as { sessionId?: string }).sessionId, 'a session was warmed');
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('luxos armed curtail', () => {
  test('nothing is armed before a session exists', async () => {
    const { driver, commands } = await rig();
    assert.equal(driver.armCurtail!(), undefined);
    assert.deepEqual(commands, [], 'arming does no I/O');
  });

  test('fire() alone puts the command on the wire; complete() confirms it with times counted from the fire', async () => {
    const r = await rig();
    await withSession(r);
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    const before = r.commands.length;
    const fired = armed.fire();
    assert.ok(fired);
    // nobody waits: the sim still gets the command
    await delay(200);
    assert.deepEqual(r.sim.actions, ['curtail sleep']);
    assert.deepEqual(r.commands.slice(before), ['curtail'], 'one command, no logon');
    const t0 = performance.now();
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.state, 'curtailed');
    assert.ok(res.ackMs < 200, `acknowledged when the answer came in, before complete() was called (ackMs ${res.ackMs.toFixed(1)})`);
    assert.ok(res.tookMs >= performance.now() - t0, 'tookMs counts from fire()');
    assert.deepEqual(r.sim.actions, ['curtail sleep'], 'sent once');
  });

  test('a session that ended since arming makes fire() hand back nothing; the plain curtail then works', async () => {
    const r = await rig();
    await withSession(r);
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    await r.driver.stop(); // logs off: the session the arm was built with is gone
    assert.equal(armed.fire(), undefined);
    const res = await r.driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
  });

  test('a session the miner dropped is refused; the answer gets one fresh logon and the curtail still confirms', async () => {
    const r = await rig();
    await withSession(r);
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    r.sim.takeSessionElsewhere(); // the miner no longer knows our session id
    const fired = armed.fire();
    assert.ok(fired);
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(r.sim.sleeping, true);
    assert.equal(r.commands.filter((c) => c === 'curtail').length, 2, 'the stale id was tried once, then the adopted session carried it');
  });

  test('faults: a reset connection is retried the plain way; a silent miner ends in the deadline; an aborted action is CANCELLED', async () => {
    const r = await rig();
    await withSession(r);
    r.sim.setFault({ kind: 'reset' });
    const f1 = r.driver.armCurtail!()?.fire();
    assert.ok(f1);
    // the plain retries keep meeting the reset: the transport error is reported
    await expectCode(f1.complete({ deadlineMs: 700 }), 'CONNECTION_CLOSED');

    r.sim.setFault({ kind: 'silent' });
    const f2 = r.driver.armCurtail!()?.fire();
    assert.ok(f2);
    const t0 = Date.now();
    const err = await f2.complete({ deadlineMs: 600 }).then(
      () => assert.fail('a silent miner cannot confirm'),
      (e: unknown) => e as { code: string },
    );
    assert.ok(['READ_TIMEOUT', 'NOT_CONFIRMED', 'DEADLINE_EXCEEDED'].includes(err.code), `code ${err.code}`);
    assert.ok(Date.now() - t0 < 3000, 'settles near the deadline');

    const f3 = r.driver.armCurtail!()?.fire();
    assert.ok(f3);
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(), 50);
    await expectCode(f3.complete({ deadlineMs: 30_000, signal: ctl.signal }), 'CANCELLED');
    r.sim.setFault({ kind: 'none' });
  });

  test('garbage in answer to the armed command is MALFORMED_RESPONSE after the plain retries', async () => {
    const r = await rig();
    await withSession(r);
    r.sim.setFault({ kind: 'garbage' });
    const f = r.driver.armCurtail!()?.fire();
    assert.ok(f);
    await expectCode(f.complete({ deadlineMs: 700 }), 'MALFORMED_RESPONSE');
  });
});
