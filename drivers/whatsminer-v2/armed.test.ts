/**
 * The Whatsminer API v2 armed curtail (DeviceDriver.armCurtail) against the
 * simulator over TCP on 127.0.0.1 (real md5crypt/AES token checks): sealed
 * with the token held, sent by fire() alone, finished by complete() like the
 * plain curtail.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import { WhatsminerV2Sim, type WhatsminerV2SimOptions } from '../../hil/sim/whatsminer-v2-sim.js';
import { armedSilentThenAborted } from '../../hil/testing/armed.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { whatsminerV2Driver } from './index.js';
import { whatsminerV2ConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const ACT = { deadlineMs: 8000 };

interface Rig {
  sim: WhatsminerV2Sim;
  driver: DeviceDriver;
  /** Encrypted requests the sim received (accepted or refused), in order. */
  writes: string[];
}

const rigs = rigsClosedAfterEach<Rig>();

async function rig(simOpts: WhatsminerV2SimOptions = {}, cfg: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new WhatsminerV2Sim({ password: 'S3cret_1', sleepDelayMs: 100, wakeRampMs: 100, ...simOpts });
  const { port } = await sim.listen();
  const config = whatsminerV2ConfigSchema.parse({
    id: 'wm1',
    driver: 'whatsminer-v2',
    host: '127.0.0.1',
    port,
    password: 'S3cret_1',
    timeouts: { connectMs: 500, readMs: 1000 },
    confirmPollMs: 50,
    ...cfg,
  });
  const driver = whatsminerV2Driver.create(config, { logger: pino({ level: 'silent' }), now: Date.now });
  const writes: string[] = [];
  // the sim's hook for encrypted requests: count every one, refused or not
  const hooked = sim as unknown as { raw: (text: string) => unknown };
  const raw = hooked.raw.bind(sim);
  hooked.raw = (text) => {
    if (text.includes('"enc"')) writes.push(text);
    return raw(text);
  };
  const r = { sim, driver, writes };
  rigs.push(r);
  return r;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('whatsminer-v2 armed curtail', () => {
  test('nothing is armed before a token is held, nor without a password; arming does no I/O', async () => {
    const { sim, driver } = await rig();
    assert.equal(driver.armCurtail!(), undefined);
    const ro = await rig({}, { password: undefined });
    await ro.driver.start();
    assert.equal(ro.driver.armCurtail!(), undefined);
    assert.equal(sim.server.requests + ro.sim.server.requests, 0);
  });

  test('fire() alone puts power_off on the wire; complete() confirms it with times counted from the fire', async () => {
    const r = await rig();
    await r.driver.start();
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    const before = r.sim.server.requests;
    const fired = armed.fire();
    assert.ok(fired);
    // nobody waits: the sim still gets the command
    await delay(200);
    assert.deepEqual(r.sim.actions, ['power_off respbefore=true']);
    assert.equal(r.sim.server.requests - before, 1, 'one request, no get_token');
    const t0 = performance.now();
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.state, 'curtailed');
    assert.ok(res.ackMs < 200, `acknowledged when the answer came in, before complete() was called (ackMs ${res.ackMs.toFixed(1)})`);
    assert.ok(res.tookMs >= performance.now() - t0, 'tookMs counts from fire()');
    assert.equal(r.writes.length, 1, 'sent once');
    assert.equal(r.sim.tokensIssued, 1);
  });

  test('the sealed request is made once per token, however often it is armed', async () => {
    const r = await rig();
    await r.driver.start();
    const sealed = () => (r.driver as unknown as { sealedCurtail?: { bytes: Buffer } }).sealedCurtail?.bytes;
    r.driver.armCurtail!();
    const first = sealed();
    assert.ok(first);
    r.driver.armCurtail!();
    assert.equal(sealed(), first);
  });

  test('a token dropped since arming (stop) makes fire() hand back nothing; the plain curtail then works', async () => {
    const r = await rig();
    await r.driver.start();
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    await r.driver.stop();
    assert.equal(armed.fire(), undefined);
    assert.deepEqual(r.writes, []);
    const res = await r.driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
  });

  test('a token the miner forgot is refused; one fresh token carries the retry and the curtail confirms', async () => {
    const r = await rig();
    await r.driver.start();
    const armed = r.driver.armCurtail!();
    assert.ok(armed);
    r.sim.dropTokens(); // as after a miner restart
    const fired = armed.fire();
    assert.ok(fired);
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(r.sim.tokensIssued, 2);
    assert.equal(r.writes.length, 2, 'the armed request (refused: code 135), then the retry');
    assert.deepEqual(r.sim.actions, ['power_off respbefore=true']);
  });

  test('writes disabled on the miner: AUTH_FAILED as the plain curtail, not retried', async () => {
    const r = await rig();
    await r.driver.start();
    r.sim.behaviour.writesDisabled = true;
    const f = r.driver.armCurtail!()?.fire();
    assert.ok(f);
    await expectCode(f.complete(ACT), 'AUTH_FAILED', /wm1 .*power_off: access denied by the miner \(code 45/);
    assert.equal(r.writes.length, 1);
  });

  test('faults: reset, garbage and no answer at all are retried the plain way, then reported as the plain curtail does', async () => {
    const r = await rig();
    await r.driver.start();
    r.sim.setFault({ kind: 'reset' });
    const f1 = r.driver.armCurtail!()?.fire();
    assert.ok(f1);
    await expectCode(f1.complete({ deadlineMs: 700 }), 'CONNECTION_CLOSED');

    r.sim.setFault({ kind: 'garbage' });
    const f2 = r.driver.armCurtail!()?.fire();
    assert.ok(f2);
    await expectCode(f2.complete({ deadlineMs: 700 }), 'MALFORMED_RESPONSE');

    r.sim.setFault({ kind: 'none' });
    const hooked = r.sim as unknown as { raw: (text: string) => unknown };
    const raw = hooked.raw;
    // the miner closes with nothing but the trailing NUL
    hooked.raw = (text) => (text.includes('"enc"') ? '' : raw(text));
    const f3 = r.driver.armCurtail!()?.fire();
    assert.ok(f3);
    await expectCode(f3.complete({ deadlineMs: 700 }), 'CONNECTION_CLOSED', /without a reply/);
    hooked.raw = raw;
    assert.equal(r.sim.mineroff, false);
  });

  test('a transient failure of the armed send is retried and confirms', async () => {
    const r = await rig();
    await r.driver.start();
    r.sim.setFault({ kind: 'reset' });
    const f = r.driver.armCurtail!()?.fire();
    assert.ok(f);
    setTimeout(() => r.sim.setFault({ kind: 'none' }), 50);
    const res = await f.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.deepEqual(r.sim.actions, ['power_off respbefore=true']);
  });

  test('a silent miner ends in the deadline; an aborted action is CANCELLED and leaves no socket open', async () => {
    const r = await rig();
    await r.driver.start();
    r.sim.setFault({ kind: 'silent' });
    await armedSilentThenAborted(r.driver);
  });
});
