/**
 * The Braiins OS+ driver against the Braiins simulator: a real grpc-js server
 * on 127.0.0.1 behind a fault-injecting TCP front, and the legacy TCP API.
 * Sim timings are shrunk (150 ms ramps); deadlines are generous.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { pino } from 'pino';
import type { DeviceDriver, Reading } from '../contract.js';
import type { ErrorCode } from '../lib/errors.js';
import { BraiinsSim, type BraiinsSimOptions } from '../../hil/sim/braiins-sim.js';
import type { Fault } from '../../hil/sim/cgminer-server.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { faultMatrix } from '../../hil/testing/fault-matrix.js';
import { braiinsDriver } from './index.js';
import { braiinsConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 5000 };
const ACT = { deadlineMs: 8000 };
const PASSWORD = 'secret';

interface Rig {
  sim: BraiinsSim;
  driver: DeviceDriver & { logins: number };
  port: number;
  legacyPort: number;
}

const rigs = rigsClosedAfterEach<Rig>();

function makeDriver(port: number, legacyPort: number, over: Record<string, unknown> = {}) {
  const cfg = braiinsConfigSchema.parse({
    id: 'm1',
    driver: 'braiins',
    host: '127.0.0.1',
    port,
    password: PASSWORD,
    apiPort: legacyPort,
    apiFallback: false,
    timeouts: { connectMs: 500, readMs: 1000 },
    confirmPollMs: 50,
    ...over,
  });
  return braiinsDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now }) as DeviceDriver & { logins: number };
}

async function rig(simOpts: BraiinsSimOptions = {}, cfgOver: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new BraiinsSim({ sleepDelayMs: 150, wakeRampMs: 150, password: PASSWORD, ...simOpts });
  const { port, legacyPort } = await sim.listen();
  const driver = makeDriver(port, legacyPort, cfgOver);
  const r = { sim, driver, port, legacyPort };
  rigs.push(r);
  return r;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Reads until fresh (a gRPC channel backs off for up to 2 s after a failed connect). */
async function readFresh(driver: DeviceDriver, source = 'grpc'): Promise<Reading> {
  let r: Reading | undefined;
  for (let i = 0; i < 60; i++) {
    r = await driver.read(READ);
    if (r.freshness === 'fresh' && r.fields.source === source) return r;
    await delay(100);
  }
  assert.fail(`never fresh again: ${r?.error?.message}`);
}

function assertFreshRunning(r: Reading): void {
  assert.equal(r.freshness, 'fresh', r.error?.message);
  assert.equal(r.online, true);
  assert.equal(r.state, 'running');
  assert.equal(r.error, undefined);
}

describe('braiins config', () => {
  test('defaults come from the schema', () => {
    const cfg = braiinsConfigSchema.parse({ id: 'm1', driver: 'braiins', host: '10.0.0.5' });
    assert.equal(cfg.port, 50051);
    assert.equal(cfg.username, 'root');
    assert.equal(cfg.password, '');
    assert.equal(cfg.apiPort, 4028);
    assert.equal(cfg.apiFallback, true);
    assert.deepEqual(cfg.timeouts, { connectMs: 1000, readMs: 3000 });
    assert.equal(cfg.sleepPowerMaxW, 100);
    assert.equal(cfg.quickRamping, undefined);
    assert.equal(cfg.powerTarget, undefined);
  });

  test('bad values are all reported with their paths', () => {
    const res = braiinsConfigSchema.safeParse({
      id: 'm1',
      driver: 'braiins',
      host: 'h',
      quickRamping: { upS: -1, downS: 5 },
      powerTarget: { minW: 3000, maxW: 1000 },
      apiPort: 0,
      legacyApi: { enabled: true },
    });
    assert.equal(res.success, false);
    const paths = res.error.issues.map((i) => i.path.join('.'));
    assert.ok(paths.includes('quickRamping.upS'), paths.join());
    assert.ok(paths.includes('powerTarget.minW'), paths.join());
    assert.ok(paths.includes('apiPort'), paths.join());
    assert.ok(res.error.issues.some((i) => i.code === 'unrecognized_keys' && i.keys.includes('legacyApi')), 'the old legacyApi block is unknown');
  });

  test('create() does no I/O', async () => {
    const { sim, driver } = await rig();
    assert.deepEqual(sim.calls, []);
    assert.equal(driver.driverId, 'braiins');
    assert.equal(driver.kind, 'asic');
    assert.equal(driver.capabilities.powerTarget, null, 'range unknown before the miner reports it');
  });
});

describe('braiins start', () => {
  test('logs in, learns the power-target range from GetConstraints, applies quick ramping', async () => {
    const { sim, driver } = await rig({ minPowerW: 1200, maxPowerW: 3400 }, { quickRamping: { upS: 30, downS: 5 } });
    await driver.start();
    assert.equal(driver.logins, 1);
    assert.deepEqual(driver.capabilities.powerTarget, { minW: 1200, maxW: 3400, reboots: false });
    assert.deepEqual(sim.quickRamping, { upS: 30, downS: 5 });
    assert.deepEqual(sim.calls, ['Login', 'GetConstraints', 'SetQuickRamping']);
  });

  test('quick ramping outside the miner range is refused before it is sent', async () => {
    const { sim, driver } = await rig({}, { quickRamping: { upS: 3000, downS: 5 } });
    await expectCode(driver.start(), 'CONFIG_INVALID', /quickRamping.upS = 3000 s is outside the miner's range 0..600 s/);
    assert.equal(sim.quickRamping, undefined);
  });

  test('a config range is used until the miner reports its own', async () => {
    const { driver } = await rig({ minPowerW: 1000, maxPowerW: 3000 }, { powerTarget: { minW: 1500, maxW: 2500 } });
    assert.deepEqual(driver.capabilities.powerTarget, { minW: 1500, maxW: 2500, reboots: false });
    await driver.start();
    assert.deepEqual(driver.capabilities.powerTarget, { minW: 1000, maxW: 3000, reboots: false });
  });
});

describe('braiins read', () => {
  test('telemetry over gRPC', async () => {
    const { driver } = await rig();
    const r = await driver.read(READ);
    assertFreshRunning(r);
    assert.equal(r.powerW, 3500);
    assert.equal(r.fields.hashrateThs, 200);
    assert.equal(r.fields.nominalHashrateThs, 200);
    assert.equal(r.fields.temperatureC, 75);
    assert.equal(r.fields.fanRpm, 5000);
    assert.equal(r.fields.minerStatus, 'normal');
    assert.equal(r.fields.powerTargetW, 3500);
    assert.equal(r.fields.tunerState, 'stable');
    assert.equal(r.fields.model, 'Antminer S21');
    assert.equal(r.fields.firmware, '24.09-sim');
    assert.equal(r.fields.source, 'grpc');
    assert.equal(driver.logins, 1, 'the four RPCs of a read share one login');
    await driver.read(READ);
    assert.equal(driver.logins, 1, 'the token is reused');
  });

  test('older firmware: the token comes only in the response header', async () => {
    const { driver } = await rig({ tokenInBody: false });
    assertFreshRunning(await driver.read(READ));
    assertFreshRunning(await driver.read(READ));
    assert.equal(driver.logins, 1);
  });

  test('telemetry falls back to the legacy TCP API when gRPC is unreachable', async () => {
    const { sim, driver, legacyPort } = await rig({}, {});
    const d = makeDriver(sim.port, legacyPort, { apiFallback: true });
    try {
      sim.setFault({ kind: 'reset' });
      const r = await d.read(READ);
      assertFreshRunning(r);
      assert.equal(r.fields.source, 'legacy-api');
      assert.equal(r.powerW, 3500);
      assert.equal(r.fields.hashrateThs, 200);
      assert.equal(r.fields.temperatureC, 75);
      assert.equal(r.fields.fanRpm, 5000);
      assert.equal(r.fields.powerLimitW, 3500);
      assert.equal(r.fields.boards, 3);

      // and a silent gRPC port costs at most half the read's deadline before the fallback answers
      sim.setFault({ kind: 'silent' });
      const t0 = Date.now();
      const s = await d.read({ deadlineMs: 2000 });
      assert.equal(s.freshness, 'fresh', s.error?.message);
      assert.equal(s.fields.source, 'legacy-api');
      assert.ok(Date.now() - t0 < 2000);

      sim.legacy.fault = { kind: 'reset' };
      sim.setFault({ kind: 'reset' });
      const both = await d.read(READ);
      assert.equal(both.freshness, 'stale');
      assert.equal(both.error?.code, 'CONNECTION_CLOSED');
      assert.match(both.error.message, /legacy API fallback \(port \d+\) failed too/);

      sim.legacy.fault = { kind: 'none' };
      sim.setFault({ kind: 'none' });
      const back = await readFresh(d);
      assert.equal(back.fields.source, 'grpc');
      assert.ok(driver);
    } finally {
      await d.stop();
    }
  });

  test('the legacy API answers version with BOSer/BOSminer strings for detection', async () => {
    const { CgminerClient } = await import('../lib/cgminer/client.js');
    for (const legacyFlavor of ['boser', 'bosminer'] as const) {
      const sim = new BraiinsSim({ legacyFlavor });
      const { legacyPort } = await sim.listen();
      try {
        const c = new CgminerClient({ host: '127.0.0.1', port: legacyPort, connectTimeoutMs: 500, readTimeoutMs: 1000 });
        const v = JSON.stringify(await c.command('version'));
        const fp = braiinsDriver.fingerprint.api;
        assert.ok(fp.some((s) => v.toLowerCase().includes(s.toLowerCase())), v);
      } finally {
        await sim.close();
      }
    }
  });
});

describe('braiins curtail, restore and power target', () => {
  test('curtail and restore are confirmed by read-back, with no login on the hot path', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const before = sim.calls.length;
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(res.ackMs <= res.tookMs);
    assert.equal(sim.calls[before], 'PauseMining', 'the first call of curtail is the write itself');
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(res.reading.fields.minerStatus, 'paused');
    assert.equal(res.reading.fields.hashrateThs, 0);
    assert.ok(res.reading.powerW !== null && res.reading.powerW <= 100);
    assert.equal(sim.sleeping, true);

    const back = await driver.restore!(ACT);
    assert.equal(back.confirmed, true);
    assertFreshRunning(back.reading);
    assert.deepEqual(sim.actions, ['PauseMining', 'ResumeMining']);
    assert.equal(driver.logins, 1);
    assert.equal(sim.calls.filter((c) => c === 'Login').length, 1);
  });

  test('an expired token is replaced by one new login, and the action goes through', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    sim.expireTokens();
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(driver.logins, 2);
    assert.deepEqual(sim.actions, ['PauseMining']);
  });

  test('a token idle past its expiry is renewed before use', async () => {
    const { sim, driver } = await rig({ tokenIdleMs: 1000 });
    await driver.start();
    await delay(1100);
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(driver.logins, 2);
    assert.equal(sim.calls.filter((c) => c === 'PauseMining').length, 1, 'no refused write first');
  });

  test('a miner that ignores pause gives NOT_CONFIRMED near the deadline', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.ignoreCurtail = true;
    const err = await expectCode(driver.curtail!({ deadlineMs: 800 }), 'NOT_CONFIRMED', /PauseMining acknowledged after \d+ ms/);
    assert.match(err.message, /last read-back: state running/);
  });

  test('set power target is confirmed by the tuner read-back', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    const res = await driver.setPowerTarget!(2500, ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.fields.powerTargetW, 2500);
    assert.equal(res.reading.powerW, 2500);
    assert.equal(sim.powerTargetW, 2500);
    assert.deepEqual(sim.actions, ['SetPowerTarget 2500']);
  });

  test('an out-of-range power target is refused before any I/O', async () => {
    const { sim, driver } = await rig({ minPowerW: 1100, maxPowerW: 3500 });
    await driver.start();
    const calls = sim.calls.length;
    await expectCode(driver.setPowerTarget!(5000, ACT), 'UNSUPPORTED', /m1: power target 5000 W is outside the miner's range 1100..3500 W; nothing was sent/);
    await expectCode(driver.setPowerTarget!(500, ACT), 'UNSUPPORTED', /outside the miner's range/);
    await expectCode(driver.setPowerTarget!(2000.5, ACT), 'UNSUPPORTED', /whole number/);
    assert.equal(sim.calls.length, calls, 'nothing reached the miner');
  });

  test('without a known range, a power target is refused before any I/O', async () => {
    const { sim, driver } = await rig();
    await expectCode(driver.setPowerTarget!(2000, ACT), 'UNSUPPORTED', /range is not known yet/);
    assert.deepEqual(sim.calls, []);
  });
});

describe('braiins auth and permissions', () => {
  test('wrong credentials: AUTH_FAILED naming the device, never the password', async () => {
    const { sim, driver } = await rig({ password: 'the-real-one' });
    await expectCode(driver.start(), 'AUTH_FAILED', /m1 .*login refused: wrong username or password/);
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'missing');
    assert.equal(r.error?.code, 'AUTH_FAILED');
    const err = await expectCode(driver.curtail!(ACT), 'AUTH_FAILED');
    for (const text of [err.message, JSON.stringify(err.context), r.error.message]) assert.ok(!text.includes(PASSWORD), text);
    assert.equal(sim.sleeping, false);
    assert.deepEqual(sim.actions, []);
  });

  test('writes denied: PERMISSION_DENIED becomes AUTH_FAILED naming device and cause', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    sim.behaviour.writesDenied = true;
    await expectCode(driver.curtail!(ACT), 'AUTH_FAILED', /^m1 \(127\.0\.0\.1:\d+\) ActionsService\/PauseMining: permission denied by the miner/);
    await expectCode(driver.setPowerTarget!(2000, ACT), 'AUTH_FAILED', /SetPowerTarget: permission denied/);
    assert.equal(sim.sleeping, false);
    assert.equal(driver.logins, 1, 'a denied write is not retried with a new login');
    assertFreshRunning(await driver.read(READ));
  });
});

describe('braiins faults: read() never throws, every RPC has a deadline', () => {
  const cases: { fault: Fault; code: ErrorCode }[] = [
    { fault: { kind: 'silent' }, code: 'READ_TIMEOUT' },
    { fault: { kind: 'slow', delayMs: 2500 }, code: 'READ_TIMEOUT' },
    { fault: { kind: 'garbage' }, code: 'CONNECTION_CLOSED' },
    { fault: { kind: 'truncate' }, code: 'CONNECTION_CLOSED' },
    { fault: { kind: 'reset' }, code: 'CONNECTION_CLOSED' },
    { fault: { kind: 'flood', bytes: 2 * 1024 * 1024 }, code: 'RESPONSE_TOO_LARGE' },
  ];
  faultMatrix(cases, () => rig(), {
    read: READ,
    name: ({ fault, code }) => `${fault.kind} on an open connection -> ${code}, stale, fresh again once cleared`,
    good: assertFreshRunning,
    bad: (bad, good) => {
      assert.equal(bad.online, false);
      assert.match(bad.error.message, /^m1 \(127\.0\.0\.1:\d+\)/);
      assert.equal(bad.ts, good.ts);
      assert.deepEqual(bad.fields, good.fields);
    },
    reread: (driver) => readFresh(driver),
    recovered: assertFreshRunning,
  });

  test('garbage on the port (not HTTP/2) from the first byte -> MALFORMED_RESPONSE', async () => {
    const { sim, driver } = await rig();
    sim.setFault({ kind: 'garbage' });
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'missing');
    assert.equal(r.error?.code, 'MALFORMED_RESPONSE');
    assert.match(r.error.message, /does not speak gRPC\/HTTP\/2/);
    // actAndConfirm retries a garbled transport until the deadline, then reports it
    await expectCode(driver.curtail!({ deadlineMs: 1000 }), 'MALFORMED_RESPONSE', /PauseMining not acknowledged after \d+ attempt\(s\) within 1000 ms; last: .*does not speak gRPC/);
    assert.deepEqual(sim.actions, []);
  });

  test('a silent server: reads, start and curtail all end by their deadlines', async () => {
    const { sim, driver } = await rig();
    sim.setFault({ kind: 'silent' });
    let t0 = Date.now();
    const r = await driver.read({ deadlineMs: 300 });
    assert.equal(r.error?.code, 'DEADLINE_EXCEEDED');
    assert.ok(Date.now() - t0 < 1500, `read returned near its own deadline (${Date.now() - t0} ms)`);
    t0 = Date.now();
    await expectCode(driver.start(), 'CONNECT_TIMEOUT', /no gRPC connection within 1500 ms/);
    assert.ok(Date.now() - t0 < 4000);
    t0 = Date.now();
    await expectCode(driver.curtail!({ deadlineMs: 2500 }), 'CONNECT_TIMEOUT', /not acknowledged after \d+ attempt\(s\) within 2500 ms; last: .*Login: no gRPC connection within 1500 ms/);
    assert.ok(Date.now() - t0 < 5000, `curtail settled near its deadline (${Date.now() - t0} ms)`);
    assert.deepEqual(sim.actions, []);
  });

  test('a server reset mid-session: the action fails clearly, then the driver recovers', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    sim.setFault({ kind: 'reset' });
    const err = await expectCode(driver.curtail!({ deadlineMs: 1000 }), 'CONNECTION_CLOSED', /^m1: PauseMining not acknowledged/);
    assert.equal(err.retriable, true);
    assert.deepEqual(sim.actions, []);
    sim.setFault({ kind: 'none' });
    await readFresh(driver);
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
  });

  test('a closed port is CONNECT_REFUSED', async () => {
    const { sim, driver } = await rig();
    await sim.close();
    const r = await driver.read(READ);
    assert.equal(r.error?.code, 'CONNECT_REFUSED');
  });

  test('an aborted signal cancels an action with CANCELLED', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.ignoreCurtail = true;
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(), 200);
    await expectCode(driver.curtail!({ deadlineMs: 30_000, signal: ctl.signal }), 'CANCELLED');
  });
});

describe('braiins resources', () => {
  const fds = () => readdirSync('/proc/self/fd').length;

  test('thousands of failed RPCs do not leak file descriptors', { timeout: 120_000 }, async (t) => {
    const { sim, driver, port, legacyPort } = await rig({ password: 'other' });
    // warm up lazily created handles (grpc internals, timers) before counting
    await driver.read(READ);
    const before = fds();
    // 1: wrong credentials, on one connection (each read = one failed Login)
    for (let i = 0; i < 2000; i++) {
      const r = await driver.read(READ);
      assert.equal(r.error?.code, 'AUTH_FAILED');
    }
    // 2: connections reset by the peer, and a peer that is not HTTP/2 (a new channel per failure)
    const d2 = makeDriver(port, legacyPort);
    for (const kind of ['reset', 'garbage'] as const) {
      sim.setFault({ kind });
      for (let i = 0; i < 500; i++) {
        const r = await d2.read(READ);
        assert.equal(r.online, false);
        if (i % 50 === 0) await delay(20);
      }
    }
    // 3: a silent peer with short deadlines
    sim.setFault({ kind: 'silent' });
    for (let i = 0; i < 30; i++) await d2.read({ deadlineMs: 30 });
    sim.setFault({ kind: 'none' });
    await d2.stop();
    await delay(300);
    const after = fds();
    t.diagnostic(`file descriptors: ${before} before, ${after} after`);
    assert.ok(after <= before + 8, `file descriptors: ${before} before, ${after} after`);
  });
});
