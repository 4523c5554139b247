/**
 * The Whatsminer API v3 driver against its simulator (length-prefixed JSON,
 * real salted-token checks) over real TCP on 127.0.0.1.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import type { ErrorCode } from '../lib/errors.js';
import type { Fault } from '../../hil/sim/cgminer-server.js';
import { WhatsminerV3Sim, type WhatsminerV3SimOptions } from '../../hil/sim/whatsminer-v3-sim.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { faultMatrix } from '../../hil/testing/fault-matrix.js';
import { v3Token } from './driver.js';
import { whatsminerV3Driver } from './index.js';
import { whatsminerV3ConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 5000 };
const ACT = { deadlineMs: 8000 };

const rigs = rigsClosedAfterEach<{ sim: WhatsminerV3Sim; driver: DeviceDriver }>();

async function rig(simOpts: WhatsminerV3SimOptions = {}, cfg: Record<string, unknown> = {}) {
  const sim = new WhatsminerV3Sim({ password: 'Sup3r-pw', sleepDelayMs: 150, wakeRampMs: 150, ...simOpts });
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
  const driver = whatsminerV3Driver.create(config, { logger: pino({ level: 'silent' }), now: Date.now });
  const r = { sim, driver };
  rigs.push(r);
  return r;
}

describe('whatsminer-v3 token and config', () => {
  test('token = first 8 chars of base64(sha256(cmd+password+salt+ts))', () => {
    // echo -n 'set.miner.servicesuperabc1700000000' | openssl dgst -sha256 -binary | base64 | cut -c1-8
    assert.equal(v3Token('set.miner.service', 'super', 'abc', 1700000000), 'o64IxoZD');
  });
  test('defaults', () => {
    const cfg = whatsminerV3ConfigSchema.parse({ id: 'a', driver: 'whatsminer-v3', host: '10.0.0.9' });
    assert.equal(cfg.port, 4433);
    assert.equal(cfg.username, 'super');
    assert.equal(cfg.fullPowerW, undefined);
    assert.equal(whatsminerV3ConfigSchema.safeParse({ ...cfg, username: 'root' }).success, false);
    assert.equal(whatsminerV3ConfigSchema.safeParse({ ...cfg, account: 'super' }).success, false, 'the old key is unknown');
  });
});

describe('whatsminer-v3 read and actions', () => {
  test('fresh telemetry', async () => {
    const { driver } = await rig();
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'fresh');
    assert.equal(r.state, 'running');
    assert.equal(r.powerW, 3500);
    assert.equal(r.fields.hashrateThs, 200);
    assert.equal(r.fields.temperatureC, 71);
    assert.equal(r.fields.fanRpm, 6000);
    assert.deepEqual(driver.capabilities.powerTarget, { minW: 350, maxW: 3500, reboots: false });
  });

  test('curtail and restore confirmed; the salt is fetched once, off the hot path', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const before = sim.requests;
    const res = await driver.curtail(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(sim.stopped, true);
    const back = await driver.restore(ACT);
    assert.equal(back.confirmed, true);
    assert.deepEqual(sim.actions, ['service stop', 'service start']);
    assert.ok(sim.requests > before);
  });

  test('power target sends power_percent, never power_limit', async () => {
    const { sim, driver } = await rig();
    await driver.read(READ);
    const res = await driver.setPowerTarget(2800, ACT);
    assert.equal(res.confirmed, true);
    assert.equal(sim.percent, 80);
    assert.deepEqual(sim.actions, ['power_percent 80']);
  });

  test('a wrong password is AUTH_FAILED naming the device; the salt was re-fetched once', async () => {
    const { sim, driver } = await rig({}, { password: 'nope-nope' });
    await driver.start();
    const err = await expectCode(driver.curtail(ACT), 'AUTH_FAILED', /wm3 .*access denied by the miner \(code -4: invalid token\).*"password" in the config of wm3/);
    assert.ok(!err.message.includes('nope-nope'));
    assert.equal(sim.stopped, false);
  });

  test('writes disabled on the device is AUTH_FAILED', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.writesDisabled = true;
    await expectCode(driver.curtail(ACT), 'AUTH_FAILED', /access denied.*API writes are enabled/);
  });

  test('a miner that ignores stop gives NOT_CONFIRMED', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.ignoreCurtail = true;
    await expectCode(driver.curtail({ deadlineMs: 600 }), 'NOT_CONFIRMED', /set.miner.service stop acknowledged/);
  });
});

describe('whatsminer-v3 faults: read() never throws', () => {
  const cases: { fault: Fault; code: ErrorCode }[] = [
    { fault: { kind: 'silent' }, code: 'READ_TIMEOUT' },
    { fault: { kind: 'garbage' }, code: 'RESPONSE_TOO_LARGE' },
    { fault: { kind: 'truncate' }, code: 'MALFORMED_RESPONSE' },
    { fault: { kind: 'reset' }, code: 'CONNECTION_CLOSED' },
    { fault: { kind: 'flood', bytes: 8 * 1024 * 1024 }, code: 'RESPONSE_TOO_LARGE' },
  ];
  faultMatrix(cases, () => rig(), {
    read: READ,
    name: ({ fault, code }) => `${fault.kind} -> ${code}, stale after a good read, names the device`,
    bad: (bad, good) => {
      assert.match(bad.error.message, /^wm3: 127\.0\.0\.1:/);
      assert.equal(bad.powerW, good.powerW);
    },
    recovered: (again) => assert.equal(again.freshness, 'fresh'),
  });

  test('wrong-type replies are MALFORMED_RESPONSE', async () => {
    const { sim, driver } = await rig();
    sim.handle = () => ({ code: 0, msg: 'summary?' });
    assert.equal((await driver.read(READ)).error?.code, 'MALFORMED_RESPONSE');
    sim.handle = () => ({ code: '0' });
    assert.equal((await driver.read(READ)).error?.code, 'MALFORMED_RESPONSE');
  });
});
