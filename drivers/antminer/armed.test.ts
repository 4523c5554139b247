/**
 * The armed curtail of the stock Antminer driver (armCurtail / fire /
 * complete, see ArmedAction): the sleep config POSTed with a digest
 * Authorization built at arm time, against hil/sim/antminer-sim.ts over
 * real HTTP on 127.0.0.1.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import { parseAuthParams } from '../lib/http-digest.js';
import { AntminerSim, ANTMINER_REALM, type AntminerSimOptions } from '../../hil/sim/antminer-sim.js';
import type { SimResponse } from '../../hil/sim/http-server.js';
import { fireArmed, outcome } from '../../hil/testing/armed.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { fdsBackTo, openFds } from '../../hil/testing/fds.js';
import { antminerDriver } from './index.js';
import { antminerConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const ACT = { deadlineMs: 8000 };

interface Rig {
  sim: AntminerSim;
  driver: DeviceDriver;
  /** What the web server saw: method, path, nonce count (with a Digest header) and the status it answered. */
  seen: { method: string; path: string; nc: string | undefined; status: number; connections: number }[];
}
const rigs = rigsClosedAfterEach<Rig>();

/**
 * A rig whose web server also refuses a nonce count it has seen before for
 * the same nonce (RFC 7616 replay detection; the simulator, like lighttpd,
 * checks only the nonce), answering 401 with a new challenge.
 */
async function rig(simOpts: AntminerSimOptions = {}, cgi: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new AntminerSim({ sleepDelayMs: 100, wakeRampMs: 100, cgiDelayMs: 20, ...simOpts });
  const { apiPort, webPort } = await sim.listen();
  const seen: Rig['seen'] = [];
  const used = new Set<string>();
  const handle = sim.handleWeb.bind(sim);
  sim.handleWeb = (req) => {
    const h = req.headers.authorization;
    const p = typeof h === 'string' ? parseAuthParams(h.replace(/^\s*Digest\s+/i, '')) : undefined;
    const nc = p?.get('nc');
    let res: SimResponse;
    const key = `${p?.get('nonce') ?? ''}/${nc ?? ''}`;
    if (nc !== undefined && used.has(key)) {
      res = { status: 401, headers: { 'www-authenticate': `Digest realm="${ANTMINER_REALM}", nonce="replayed${used.size}", qop="auth"` } };
    } else {
      res = handle(req);
      if (nc !== undefined && res.status !== 401) used.add(key);
    }
    seen.push({ method: req.method, path: req.path, nc, status: res.status ?? 200, connections: sim.web.connections });
    return res;
  };
  const cfg = antminerConfigSchema.parse({
    id: 'am1',
    driver: 'antminer',
    host: '127.0.0.1',
    port: apiPort,
    timeouts: { connectMs: 500, readMs: 1000 },
    webPort,
    cgi: { ackWaitMs: 300, ...cgi },
    confirmPollMs: 50,
  });
  const driver = antminerDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  const r = { sim, driver, seen };
  rigs.push(r);
  return r;
}

/** A rig whose driver holds the config cache and a digest challenge, as after start(). */
async function warmRig(simOpts: AntminerSimOptions = {}, cgi: Record<string, unknown> = {}): Promise<Rig> {
  const r = await rig(simOpts, cgi);
  await r.driver.start();
  return r;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('antminer armed curtail', () => {
  test('not armed before the config cache and a digest challenge are there', async () => {
    const { driver, sim } = await rig();
    assert.equal(driver.armCurtail?.(), undefined);
    assert.equal(sim.web.requests, 0, 'arming does no I/O');
    await driver.start();
    assert.ok(driver.armCurtail?.());
  });

  test('fire() + complete(): one POST with both mode keys, no 401, confirmed by read-back', async () => {
    const { driver, sim, seen } = await warmRig();
    const before = seen.length;
    const connections = sim.web.connections;
    const res = await fireArmed(driver).complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(sim.mode, 1);
    assert.equal(sim.writes.length, 1);
    assert.equal(sim.writes[0]?.['bitmain-work-mode'], '1');
    assert.equal(sim.writes[0]?.['miner-mode'], 1);
    assert.deepEqual(sim.writes[0]?.pools, sim.config.pools, 'the rest of the cached config is echoed');
    // (keep-warm's GET / reopens the pool the POST's connection was taken from)
    assert.deepEqual(
      seen
        .slice(before)
        .filter((s) => s.path !== '/')
        .map((s) => `${s.method} ${s.path} ${s.status}`),
      ['POST /cgi-bin/set_miner_conf.cgi 200'],
    );
    assert.equal(seen.find((s) => s.method === 'POST')?.connections, connections, 'the POST went over the warm connection');
  });

  test('the POST is on the wire before any await; ackMs counts from fire() to its answer', async () => {
    const { driver, sim } = await warmRig();
    const fired = fireArmed(driver);
    await sleep(200);
    assert.equal(sim.writes.length, 1, 'the device got it before complete()');
    const res = await fired.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.ok(res.ackMs < 200, `ackMs ${res.ackMs} is the CGI answer's arrival`);
    assert.equal(sim.writes.length, 1);
  });

  test('the nonce count is taken at arm time: requests sent in between do not spoil it; re-arming unchanged takes none', async () => {
    const { driver, seen } = await warmRig();
    const armed = driver.armCurtail?.();
    assert.ok(armed);
    assert.ok(driver.armCurtail?.(), 'armed again: the same prepared POST');
    // a config refresh uses the next count after the armed one
    await driver.start();
    const res = await armed.fire()!.complete(ACT);
    assert.equal(res.confirmed, true);
    const digestOnes = seen.filter((s) => s.nc !== undefined);
    assert.deepEqual(
      digestOnes.map((s) => `${s.method} ${s.path} ${s.nc} ${s.status}`).slice(0, 3),
      ['GET /cgi-bin/get_miner_conf.cgi 00000001 200', 'GET /cgi-bin/get_miner_conf.cgi 00000003 200', 'POST /cgi-bin/set_miner_conf.cgi 00000002 200'],
    );
    // fired once: the next arm takes a new count
    const again = driver.armCurtail?.();
    assert.ok(again);
    assert.equal(armed.fire(), undefined, 'an armed POST is sent once');
  });

  test('a challenge replaced since arming: fire() gives undefined; the next arm carries the new one', async () => {
    const { driver, sim } = await warmRig();
    const armed = driver.armCurtail?.();
    assert.ok(armed);
    sim.expireNonces();
    // a plain request meets the stale nonce and adopts a new challenge
    await driver.restore!(ACT);
    assert.equal(armed.fire(), undefined);
    const res = await fireArmed(driver).complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(sim.mode, 1);
  });

  test('a nonce the device dropped without our knowing: 401 stale, a fresh challenge, one plain retry', async () => {
    const { driver, sim, seen } = await warmRig();
    const armed = driver.armCurtail?.();
    sim.expireNonces();
    const before = seen.length;
    const res = await armed!.fire()!.complete(ACT);
    assert.equal(res.confirmed, true);
    assert.deepEqual(
      seen.slice(before).filter((s) => s.path.includes('set_miner')).map((s) => s.status),
      [401, 200],
    );
    assert.equal(sim.writes.length, 1);
  });

  test('a config cache refreshed since arming still fires what was armed; the next arm uses the new cache', async () => {
    const { driver, sim } = await warmRig();
    const armed = driver.armCurtail?.();
    await driver.start();
    await armed!.fire()!.complete(ACT);
    await driver.restore!(ACT);
    await fireArmed(driver).complete(ACT);
    assert.deepEqual(
      sim.writes.map((w) => w['miner-mode']),
      [1, 0, 1],
    );
  });

  test('refusals and faults end as the plain curtail ends', async () => {
    // a lost or garbled CGI answer is no failure by itself (read-back decides): a truncated one still changed the mode
    const cases: { name: string; set: (r: Rig) => void; deadlineMs: number; want: string }[] = [
      { name: '403', set: (r) => (r.sim.behaviour.rejectWrites = true), deadlineMs: 2000, want: 'AUTH_FAILED' },
      {
        name: 'M001',
        set: (r) => {
          const h = r.sim.handleWeb.bind(r.sim);
          r.sim.handleWeb = (req) => (req.method === 'POST' ? { status: 200, body: { stats: 'error', code: 'M001', msg: 'Illegal parameter' } } : h(req));
        },
        deadlineMs: 2000,
        want: 'DEVICE_ERROR',
      },
      ...(
        [
          ['garbage', 'NOT_CONFIRMED'],
          ['reset', 'NOT_CONFIRMED'],
          ['silent', 'NOT_CONFIRMED'],
          ['truncate', 'ok'],
        ] as const
      ).map(([kind, want]) => ({
        name: kind,
        set: (r: Rig) => {
          r.sim.web.fault = { kind };
        },
        deadlineMs: 900,
        want,
      })),
    ];
    for (const c of cases) {
      const plain = await warmRig();
      c.set(plain);
      const armedRig = await warmRig();
      const armed = armedRig.driver.armCurtail?.();
      c.set(armedRig);
      const want = await outcome(() => plain.driver.curtail!({ deadlineMs: c.deadlineMs }));
      const got = await outcome(() => armed!.fire()!.complete({ deadlineMs: c.deadlineMs }));
      assert.equal(want, c.want, `${c.name}: plain ${want}`);
      assert.equal(got, want, `${c.name}: armed ${got}, plain ${want}`);
    }
  });

  test('aborted by opts.signal: CANCELLED at once; the POST runs out at setConfTimeoutMs like the plain one, then its connection is closed', async () => {
    const { driver, sim } = await warmRig({}, { setConfTimeoutMs: 1000 });
    const before = openFds();
    sim.web.fault = { kind: 'silent' };
    const ctl = new AbortController();
    const fired = fireArmed(driver);
    setTimeout(() => ctl.abort(), 50);
    await expectCode(fired.complete({ deadlineMs: 5000, signal: ctl.signal }), 'CANCELLED');
    assert.ok((await fdsBackTo(before - 1, 0, 3000)) <= before - 1, 'closed after the POST deadline');
    sim.web.fault = { kind: 'none' };
    await driver.start();
    const base = openFds();
    sim.web.fault = { kind: 'silent' };
    const late = fireArmed(driver);
    await expectCode(late.complete({ deadlineMs: 5000, signal: AbortSignal.abort() }), 'CANCELLED');
    assert.ok((await fdsBackTo(base - 1, 0, 3000)) <= base - 1, 'a POST nobody waited for is closed at its deadline too');
  });
});
