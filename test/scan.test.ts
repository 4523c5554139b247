/**
 * `rackpilot scan`: CIDR expansion, bounded concurrency with a per-host
 * deadline, silent hosts, and no leaked sockets. Simulators are bound to
 * 127.0.32.x (Linux routes all of 127.0.0.0/8 to loopback); nothing outside
 * 127.0.0.0/8 is ever contacted.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { expandCidr, formatScan, scan } from '../agent/scan.js';
import { LuxosSim } from '../hil/sim/luxos-sim.js';
import { fdsBackTo, openFds } from '../hil/testing/fds.js';
import { freePort } from '../hil/testing/ports.js';
import { fakeApi, silentListener, type Closable } from '../hil/testing/responders.js';
import { repoRoot } from '../hil/testing/root.js';
import { statusSection } from '../hil/sim/cgminer-server.js';

const NET = '127.0.32';
const MINERS = [10, 11, 12];
const SILENT = [20, 21];
const OTHER = 25; // answers the API, but no family matches

describe('expandCidr', () => {
  test('hosts of a range without network and broadcast; single addresses; /31', () => {
    const r = expandCidr('127.0.32.0/28');
    assert.ok(r.ok);
    assert.equal(r.hosts.length, 14);
    assert.equal(r.hosts[0], '127.0.32.1');
    assert.equal(r.hosts[13], '127.0.32.14');
    assert.deepEqual(expandCidr('127.0.32.7'), { ok: true, hosts: ['127.0.32.7'] });
    assert.deepEqual(expandCidr('127.0.32.9/31'), { ok: true, hosts: ['127.0.32.8', '127.0.32.9'] });
    const big = expandCidr('10.20.0.0/16');
    assert.ok(big.ok && big.hosts.length === 65534);
  });

  test('more than a /16 is refused with a clear message; garbage is refused', () => {
    const r = expandCidr('10.0.0.0/15');
    assert.ok(!r.ok);
    assert.match(r.error, /refusing to scan more than a \/16/);
    for (const bad of ['10.0.0.0/33', '10.0.0/24', '300.1.1.1/24', 'host/24', '10.0.0.0/x', '10.0.0.0/24/1']) {
      assert.equal(expandCidr(bad).ok, false, bad);
    }
  });
});

describe('scan', () => {
  const open: Closable[] = [];
  let apiPort = 0;
  let httpPort = 0;
  before(async () => {
    apiPort = await freePort();
    httpPort = await freePort();
    for (const i of MINERS) {
      const sim = new LuxosSim({ host: `${NET}.${i}`, port: apiPort, model: `Antminer S21 #${i}` });
      await sim.listen();
      open.push(sim);
    }
    for (const i of SILENT) open.push((await silentListener(`${NET}.${i}`, apiPort)).server);
    open.push(
      (await fakeApi({ version: { STATUS: statusSection('S', 22, 'versions', 'somethingelse 1.0'), VERSION: [{ Miner: 'x' }], id: 1 } }, `${NET}.${OTHER}`, apiPort)).server,
    );
  });
  after(async () => {
    for (const s of open.splice(0)) await s.close();
  });

  test('finds every simulated miner, reports silent hosts, never stalls, and leaks no socket', async () => {
    const hosts = expandCidr(`${NET}.0/27`);
    assert.ok(hosts.ok);
    const fds = openFds();
    let peak = fds;
    const sampler = setInterval(() => (peak = Math.max(peak, openFds())), 5);
    const t0 = Date.now();
    const { hosts: res, summary } = await scan({ hosts: hosts.hosts, apiPort, httpPort, concurrency: 8, timeoutMs: 1500, portMap: { 4433: httpPort, 50051: httpPort } });
    const wall = Date.now() - t0;
    clearInterval(sampler);
    const miners = res.filter((h) => h.status === 'miner');
    assert.deepEqual(
      miners.map((m) => m.ip),
      MINERS.map((i) => `${NET}.${i}`),
    );
    for (const m of miners) {
      assert.equal(m.driver, 'luxos');
      assert.match(m.model ?? '', /^Antminer S21 #1\d$/);
      assert.equal(m.firmware, 'LUXminer 2024.11.1-sim');
      assert.equal(m.powerW, 3250);
      assert.equal(m.state, 'running');
    }
    for (const i of SILENT) assert.equal(res.find((h) => h.ip === `${NET}.${i}`)?.status, 'silent', `${NET}.${i}`);
    assert.equal(res.find((h) => h.ip === `${NET}.${OTHER}`)?.status, 'unknown');
    assert.equal(summary.scanned, 30);
    assert.equal(summary.miners, 3);
    assert.equal(summary.silent, 2);
    // 30 hosts / 8 at a time; silent hosts cost at most their 1.5 s each, in parallel with the rest
    assert.ok(wall < 15_000, `scan took ${wall} ms`);
    if (fds >= 0) {
      assert.ok(peak - fds <= 8 * 8, `peak ${peak - fds} extra fds for 8 hosts in flight`);
      assert.ok((await fdsBackTo(fds)) <= fds, 'every socket closed after the scan');
    }
    const text = formatScan(res, summary);
    assert.match(text, new RegExp(`${NET.replaceAll('.', '\\.')}\\.10\\s+luxos\\s+Antminer S21 #10\\s+LUXminer 2024\\.11\\.1-sim\\s+3250 W`));
    assert.match(text, /scanned 30 address\(es\) .* 3 miner\(s\) \(3 luxos\), 1 other device\(s\) answering, 2 silent/);
  });

  test('the CLI prints a JSON array of the miners found, and refuses more than a /16', async () => {
    const cli = join(repoRoot(), 'dist', 'agent', 'cli.js');
    const run = (args: string[]) =>
      new Promise<{ code: number; out: string; err: string }>((resolve) => {
        execFile(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 60_000 }, (e, out, err) => resolve({ code: typeof e?.code === 'number' ? e.code : 0, out, err }));
      });
    const r = await run(['scan', `${NET}.0/27`, '--json', '--api-port', String(apiPort), '--http-port', String(httpPort), '--timeout', '1500', '--concurrency', '16']);
    assert.equal(r.code, 0, r.err);
    const arr = JSON.parse(r.out) as { ip: string; driver: string; powerW: number }[];
    assert.ok(Array.isArray(arr));
    assert.deepEqual(
      arr.map((m) => [m.ip, m.driver, m.powerW]),
      MINERS.map((i) => [`${NET}.${i}`, 'luxos', 3250]),
    );
    const refused = await run(['scan', '10.0.0.0/8']);
    assert.equal(refused.code, 2);
    assert.match(refused.err, /refusing to scan more than a \/16/);
  });
});
