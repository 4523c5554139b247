/**
 * The Whatsminer API v3 armed curtail (DeviceDriver.armCurtail) against the
 * simulator (length-prefixed JSON, real salted-token and ts checks) over TCP
 * on 127.0.0.1: signed and framed ahead, sent by fire() alone, finished by
 * complete() like the plain curtail.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type net from 'node:net';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import { WhatsminerV3Sim, type WhatsminerV3SimOptions } from '../../hil/sim/whatsminer-v3-sim.js';
import { armedSilentThenAborted } from '../../hil/testing/armed.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { ARMED_TS_MAX_AGE_S } from './driver.js';
import { whatsminerV3Driver } from './index.js';
import { whatsminerV3ConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const ACT = { deadlineMs: 8000 };

interface Rig {
  sim: WhatsminerV3Sim;
  driver: DeviceDriver;
  /** Writes the sim received (accepted or refused): `cmd param -> code`. */
  writes: string[];
  /** The driver's clock is Date.now() + this (ms). */
  clock: { skewMs: number };
}

const rigs = rigsClosedAfterEach<Rig>();

async function rig(simOpts: WhatsminerV3SimOptions = {}, cfg: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new WhatsminerV3Sim({ password: 'Sup3r-pw', sleepDelayMs: 100, wakeRampMs: 100, ...simOpts });
  const { port } = await sim.listen();
  const config = whatsminerV3ConfigSchema.parse({
    id: 'wm3',
    driver: 'whatsminer-v3',
    host: '127.0.0.1',
    port,
    password: 'Sup3r-pw',
    timeouts: { connectMs: 500, readMs: 1000 },
    confirmPollMs: 50,
    maxFrameBytes: 64 * 1024,
    ...cfg,
  });
  const clock = { skewMs: 0 };
  const driver = whatsminerV3Driver.create(config, { logger: pino({ level: 'silent' }), now: () => Date.now() + clock.skewMs });
  const writes: string[] = [];
  const handle = sim.handle.bind(sim);
  sim.handle = (req) => {
    const out = handle(req);
    const r = req as { cmd?: unknown; param?: unknown } | undefined;
    if (typeof r?.cmd === 'string' && r.cmd.startsWith('set.')) writes.push(`${r.cmd} ${String(r.param)} -> ${String(out.code)}`);
    return out;
  };
  const r = { sim, driver, writes, clock };
  rigs.push(r);
  return r;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('whatsminer-v3 armed curtail', () => {
  test('nothing is armed before the salt is held, nor without a password; arming does no I/O', async () => {
    const { sim, driver } = await rig();
    assert.equal(driver.armCurtail!(), undefined);
    const ro = await rig({}, { password: undefined });
    await ro.driver.start();
    assert.equal(ro.driver.armCurtail!(), undefined);
    assert.equal(sim.requests + ro.sim.requests, 0);
  });

  test('fire() alone puts the stop on the wire; complete() confirms it with times counted from the fire', async () => {
    const r = await rig();
    await r.driver.start();
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    const before = r.sim.requests;
    const fired = armed.fire();
    assert.ok(fired);
    // nobody waits: the sim still gets the frame
    await delay(200);
    assert.deepEqual(r.sim.actions, ['service stop']);
    assert.equal(r.sim.requests - before, 1, 'one frame, no salt fetch');
    const t0 = performance.now();
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.state, 'curtailed');
    assert.ok(res.ackMs < 200, `acknowledged when the answer came in, before complete() was called (ackMs ${res.ackMs.toFixed(1)})`);
    assert.ok(res.tookMs >= performance.now() - t0, 'tookMs counts from fire()');
    assert.deepEqual(r.writes, ['set.miner.service stop -> 0'], 'sent once');
  });

  test(`an arm older than ${ARMED_TS_MAX_AGE_S} s makes fire() hand back nothing; the plain curtail then works`, async () => {
    const r = await rig();
    await r.driver.start();
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    r.clock.skewMs = (ARMED_TS_MAX_AGE_S + 1) * 1000;
    assert.equal(armed.fire(), undefined);
    assert.deepEqual(r.writes, []);
    const res = await r.driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
  });

  test('a salt dropped since arming makes fire() hand back nothing', async () => {
    const r = await rig();
    await r.driver.start();
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    (r.driver as unknown as { salt?: string }).salt = undefined;
    assert.equal(armed.fire(), undefined);
  });

  test('an armed ts the miner finds too old is refused (-4); the salt is fetched again, a freshly signed retry confirms', async () => {
    const r = await rig({ maxSkewS: 1 });
    await r.driver.start();
    r.clock.skewMs = -3000; // armed 3 s ago, as if at the last telemetry cycle
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    r.clock.skewMs = 0;
    const fired = armed.fire();
    assert.ok(fired);
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.deepEqual(r.writes, ['set.miner.service stop -> -4', 'set.miner.service stop -> 0']);
  });

  test('a salt the miner no longer takes: one re-fetch, then the retry confirms', async () => {
    const r = await rig();
    await r.driver.start();
    (r.driver as unknown as { salt?: string }).salt = 'not-the-salt';
    const fired = r.driver.armCurtail!()?.fire();
    assert.ok(fired);
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.deepEqual(r.writes, ['set.miner.service stop -> -4', 'set.miner.service stop -> 0']);
  });

  test('writes disabled on the miner: AUTH_FAILED as the plain curtail (after its one salt re-fetch)', async () => {
    const r = await rig();
    await r.driver.start();
    r.sim.behaviour.writesDisabled = true;
    const f = r.driver.armCurtail!()?.fire();
    assert.ok(f);
    await expectCode(f.complete(ACT), 'AUTH_FAILED', /wm3 .*access denied by the miner \(code -4: access denied\)/);
    assert.equal(r.writes.length, 2);
  });

  test('faults: reset and no answer are retried the plain way; a truncated frame and garbage are reported as the plain curtail does', async () => {
    const r = await rig();
    await r.driver.start();
    r.sim.setFault({ kind: 'reset' });
    const f1 = r.driver.armCurtail!()?.fire();
    assert.ok(f1);
    await expectCode(f1.complete({ deadlineMs: 700 }), 'CONNECTION_CLOSED', /^wm3: /);

    r.sim.setFault({ kind: 'truncate' });
    const f2 = r.driver.armCurtail!()?.fire();
    assert.ok(f2);
    await expectCode(f2.complete({ deadlineMs: 700 }), 'MALFORMED_RESPONSE', /truncated/);

    // the garbage's first bytes read as a length over the cap: refused unread, not retried
    r.sim.setFault({ kind: 'garbage' });
    const f3 = r.driver.armCurtail!()?.fire();
    assert.ok(f3);
    await expectCode(f3.complete({ deadlineMs: 700 }), 'RESPONSE_TOO_LARGE');

    r.sim.setFault({ kind: 'none' });
    const hooked = r.sim as unknown as { answer: (s: net.Socket) => void };
    const answer = hooked.answer;
    hooked.answer = (s) => s.end(); // closes without a reply
    const f4 = r.driver.armCurtail!()?.fire();
    assert.ok(f4);
    await expectCode(f4.complete({ deadlineMs: 700 }), 'CONNECTION_CLOSED', /without a reply/);
    hooked.answer = answer;
  });

  test('a silent miner ends in the deadline; an aborted action is CANCELLED and leaves no socket open', async () => {
    const r = await rig();
    await r.driver.start();
    r.sim.setFault({ kind: 'silent' });
    await armedSilentThenAborted(r.driver);
  });
});
