/**
 * The LuxOS driver against the LuxOS simulator over real TCP on 127.0.0.1.
 * Sim timings are shrunk (sleep 150 ms, wake ramp 150 ms) so tests are fast;
 * deadlines are generous so a loaded machine does not make them flaky.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver, Reading } from '../contract.js';
import type { ErrorCode } from '../lib/errors.js';
import { readFileSync } from 'node:fs';
import { LuxosSim, type LuxosSimOptions } from '../../hil/sim/luxos-sim.js';
import { CgminerServer, type CgminerRequest, type Fault } from '../../hil/sim/cgminer-server.js';
import { luxosDriver } from './index.js';
import { REFRESH_AFTER_MS } from './session.js';
import { luxosConfigSchema } from './schema.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { faultMatrix } from '../../hil/testing/fault-matrix.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 5000 };
const ACT = { deadlineMs: 8000 };

interface Rig {
  sim: LuxosSim;
  driver: DeviceDriver;
  port: number;
  /** Every command the sim answered, in order (joined telemetry requests show as their parts). */
  commands: string[];
}

const rigs = rigsClosedAfterEach<Rig>();

/** A LuxOS driver on a loopback port, with test-friendly deadlines. */
function makeDriver(port: number, over: Record<string, unknown> = {}) {
  const cfg = luxosConfigSchema.parse({
    id: 'm1',
    driver: 'luxos',
    host: '127.0.0.1',
    port,
    timeouts: { connectMs: 500, readMs: 1000 },
    confirmPollMs: 50,
    ...over,
  });
  return luxosDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
}

async function rig(simOpts: LuxosSimOptions = {}, cfgOver: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new LuxosSim({ sleepDelayMs: 150, wakeRampMs: 150, ...simOpts });
  const { port } = await sim.listen();
  const driver = makeDriver(port, cfgOver);
  // Record what the sim is asked (an observer on the device side; the driver is untouched).
  const commands: string[] = [];
  const handle = sim.handle.bind(sim);
  sim.handle = (req) => {
    commands.push(req.command);
    return handle(req);
  };
  const r = { sim, driver, port, commands };
  rigs.push(r);
  return r;
}

function assertFreshRunning(r: Reading): void {
  assert.equal(r.freshness, 'fresh');
  assert.equal(r.online, true);
  assert.equal(r.state, 'running');
  assert.equal(r.error, undefined);
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('luxos config', () => {
  test('defaults come from the schema', () => {
    const cfg = luxosConfigSchema.parse({ id: 'm1', driver: 'luxos', host: '10.0.0.5' });
    assert.equal(cfg.port, 4028);
    assert.deepEqual(cfg.timeouts, { connectMs: 1000, readMs: 3000 });
    assert.equal(cfg.maxResponseBytes, 1024 * 1024);
    assert.equal(cfg.sleepPowerMaxW, 60);
    assert.equal(cfg.confirmPollMs, 250);
  });

  test('unknown keys and bad values are all reported with their paths', () => {
    const res = luxosConfigSchema.safeParse({ id: 'bad id', driver: 'luxos', host: '', prot: 1, sleepPowerMaxW: -1 });
    assert.equal(res.success, false);
    const paths = res.error.issues.map((i) => i.path.join('.') || i.message);
    assert.ok(paths.includes('id'), paths.join());
    assert.ok(paths.includes('host'), paths.join());
    assert.ok(paths.includes('sleepPowerMaxW'), paths.join());
    assert.ok(res.error.issues.some((i) => i.code === 'unrecognized_keys'), 'the typo "prot" is reported');
  });

  test('create() and start() do no I/O', async () => {
    const { sim, driver } = await rig();
    await driver.start();
    assert.equal(sim.server.requests, 0);
    assert.equal(driver.id, 'm1');
    assert.equal(driver.kind, 'asic');
    assert.equal(driver.driverId, 'luxos');
    assert.equal(driver.capabilities.curtail, true);
    assert.equal(driver.capabilities.restore, true);
  });
});

describe('luxos read', () => {
  test('returns fresh telemetry of a mining rig', async () => {
    const { sim, driver } = await rig();
    const t0 = Date.now();
    const r = await driver.read(READ);
    assertFreshRunning(r);
    // the warm-up logon runs in the background after the read; wait for it so the count is stable
    for (let i = 0; i < 100 && sim.activeSession === undefined; i++) await delay(20);
    assert.equal(sim.server.requests, 2, 'all telemetry in one joined request (plus the warm-up logon)');
    assert.ok(r.ts >= t0 && r.ts <= Date.now());
    assert.equal(r.powerW, 3250);
    assert.equal(r.fields.hashrateThs, 110);
    assert.equal(r.fields.nominalHashrateThs, 110);
    assert.equal(r.fields.temperatureC, 71); // board temp 70, hottest sensor TopRight = +1
    assert.equal(r.fields.fanRpm, 70 * 80);
    assert.equal(r.fields.curtailMode, 'None');
    assert.equal(r.fields.profile, 'default');
  });
});

describe('luxos curtail and restore', () => {
  test('curtail is confirmed by read-back, restore brings the rig back', async () => {
    const { sim, driver } = await rig();
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(res.tookMs >= 0 && res.tookMs < ACT.deadlineMs);
    assert.equal(sim.sleeping, true);
    assert.deepEqual(sim.actions, ['curtail sleep']);
    assert.equal(res.reading.freshness, 'fresh');
    assert.equal(res.reading.state, 'curtailed');
    assert.ok(res.reading.powerW !== null && res.reading.powerW <= 60, `powerW ${res.reading.powerW}`);
    assert.equal(res.reading.fields.hashrateThs, 0);
    assert.equal(res.reading.fields.curtailMode, 'Sleep');

    const later = await driver.read(READ);
    assert.equal(later.state, 'curtailed');

    const back = await driver.restore!(ACT);
    assert.equal(back.confirmed, true);
    assert.equal(sim.sleeping, false);
    assert.deepEqual(sim.actions, ['curtail sleep', 'curtail wakeup']);
    assertFreshRunning(back.reading);
    assert.ok((back.reading.fields.hashrateThs as number) > 0);
  });

  test('the session is reused between actions (one logon)', async () => {
    const { sim, driver } = await rig();
    await driver.curtail!(ACT);
    const sid = sim.activeSession;
    assert.ok(sid);
    await driver.restore!(ACT);
    assert.equal(sim.activeSession, sid);
  });

  test('curtail while a foreign session exists adopts it and still works', async () => {
    const { sim, driver } = await rig();
    const foreign = sim.takeSessionElsewhere();
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(sim.sleeping, true);
    assert.equal(sim.activeSession, foreign, 'the foreign session was used, not replaced');
    await driver.stop();
    assert.equal(sim.activeSession, foreign, 'stop() never logs off a session it did not open');
  });

  test('an expired session is replaced by a new logon', async () => {
    const { sim, driver, commands } = await rig({ sessionIdleMs: 150 });
    await driver.curtail!(ACT);
    assert.equal(commands.filter((c) => c === 'logon').length, 1);
    for (let i = 0; i < 100 && sim.activeSession !== undefined; i++) await delay(50);
    assert.equal(sim.activeSession, undefined, 'the sim expired the idle session');
    const back = await driver.restore!(ACT);
    assert.equal(back.confirmed, true);
    assert.equal(sim.sleeping, false);
    assert.equal(commands.filter((c) => c === 'logon').length, 2, 'logged on again');
    // the stale id was tried once, refused, then the new session carried the wakeup
    assert.equal(commands.filter((c) => c === 'curtail').length, 3);
    assert.deepEqual(sim.actions, ['curtail sleep', 'curtail wakeup']);
  });

  test('a miner that refuses logon makes curtail fail with AUTH_FAILED', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.refuseLogon = true;
    const err = await expectCode(driver.curtail!(ACT), 'AUTH_FAILED');
    assert.equal(err.retriable, false);
    assert.equal(sim.sleeping, false);
    assert.deepEqual(sim.actions, []);
  });

  test('a miner that ignores curtail gives NOT_CONFIRMED within the deadline, naming the last read-back', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.ignoreCurtail = true;
    const t0 = Date.now();
    const err = await expectCode(driver.curtail!({ deadlineMs: 600 }), 'NOT_CONFIRMED', /sleep acknowledged after \d+ ms but the device did not reach state "curtailed" within 600 ms/);
    const took = Date.now() - t0;
    assert.ok(took >= 550, `not before the deadline (${took} ms)`);
    assert.ok(took < 5000, `settles near the deadline (${took} ms)`);
    assert.match(err.message, /last read-back: state (running|unreachable), \d+ W, [\d.]+ TH\/s/);
    assert.equal(err.retriable, true);
    assert.deepEqual(sim.actions, ['curtail sleep'], 'the command was sent once');
  });

  test('an aborted signal cancels an action with CANCELLED', async () => {
    const { sim, driver } = await rig();
    sim.behaviour.ignoreCurtail = true;
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(), 150);
    await expectCode(driver.curtail!({ deadlineMs: 30_000, signal: ctl.signal }), 'CANCELLED');
  });

  test('an unreachable miner fails curtail with the transport error', async () => {
    const { sim, driver } = await rig();
    sim.setFault({ kind: 'reset' });
    const err = await expectCode(driver.curtail!(ACT), 'CONNECTION_CLOSED');
    assert.equal(err.retriable, true);
  });
});

describe('luxos faults: read() never throws and reports stale data', () => {
  const cases: { fault: Fault; code: ErrorCode }[] = [
    { fault: { kind: 'silent' }, code: 'READ_TIMEOUT' },
    { fault: { kind: 'slow', delayMs: 2500 }, code: 'READ_TIMEOUT' },
    { fault: { kind: 'garbage' }, code: 'MALFORMED_RESPONSE' },
    { fault: { kind: 'truncate' }, code: 'MALFORMED_RESPONSE' },
    { fault: { kind: 'reset' }, code: 'CONNECTION_CLOSED' },
  ];
  faultMatrix(cases, () => rig(), {
    read: READ,
    name: ({ fault, code }) => `${fault.kind} -> ${code}, stale after a good read, fresh again once cleared`,
    good: assertFreshRunning,
    bad: (bad, good) => {
      assert.equal(bad.online, false);
      assert.ok(bad.error.message.includes('127.0.0.1'), `the message names the device: ${bad.error.message}`);
      // stale keeps the last good values and their timestamp
      assert.equal(bad.ts, good.ts);
      assert.equal(bad.powerW, good.powerW);
      assert.deepEqual(bad.fields, good.fields);
    },
    recovered: (again, good) => {
      assertFreshRunning(again);
      assert.ok(again.ts >= good.ts);
    },
    missing: { fault: { kind: 'garbage' }, code: 'MALFORMED_RESPONSE' },
  });

  test('a read deadline shorter than the socket timeouts is honoured', async () => {
    const { sim, driver } = await rig();
    sim.setFault({ kind: 'silent' });
    const t0 = Date.now();
    const r = await driver.read({ deadlineMs: 200 });
    const took = Date.now() - t0;
    assert.equal(r.error?.code, 'DEADLINE_EXCEEDED');
    assert.ok(took < 900, `returned near its own deadline, before readMs (${took} ms)`);
  });

  test('an oversized reply is refused (RESPONSE_TOO_LARGE)', async () => {
    const { sim, driver } = await rig({}, { maxResponseBytes: 4096 });
    sim.setFault({ kind: 'flood', bytes: 1024 * 1024 });
    const r = await driver.read(READ);
    assert.equal(r.error?.code, 'RESPONSE_TOO_LARGE');
    assert.equal(r.freshness, 'missing');
  });

  test('a refused port is CONNECT_REFUSED', async () => {
    const { sim, driver } = await rig();
    await sim.close();
    const r = await driver.read(READ);
    assert.equal(r.error?.code, 'CONNECT_REFUSED');
    assert.equal(r.state, 'unreachable');
  });
});

describe('luxos stop', () => {
  test('stop() logs off a session the driver opened', async () => {
    const { sim, driver } = await rig();
    await driver.curtail!(ACT);
    assert.ok(sim.activeSession);
    await driver.stop();
    assert.equal(sim.activeSession, undefined);
  });

  test('stop() without a session, or with the miner gone, resolves', async () => {
    const { sim, driver } = await rig();
    await driver.stop();
    await driver.curtail!(ACT);
    sim.setFault({ kind: 'silent' });
    const t0 = Date.now();
    await driver.stop(); // never throws; bounded by connectMs + readMs
    assert.ok(Date.now() - t0 < 5000);
  });
});

describe('luxos against replayed fixture replies', () => {
  // dist/drivers/luxos/ -> drivers/luxos/fixtures/ (JSON is not copied by tsc)
  const fixture = JSON.parse(
    readFileSync(new URL('../../../drivers/luxos/fixtures/s19jpro-mining.json', import.meta.url), 'utf8'),
  ) as Record<string, unknown>;

  async function replay(answer: (req: CgminerRequest) => unknown) {
    const seen: CgminerRequest[] = [];
    const server = new CgminerServer({
      handler: (req) => {
        seen.push(req);
        return answer(req) ?? { STATUS: [{ STATUS: 'E', Code: 14, Msg: 'Invalid command' }], id: 1 };
      },
    });
    const { port } = await server.listen();
    const driver = makeDriver(port, { id: 'replay' });
    return { server, driver, seen };
  }

  test('wrong-type values (sections that are not arrays, numbers as words) give nulls and state unknown, never a crash', async () => {
    const ok = (sections: Record<string, unknown>) => ({ STATUS: [{ STATUS: 'S', Code: 0, Msg: 'ok' }], ...sections, id: 1 });
    const { server, driver } = await replay((req) => {
      switch (req.command) {
        case 'summary':
          return ok({ SUMMARY: [{ 'GHS 5s': 'fast', 'GHS av': null }] });
        case 'power':
          return ok({ POWER: 'lots' });
        case 'temps':
          return ok({ TEMPS: [{ ID: 0, TopLeft: 'hot' }, 7, null] });
        case 'fans':
          return ok({ FANS: { RPM: 4000 } });
        case 'config':
          return ok({ CONFIG: [{ CurtailMode: 42 }] });
        case 'stats':
          return ok({ STATS: 'n/a' });
        default:
          return undefined;
      }
    });
    try {
      const r = await driver.read({ deadlineMs: 2000 });
      assert.equal(r.freshness, 'fresh');
      assert.equal(r.powerW, null);
      assert.equal(r.fields.hashrateThs, null);
      assert.equal(r.fields.temperatureC, null);
      assert.equal(r.fields.fanRpm, null);
      assert.equal(r.state, 'unknown');
    } finally {
      await driver.stop();
      await server.close();
    }
  });

  test('parses a realistic S19j Pro snapshot (temps out of order, string FAN labels)', async () => {
    const { server, driver } = await replay((req) => fixture[req.command]);
    try {
      const r = await driver.read(READ);
      assertFreshRunning(r);
      assert.equal(r.powerW, 3009);
      assert.equal(r.fields.hashrateThs, 101.235);
      assert.equal(r.fields.nominalHashrateThs, 104);
      assert.equal(r.fields.temperatureC, 68);
      assert.equal(r.fields.fanRpm, 3900);
      assert.equal(r.fields.curtailMode, 'None');
      assert.equal(r.fields.profile, '145MHz');
    } finally {
      await server.close();
    }
  });

  test('adopts the active session (402) and sends "<sid>,sleep"; unconfirmed when the miner keeps hashing', async () => {
    const { server, driver, seen } = await replay((req) => {
      if (req.command === 'logon') return fixture['logon-busy'];
      if (req.command === 'curtail') return fixture['curtail-sleep'];
      return fixture[req.command];
    });
    try {
      const err = await expectCode(driver.curtail({ deadlineMs: 400 }), 'NOT_CONFIRMED');
      assert.match(err.message, /last read-back: state running, 3009 W, 101.235 TH\/s/);
      const writes = seen.filter((q) => ['logon', 'session', 'curtail'].includes(q.command));
      assert.deepEqual(writes.slice(0, 3), [
        { command: 'logon', parameter: undefined },
        { command: 'session', parameter: undefined },
        { command: 'curtail', parameter: 'yJN2nlj1,sleep' },
      ]);
      await driver.stop();
      assert.ok(!seen.some((q) => q.command === 'logoff'), 'an adopted session is never logged off');
    } finally {
      await server.close();
    }
  });
});

/** Waits until `cond` holds (polling), failing after `ms`. */
async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
    await delay(20);
  }
}

describe('luxos session kept warm off the hot path', () => {
  test('a curtail right after a warm read sends no logon', async () => {
    const { sim, driver, commands } = await rig();
    await driver.read(READ);
    await until(() => sim.activeSession !== undefined, 'the warm-up logon');
    commands.length = 0;
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(!commands.includes('logon'), `no logon on the hot path (sent: ${commands.join(' ')})`);
    assert.equal(commands[0], 'curtail', 'the first thing sent is the curtail itself');
  });

  test('a session idle for ~40 s is renewed by read() with logoff + logon; the action then needs no logon', async () => {
    let offset = 0;
    const sim = new LuxosSim({ sleepDelayMs: 150, wakeRampMs: 150 });
    const { port } = await sim.listen();
    const cfg = luxosConfigSchema.parse({ id: 'm1', driver: 'luxos', host: '127.0.0.1', port, timeouts: { connectMs: 500, readMs: 1000 }, confirmPollMs: 50 });
    const driver = luxosDriver.create(cfg, { logger: pino({ level: 'silent' }), now: () => Date.now() + offset });
    rigs.push({ sim, driver, port, commands: [] });
    const seen: string[] = [];
    const handle = sim.handle.bind(sim);
    sim.handle = (req) => {
      seen.push(req.command);
      return handle(req);
    };
    await driver.read(READ);
    await until(() => sim.activeSession !== undefined, 'the first warm-up');
    const first = sim.activeSession;
    await driver.read(READ); // still fresh: nothing to do
    await delay(50);
    assert.equal(seen.filter((c) => c === 'logon').length, 1);
    offset += REFRESH_AFTER_MS + 1000; // our clock says the session has idled 41 s
    await driver.read(READ);
    await until(() => seen.filter((c) => c === 'logon').length === 2, 'the renewal logon');
    await until(() => (driver).sessionId !== undefined, 'the renewed session');
    assert.ok(seen.includes('logoff'), 'the old session was logged off first');
    assert.notEqual(sim.activeSession, first, 'a fresh session');
    seen.length = 0;
    await driver.curtail(ACT);
    assert.ok(!seen.includes('logon'));
  });

  test('keepSessionWarm: false leaves the session alone until an action needs it', async () => {
    const { sim, driver } = await rig({}, { keepSessionWarm: false });
    await driver.read(READ);
    await delay(100);
    assert.equal(sim.activeSession, undefined);
    assert.equal(sim.server.requests, 1);
  });

  test('a warm-up refused by the miner does not break reads and is not retried on every read', async () => {
    const { sim, driver, commands } = await rig();
    sim.behaviour.refuseLogon = true;
    for (let i = 0; i < 3; i++) {
      assertFreshRunning(await driver.read(READ));
      await delay(30);
    }
    assert.equal(commands.filter((c) => c === 'logon').length, 1, 'one failed warm-up, then a pause');
    await expectCode(driver.curtail!(ACT), 'AUTH_FAILED');
  });
});

describe('luxos profiles', () => {
  test('capabilities say so; listProfiles returns name, watts and hashrate', async () => {
    const { driver } = await rig();
    assert.equal(driver.capabilities.profiles, true);
    const list = await driver.listProfiles!(READ);
    assert.deepEqual(
      list.map((p) => p.name),
      ['385MHz', '410MHz', 'default', '460MHz'],
    );
    const def = list.find((p) => p.name === 'default');
    assert.deepEqual(def, { name: 'default', powerW: 3250, hashrateThs: 110 });
  });

  test('setProfile is sent as "<sid>,<name>" and confirmed by config.Profile; power follows the profile', async () => {
    const { sim, driver } = await rig();
    const res = await driver.setProfile!('385MHz', ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.fields.profile, '385MHz');
    assert.equal(sim.profile, '385MHz');
    assert.deepEqual(sim.actions, ['profileset 385MHz']);
    const r = await driver.read(READ);
    assert.equal(r.powerW, Math.round(3250 * 0.82));
    assert.equal(r.fields.hashrateThs, Math.round(110 * 0.86 * 10) / 10);
    assert.ok(res.ackMs <= res.tookMs);
  });

  test('an unknown profile is a DEVICE_ERROR naming the miner; a name with a comma is refused before sending', async () => {
    const { sim, driver } = await rig();
    await expectCode(driver.setProfile!('nope', ACT), 'DEVICE_ERROR', /profileset.*Invalid profile/);
    await expectCode(driver.setProfile!('default,0', ACT), 'CONFIG_INVALID', /m1: profile name/);
    assert.equal(sim.profile, 'default');
  });

  test('profileset on a miner that refuses logon is AUTH_FAILED', async () => {
    const { sim, driver } = await rig({}, { keepSessionWarm: false });
    sim.behaviour.refuseLogon = true;
    await expectCode(driver.setProfile!('410MHz', ACT), 'AUTH_FAILED');
  });
});
