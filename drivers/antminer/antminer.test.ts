/**
 * The stock Antminer driver against hil/sim/antminer-sim.ts over real TCP/HTTP
 * on 127.0.0.1. Sim timings are shrunk; deadlines are generous.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver, Reading } from '../contract.js';
import type { ErrorCode } from '../lib/errors.js';
import { AntminerSim, type AntminerSimOptions } from '../../hil/sim/antminer-sim.js';
import type { Fault } from '../../hil/sim/cgminer-server.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { faultMatrix } from '../../hil/testing/fault-matrix.js';
import { antminerDriver } from './index.js';
import { antminerConfigSchema } from './schema.js';
import { AntminerCgi } from './cgi.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const READ = { deadlineMs: 5000 };
const ACT = { deadlineMs: 10_000 };

interface Rig {
  sim: AntminerSim;
  driver: DeviceDriver;
  apiPort: number;
  webPort: number;
}
const rigs = rigsClosedAfterEach<Rig>();

async function rig(simOpts: AntminerSimOptions = {}, over: Record<string, unknown> = {}, cgi: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new AntminerSim({ sleepDelayMs: 150, wakeRampMs: 150, cgiDelayMs: 30, ...simOpts });
  const { apiPort, webPort } = await sim.listen();
  const cfg = antminerConfigSchema.parse({
    id: 'am1',
    driver: 'antminer',
    host: '127.0.0.1',
    port: apiPort,
    timeouts: { connectMs: 500, readMs: 1000 },
    webPort,
    password: 'root',
    cgi: { ackWaitMs: 300, ...cgi },
    confirmPollMs: 50,
    ...over,
  });
  const driver = antminerDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  const r = { sim, driver, apiPort, webPort };
  rigs.push(r);
  return r;
}

function assertRunning(r: Reading): void {
  assert.equal(r.freshness, 'fresh');
  assert.equal(r.state, 'running', JSON.stringify(r));
  assert.equal(r.error, undefined);
}

describe('antminer config', () => {
  test('defaults; credentials default to the stock root/root', () => {
    const cfg = antminerConfigSchema.parse({ id: 'a', driver: 'antminer', host: '10.0.0.9' });
    assert.equal(cfg.port, 4028);
    assert.equal(cfg.webPort, 80);
    assert.equal(cfg.username, 'root');
    assert.equal(cfg.password, 'root');
    assert.equal(cfg.cgi.setConfTimeoutMs, 60_000);
    assert.equal(cfg.cgi.ackWaitMs, 2_000);
    assert.equal(cfg.keepWarm, true);
    assert.deepEqual(cfg.profiles, ['normal', 'low', 'high']);
  });

  test('bad keys are all reported with their paths', () => {
    const res = antminerConfigSchema.safeParse({ id: 'a', driver: 'antminer', host: 'h', webPort: 0, cgi: { ackWaitMs: -1, pasword: 'x' }, profiles: ['turbo'] });
    assert.equal(res.success, false);
    const paths = res.error.issues.map((i) => i.path.join('.'));
    assert.ok(paths.includes('webPort'), paths.join());
    assert.ok(paths.includes('cgi.ackWaitMs'), paths.join());
    assert.ok(paths.includes('profiles.0'), paths.join());
    assert.ok(res.error.issues.some((i) => i.code === 'unrecognized_keys'));
  });

  test('capabilities are honest: no watt target', async () => {
    const { driver, sim } = await rig();
    assert.equal(driver.capabilities.powerTarget, null);
    assert.equal(driver.capabilities.curtail, true);
    assert.equal(driver.capabilities.profiles, true);
    assert.equal(sim.api.requests, 0, 'create() does no I/O');
  });
});

describe('antminer read', () => {
  test('telemetry through the join-rejecting API: chain_power "3250 W", string GHS, chip temps, fans', async () => {
    const { driver, sim } = await rig();
    const r = await driver.read(READ);
    assertRunning(r);
    assert.equal(r.powerW, 3250);
    assert.equal(r.fields.hashrateThs, 104);
    assert.equal(r.fields.nominalHashrateThs, 104);
    assert.equal(r.fields.temperatureC, 75);
    assert.equal(r.fields.fanRpm, 6010);
    const before = sim.api.requests;
    await driver.read(READ);
    assert.equal(sim.api.requests - before, 2, 'joining is not retried once rejected');
  });

  test('older firmware: numeric `power`; firmware without power stays "unknown" when not hashing', async () => {
    const a = await rig({ powerField: 'power' });
    assert.equal((await a.driver.read(READ)).powerW, 3250);
    const b = await rig({ powerField: 'none' });
    const r = await b.driver.read(READ);
    assert.equal(r.powerW, null);
    assertRunning(r);
    await expectCode(b.driver.curtail!({ deadlineMs: 800 }), 'NOT_CONFIRMED', /curtail \(sleep mode\) acknowledged/);
    assert.equal(b.sim.sleeping, true, 'the miner did sleep; without a power reading it just cannot be proven');
  });

  test('allowCurtailWithoutPower accepts "not hashing" alone', async () => {
    const { driver } = await rig({ powerField: 'none' }, { allowCurtailWithoutPower: true });
    const res = await driver.curtail!(ACT);
    assert.equal(res.reading.state, 'curtailed');
  });
});

describe('antminer curtail and restore', () => {
  test('sleep then normal, both mode keys written, config echoed, confirmed by read-back', async () => {
    const { driver, sim } = await rig();
    await driver.start();
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(res.ackMs <= res.tookMs);
    assert.equal(res.reading.state, 'curtailed');
    assert.ok((res.reading.powerW ?? 999) <= 60);
    assert.equal(res.reading.fields.hashrateThs, 0);
    assert.equal(sim.mode, 1);
    const w = sim.writes[0];
    assert.equal(w?.['bitmain-work-mode'], '1', 'string, as the firmware sent it');
    assert.equal(w?.['miner-mode'], 1);
    assert.deepEqual(w?.pools, sim.config.pools, 'the rest of the config is echoed');

    const back = await driver.restore!(ACT);
    assertRunning(back.reading);
    assert.equal(sim.mode, 0);
    assert.equal(sim.writes[1]?.['bitmain-work-mode'], '0');
    assert.equal(sim.writes[1]?.['miner-mode'], 0);
  });

  test('the digest nonce and the config are kept warm: a curtail after start() is one POST, no 401', async () => {
    const { driver, sim } = await rig();
    await driver.start();
    const before = sim.web.requests;
    await driver.curtail!(ACT);
    assert.equal(sim.web.requests - before, 1);
  });

  test('the web connection is kept warm with digest-authenticated pings: an action after the server dropped idle connections finds one open', async () => {
    const { sim, webPort } = await rig();
    sim.web.keepAliveMs = 400; // like lighttpd: closes idle connections without announcing it
    const cgi = new AntminerCgi({
      deviceId: 'raw',
      host: '127.0.0.1',
      port: webPort,
      username: 'root',
      password: 'root',
      connectTimeoutMs: 500,
      readTimeoutMs: 2000,
      maxResponseBytes: 1 << 20,
      keepWarm: { minIntervalMs: 50 },
    });
    try {
      const conf = await cgi.getConf();
      await new Promise((r) => setTimeout(r, 1500));
      const connections = sim.web.connections;
      const requests = sim.web.requests;
      await cgi.setConf({ ...conf, 'miner-mode': 1 }, 5000);
      assert.equal(sim.web.connections, connections, 'the POST went over a warm connection');
      assert.equal(sim.web.requests - requests, 1, 'one POST: the kept nonce still holds, no 401');
      const kw = cgi.stats.keepWarm;
      assert.ok(kw && kw.pings >= 2 && kw.pingFailures === 0, JSON.stringify(kw));
      assert.equal(kw.learned, true);
    } finally {
      cgi.close();
    }
  });

  test('the firmware trap: bitmain-work-mode alone is acknowledged M000 and changes nothing; the driver still works', async () => {
    const { driver, sim, webPort } = await rig({ modeKeys: 'miner-mode' });
    const cgi = new AntminerCgi({ deviceId: 'raw', host: '127.0.0.1', port: webPort, username: 'root', password: 'root', connectTimeoutMs: 500, readTimeoutMs: 2000, maxResponseBytes: 1 << 20 });
    try {
      const conf = await cgi.getConf();
      await cgi.setConf({ ...conf, 'bitmain-work-mode': '1' }, 5000); // resolves: M000
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(sim.mode, 0, 'acknowledged but ignored');
    } finally {
      cgi.close();
    }
    const res = await driver.curtail!(ACT);
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(sim.mode, 1);
  });

  test('a CGI that answers after the action stopped waiting (and restarts the API) is no false failure', async () => {
    const { driver, sim } = await rig({ cgiDelayMs: 1500, restartMs: 300 }, {}, { ackWaitMs: 200 });
    await driver.start();
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(res.ackMs < 1400, `did not wait for the CGI answer (${res.ackMs} ms)`);
    assert.ok(res.tookMs >= 1500, `confirmed only once the change happened (${res.tookMs} ms)`);
    assert.equal(sim.mode, 1);
  });

  test('a POST deadline shorter than the CGI answer is not fatal either: read-back decides', async () => {
    const { driver, sim } = await rig({ cgiDelayMs: 1200 }, {}, { ackWaitMs: 5000, setConfTimeoutMs: 1000 });
    await driver.start();
    const res = await driver.curtail!(ACT);
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(sim.mode, 1);
  });

  test('without a warm config the action reads it first (GET then POST)', async () => {
    const { driver, sim } = await rig();
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(sim.writes.length, 1);
  });

  test('wrong password: AUTH_FAILED naming the device and the cause, never the password', async () => {
    const { driver, sim } = await rig({ password: 'right-one' }, { password: 'wrong-pw' });
    const err = await expectCode(driver.curtail!(ACT), 'AUTH_FAILED', /am1: .*login refused \(HTTP 401\)/);
    assert.ok(!err.message.includes('wrong-pw') && !err.message.includes('right-one'));
    assert.ok(!JSON.stringify(err.context).includes('wrong-pw'));
    assert.equal(sim.writes.length, 0);
    // telemetry (API) is unaffected
    assertRunning(await driver.read(READ));
  });

  test('a stale nonce gets one fresh challenge', async () => {
    const { driver, sim } = await rig();
    await driver.start();
    sim.expireNonces();
    const res = await driver.curtail!(ACT);
    assert.equal(res.confirmed, true);
  });

  test('writes disabled (403): AUTH_FAILED "access denied" naming the device', async () => {
    const { driver, sim } = await rig();
    await driver.start();
    sim.behaviour.rejectWrites = true;
    await expectCode(driver.curtail!(ACT), 'AUTH_FAILED', /am1: POST \/cgi-bin\/set_miner_conf\.cgi .*access denied \(HTTP 403\)/);
    assert.equal(sim.mode, 0);
  });

  test('a miner that acknowledges and ignores the write: NOT_CONFIRMED with the last read-back', async () => {
    const { driver, sim } = await rig();
    sim.behaviour.ignoreWrites = true;
    await expectCode(driver.curtail!({ deadlineMs: 900 }), 'NOT_CONFIRMED', /last read-back: state running, 3250 W, 104 TH\/s/);
  });

  test('a silent web UI with a warm config: the action ends at its deadline, not hung', async () => {
    const { driver, sim } = await rig({}, {}, { ackWaitMs: 100, setConfTimeoutMs: 2000 });
    await driver.start();
    sim.web.fault = { kind: 'silent' };
    const t0 = Date.now();
    await expectCode(driver.curtail!({ deadlineMs: 800 }), 'NOT_CONFIRMED');
    assert.ok(Date.now() - t0 < 5000);
  });
});

describe('antminer profiles', () => {
  test('low and high work modes via profiles, confirmed by config read-back and hashing', async () => {
    const { driver, sim } = await rig();
    assert.deepEqual(await driver.listProfiles!(READ), [{ name: 'normal' }, { name: 'low' }, { name: 'high' }]);
    const low = await driver.setProfile!('low', ACT);
    assert.equal(low.reading.fields.workMode, 'low');
    assert.equal(sim.mode, 3);
    assert.equal(low.reading.powerW, Math.round(12 + (3250 * 0.75 - 12)));
    const high = await driver.setProfile!('high', ACT);
    assert.equal(high.reading.fields.workMode, 'high');
    assert.equal(sim.mode, 2);
    await expectCode(driver.setProfile!('turbo', ACT), 'UNSUPPORTED');
  });
});

describe('antminer faults: read() never throws', () => {
  const cases: { fault: Fault; code: ErrorCode }[] = [
    { fault: { kind: 'silent' }, code: 'READ_TIMEOUT' },
    { fault: { kind: 'garbage' }, code: 'MALFORMED_RESPONSE' },
    { fault: { kind: 'truncate' }, code: 'MALFORMED_RESPONSE' },
    { fault: { kind: 'reset' }, code: 'CONNECTION_CLOSED' },
  ];
  faultMatrix(
    cases,
    async () => {
      const { driver, sim } = await rig();
      return {
        driver,
        sim: {
          setFault: (f: Fault) => {
            sim.api.fault = f;
          },
        },
      };
    },
    {
      read: READ,
      bad: (bad, good) => assert.equal(bad.powerW, good.powerW),
      recovered: assertRunning,
    },
  );

  test('oversized reply is capped; a refused port is CONNECT_REFUSED; missing before any good read', async () => {
    const a = await rig({}, { maxResponseBytes: 4096 });
    a.sim.api.fault = { kind: 'flood', bytes: 1 << 20 };
    const r = await a.driver.read(READ);
    assert.equal(r.error?.code, 'RESPONSE_TOO_LARGE');
    assert.equal(r.freshness, 'missing');
    const b = await rig();
    await b.sim.close();
    assert.equal((await b.driver.read(READ)).error?.code, 'CONNECT_REFUSED');
  });

  test('wrong-type values (strings, nulls, arrays) do not crash parsing', async () => {
    const { driver, sim } = await rig();
    const handle = sim.handleApi.bind(sim);
    sim.handleApi = (req) => {
      if (req.command === 'stats') return { STATUS: [{ STATUS: 'S', Code: 70 }], STATS: [null, { 'GHS 5s': [1], chain_power: 'n/a W', temp2_1: {}, fan1: '6000' }] };
      if (req.command === 'summary') return { STATUS: [{ STATUS: 'S', Code: 11 }], SUMMARY: 'oops' };
      return handle(req);
    };
    const r = await driver.read(READ);
    assert.equal(r.freshness, 'fresh');
    assert.equal(r.powerW, null);
    assert.equal(r.fields.hashrateThs, null);
    assert.equal(r.state, 'unknown');
  });
});
