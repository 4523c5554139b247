/**
 * `scan` over a simulated subnet holding one miner of every family, plus a
 * silent listener and empty addresses: every family is identified, the
 * silent host does not stall the scan, and no socket is left open.
 * Loopback only (127.0.37.0/27); every simulator uses the same ports, like a
 * real subnet, so the ports are chosen free once for the whole range.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { scan } from '../agent/scan.js';
import { SIM_CATALOG, SIM_PASSWORD, type StartedSim } from '../hil/sim/catalog.js';
import { fdsBackTo, openFds } from '../hil/testing/fds.js';
import { freePort } from '../hil/testing/ports.js';

const BASE = '127.0.37';
const started: StartedSim[] = [];
let silent: net.Server | undefined;
const silentSockets = new Set<net.Socket>();
let ports: { api: number; http: number; v3: number; grpc: number };

before(async () => {
  ports = { api: await freePort(), http: await freePort(), v3: await freePort(), grpc: await freePort() };
  for (const [i, entry] of SIM_CATALOG.entries()) {
    started.push(await entry.start({ host: `${BASE}.${10 + i}`, fast: true, ports }));
  }
  // a host whose API port accepts connections and never answers
  silent = net.createServer((s) => {
    silentSockets.add(s);
    s.on('close', () => silentSockets.delete(s));
  });
  await new Promise<void>((r) => silent?.listen(ports.api, `${BASE}.30`, () => r()));
});

after(async () => {
  for (const s of silentSockets) s.destroy();
  await new Promise<void>((r) => (silent ? silent.close(() => r()) : r()));
  await Promise.all(started.map((s) => s.close()));
});

test('scan identifies every simulated family in a subnet; a silent host does not stall it', async () => {
  const hosts = Array.from({ length: 32 }, (_, i) => `${BASE}.${i}`);
  const fdsBefore = openFds();
  const res = await scan({
    hosts,
    concurrency: 16,
    timeoutMs: 3000,
    apiPort: ports.api,
    httpPort: ports.http,
    portMap: { 4433: ports.v3, 50051: ports.grpc, 8080: ports.http },
    credentials: { password: SIM_PASSWORD },
  });
  const found = new Map(res.hosts.filter((h) => h.status === 'miner').map((h) => [h.ip, h]));
  for (const [i, entry] of SIM_CATALOG.entries()) {
    const h = found.get(`${BASE}.${10 + i}`);
    assert.ok(h, `${entry.family} at ${BASE}.${10 + i} not found: ${JSON.stringify(res.hosts.find((x) => x.ip === `${BASE}.${10 + i}`))}`);
    assert.equal(h.driver, entry.family);
    assert.equal(typeof h.powerW, 'number', `${entry.family}: telemetry read`);
  }
  assert.equal(res.summary.miners, SIM_CATALOG.length);
  const silentHost = res.hosts.find((h) => h.ip === `${BASE}.30`);
  assert.ok(silentHost && silentHost.status !== 'miner', JSON.stringify(silentHost));
  assert.equal(res.hosts.length, 32);
  // every socket the scan opened is closed again (the simulators' server-side ends close a moment later)
  const fdsAfter = await fdsBackTo(fdsBefore, 4, 5000);
  assert.ok(fdsAfter <= fdsBefore + 4, `open fds ${fdsAfter} vs ${fdsBefore} before`);
});
