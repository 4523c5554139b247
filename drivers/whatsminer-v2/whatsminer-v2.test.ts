/**
 * The Whatsminer API v2 driver against its simulator over real TCP on
 * 127.0.0.1 (real md5crypt/AES token checks in the sim). Sim timings are
 * shrunk; deadlines are generous so a loaded machine does not make them flaky.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import type { ErrorCode } from '../lib/errors.js';
import type { Fault } from '../../hil/sim/cgminer-server.js';
import { WhatsminerV2Sim, type WhatsminerV2SimOptions } from '../../hil/sim/whatsminer-v2-sim.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { faultMatrix } from '../../hil/testing/fault-matrix.js';
import { decrypt, deriveToken, encrypt, sealCommand } from './crypto.js';
import { whatsminerV2Driver } from './index.js';
import { whatsminerV2ConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 5000 };
const ACT = { deadlineMs: 8000 };

const rigs = rigsClosedAfterEach<{ sim: WhatsminerV2Sim; driver: DeviceDriver }>();

async function rig(simOpts: WhatsminerV2SimOptions = {}, cfg: Record<string, unknown> = {}) {
  const sim = new WhatsminerV2Sim({ password: 'S3cret_1', sleepDelayMs: 150, wakeRampMs: 150, ...simOpts });
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
  const r = { sim, driver };
  rigs.push(r);
  return r;
}

describe('whatsminer-v2 crypto (vectors made with openssl)', () => {
  const msg = { salt: 'BQBwmoSn', time: '1700000000', newsalt: 'abcdefgh' };
  test('key, aes key and sign', () => {
    const t = deriveToken('admin', msg);
    // key = openssl passwd -1 -salt BQBwmoSn admin -> 27dvh4cW2m77.zlvSZfuZ1
    assert.equal(t.aesKey.toString('hex'), '4469ef7f8b638c5a8bd0853ee055544fe61ed937f6630ab2f2d46c7a17f193eb');
    // sign = openssl passwd -1 -salt abcdefgh 27dvh4cW2m77.zlvSZfuZ11700000000
    assert.equal(t.sign, 'HRCTbUbqfdKj3QWBlC3DO/');
  });
  test('AES-256-ECB with zero padding, base64 (openssl enc -aes-256-ecb -nopad)', () => {
    const t = deriveToken('admin', msg);
    const plain = '{"cmd":"power_off","respbefore":"true","token":"SIGN"}';
    const want = 'GI5zd67HQLdMzjttISoeg8aRstDr4Y4O97CMIiqv3X9s1D4G7aehyv9BrCR+d3IP6VAhWhngdKMQILkmr1BZLw==';
    assert.equal(encrypt(t.aesKey, plain), want);
    assert.equal(decrypt(t.aesKey, want), plain);
    const sealed = JSON.parse(sealCommand(t, 'power_on', {})) as { enc: number; data: string };
    assert.equal(sealed.enc, 1);
    assert.deepEqual(JSON.parse(decrypt(t.aesKey, sealed.data)), { cmd: 'power_on', token: 'HRCTbUbqfdKj3QWBlC3DO/' });
  });
});

describe('whatsminer-v2 config and capabilities', () => {
  test('defaults; no password means read-only capabilities', () => {
    const cfg = whatsminerV2ConfigSchema.parse({ id: 'a', driver: 'whatsminer-v2', host: '10.0.0.9' });
    assert.equal(cfg.port, 4028);
    assert.equal(cfg.password, undefined);
    assert.equal(cfg.tokenRefreshMs, 25 * 60_000);
    const d = whatsminerV2Driver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
    assert.deepEqual(d.capabilities, { curtail: false, restore: false, powerTarget: null, profiles: false, switchOutlet: false });
    assert.equal(whatsminerV2ConfigSchema.safeParse({ ...cfg, pasword: 'x' }).success, false);
  });

  test('power target range comes from the power limit and never reboots', async () => {
    const { driver } = await rig();
    assert.equal(driver.capabilities.powerTarget, null, 'unknown before the first read');
    await driver.read(READ);
    assert.deepEqual(driver.capabilities.powerTarget, { minW: 330, maxW: 3300, reboots: false });
  });

  test('a configured fullPowerW gives the range before any read', async () => {
    const { driver } = await rig({}, { fullPowerW: 3000 });
    assert.deepEqual(driver.capabilities.powerTarget, { minW: 300, maxW: 3000, reboots: false });
    assert.equal(whatsminerV2ConfigSchema.safeParse({ id: 'a', driver: 'whatsminer-v2', host: 'h', powerLimitW: 3000 }).success, false, 'the old key is unknown');
  });
});

describe('whatsminer-v2 read', () => {
  test('fresh telemetry of a mining rig', async () => {
    const { driver } = await rig();
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'fresh');
    assert.equal(r.state, 'running');
    assert.equal(r.powerW, 3300);
    assert.equal(r.fields.hashrateThs, 126);
    assert.equal(r.fields.temperatureC, 70);
    assert.equal(r.fields.fanRpm, 6000);
    assert.equal(r.fields.powerLimitW, 3300);
    assert.equal(r.fields.mineroff, false);
    assert.equal(r.fields.firmware, '20240723.22.REL');
  });
});

describe('whatsminer-v2 actions', () => {
  test('curtail then restore, confirmed by read-back, one token kept warm from start()', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    assert.equal(sim.tokensIssued, 1, 'start() fetched the token');
    const res = await driver.curtail(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(res.ackMs <= res.tookMs);
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(res.reading.fields.hashrateThs, 0);
    assert.ok((res.reading.powerW ?? 999) <= 100);
    assert.equal(sim.mineroff, true);
    const back = await driver.restore(ACT);
    assert.equal(back.confirmed, true);
    assert.equal(back.reading.state, 'running');
    assert.deepEqual(sim.actions, ['power_off respbefore=true', 'power_on']);
    assert.equal(sim.tokensIssued, 1, 'no get_token on the hot path');
  });

  test('power target maps watts to a percent of the limit and never sends adjust_power_limit', async () => {
    const { sim, driver } = await rig();
    await driver.read(READ);
    const res = await driver.setPowerTarget(2640, ACT);
    assert.equal(res.confirmed, true);
    assert.equal(sim.percent, 80);
    assert.ok(Math.abs((res.reading.powerW ?? 0) - 2640) <= 132);
    await expectCode(driver.setPowerTarget(100, ACT), 'UNSUPPORTED', /outside 330\.\.3300 W/);
    assert.deepEqual(sim.actions, ['set_power_pct 80']);
    assert.ok(!sim.actions.some((a) => a.startsWith('adjust_power_limit')));
  });

  test('an expired token is replaced once and the write goes through', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    sim.dropTokens();
    const res = await driver.curtail(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(sim.tokensIssued, 2);
  });

  test('a wrong password is AUTH_FAILED naming the device and the config key', async () => {
    const { sim, driver } = await rig({}, { password: 'wrong' });
    const err = await expectCode(driver.curtail(ACT), 'AUTH_FAILED', /wm1 .*rejected the encrypted command twice.*check "password" in the config of wm1/);
    assert.equal(err.retriable, false);
    assert.ok(!err.message.includes('wrong'), 'the password never appears in the message');
    assert.equal(sim.mineroff, false);
    assert.deepEqual(sim.actions, []);
  });

  test('writes disabled (default admin password) is AUTH_FAILED with the fix', async () => {
    const { sim, driver } = await rig({ password: 'admin' }, { password: 'admin' });
    const err = await expectCode(driver.curtail(ACT), 'AUTH_FAILED', /wm1 .*access denied by the miner \(code 45: can't access write cmd\).*enable the API/);
    assert.equal(err.context.device, 'wm1');
    assert.equal(sim.mineroff, false);
  });

  test('a miner that ignores power_off gives NOT_CONFIRMED', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.ignoreCurtail = true;
    await expectCode(driver.curtail({ deadlineMs: 600 }), 'NOT_CONFIRMED', /power_off acknowledged after \d+ ms.*last read-back: state running, 3300 W/);
  });

  test('without a password, actions are UNSUPPORTED', async () => {
    const { driver } = await rig({}, { password: undefined });
    assert.throws(() => driver.curtail(ACT), /needs the miner's admin password/);
  });
});

describe('whatsminer-v2 faults: read() never throws', () => {
  const cases: { fault: Fault; code: ErrorCode }[] = [
    { fault: { kind: 'silent' }, code: 'READ_TIMEOUT' },
    { fault: { kind: 'garbage' }, code: 'MALFORMED_RESPONSE' },
    { fault: { kind: 'truncate' }, code: 'MALFORMED_RESPONSE' },
    { fault: { kind: 'reset' }, code: 'CONNECTION_CLOSED' },
    { fault: { kind: 'flood', bytes: 4 * 1024 * 1024 }, code: 'RESPONSE_TOO_LARGE' },
  ];
  faultMatrix(cases, () => rig({}, { maxResponseBytes: 64 * 1024 }), {
    read: READ,
    bad: (bad, good) => assert.equal(bad.powerW, good.powerW),
    recovered: (again) => assert.equal(again.freshness, 'fresh'),
  });

  test('a wrong-type reply (summary without SUMMARY, status without STATUS) is MALFORMED_RESPONSE, missing', async () => {
    const { sim, driver } = await rig();
    sim.handle = (req) => (req.command === 'summary' ? { STATUS: [{ STATUS: 'S', Code: 11 }], SUMMARY: 'nope' } : { Msg: 1 });
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'missing');
    assert.equal(r.error?.code, 'MALFORMED_RESPONSE');
  });

  test('a write to a silent miner fails within its deadline', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    sim.setFault({ kind: 'silent' });
    const t0 = Date.now();
    await expectCode(driver.curtail({ deadlineMs: 3000 }), 'READ_TIMEOUT');
    assert.ok(Date.now() - t0 < 6000);
  });
});
