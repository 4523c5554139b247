/**
 * `rackpilot gpu-node` on loopback, serving the real koffi binding
 * (LocalGpuBackend) over the mock libnvidia-ml, and the GPU driver in
 * `mode: node` talking to it: round trip, bad key, replay, stale timestamp,
 * unreachable node, slow node.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startGpuNode, type GpuNode } from '../agent/gpu-node.js';
import type { GpuBackend } from '../drivers/gpu/backend.js';
import { GpuDriver } from '../drivers/gpu/driver.js';
import { LocalGpuBackend } from '../drivers/gpu/local.js';
import { NodeGpuBackend } from '../drivers/gpu/node-client.js';
import { GPU_NODE_CLIENT_IDLE_MS, GPU_NODE_KEEPALIVE_MS, GPU_NODE_PATHS, signRequest } from '../drivers/gpu/node-protocol.js';
import { gpuConfigSchema } from '../drivers/gpu/schema.js';
import { sleep as delay } from '../drivers/lib/deadline.js';
import { expectCode } from '../hil/testing/expect-code.js';
import { buildMockNvml, mockNvmlControl } from '../hil/testing/mock-nvml.js';
import { freePort } from '../hil/testing/ports.js';
import { RackpilotError } from '../drivers/lib/errors.js';

const KEY = 'k'.repeat(24) + '-test-key';
const logger = pino({ level: 'silent' });
const built = buildMockNvml();
const skip = 'skip' in built ? built.skip : false;
const lib = 'skip' in built ? '' : built.current;

describe('gpu-node', { skip }, () => {
  let local: LocalGpuBackend;
  let node: GpuNode;
  let dir: string;
  const cleanup: (() => Promise<void>)[] = [];

  before(async () => {
    mockNvmlControl(lib).setTimeConstantMs(0);
    local = new LocalGpuBackend({ libraryPath: lib });
    await local.open();
    node = await startGpuNode({ backend: local, key: KEY, host: '127.0.0.1', port: 0 });
    dir = mkdtempSync(join(tmpdir(), 'rp-gpunode-'));
  });
  after(async () => {
    await node.close();
    await local.close();
    rmSync(dir, { recursive: true, force: true });
  });
  afterEach(async () => {
    for (const c of cleanup.splice(0)) await c();
  });

  function nodeDriver(port: number, over: Record<string, unknown> = {}): GpuDriver {
    const cfg = gpuConfigSchema.parse({ id: 'gn', driver: 'gpu', mode: 'node', host: '127.0.0.1', port, key: KEY, stateDir: dir, confirmPollMs: 20, floorW: 300, timeouts: { connectMs: 300, readMs: 500 }, ...over });
    const d = new GpuDriver(cfg, { logger, now: Date.now });
    cleanup.push(() => d.stop());
    return d;
  }

  test('round trip: telemetry, curtail caps, restore returns the exact previous limits', async () => {
    const d = nodeDriver(node.port);
    await d.start();
    const r = await d.read({ deadlineMs: 2000 });
    assert.equal(r.freshness, 'fresh', JSON.stringify(r.error));
    assert.equal(r.fields.gpuCount, 2);
    await d.setPowerTarget(1200, { deadlineMs: 3000 });
    const c = await d.curtail({ deadlineMs: 3000 });
    assert.equal(c.reading.state, 'curtailed');
    assert.equal(c.reading.fields.gpu0EnforcedLimitW, 300);
    const back = await d.restore({ deadlineMs: 3000 });
    assert.equal(back.reading.fields.gpu0PowerLimitW, 600);
    assert.equal(back.reading.fields.gpu1PowerLimitW, 600);
    await d.setPowerTarget(1400, { deadlineMs: 3000 });
  });

  test('a wrong key is AUTH_FAILED naming the node; read goes missing with that error', async () => {
    const client = new NodeGpuBackend({ host: '127.0.0.1', port: node.port, key: 'x'.repeat(32), connectTimeoutMs: 300, readTimeoutMs: 1000, maxResponseBytes: 65536 });
    cleanup.push(() => client.close());
    await expectCode(client.list(), 'AUTH_FAILED', new RegExp(`gpu-node 127\\.0\\.0\\.1:${node.port} rejected our request \\(bad signature`));
    const d = nodeDriver(node.port, { key: 'y'.repeat(32) });
    const r = await d.read({ deadlineMs: 2000 });
    assert.equal(r.freshness, 'missing');
    assert.equal(r.error?.code, 'AUTH_FAILED');
  });

  test('a replayed request and a stale timestamp are refused with 401', async () => {
    const body = '{}';
    const path = GPU_NODE_PATHS.list;
    const signed = signRequest(KEY, path, body, Date.now());
    const first = await post(node.port, path, signed.headers, body);
    assert.equal(first.status, 200);
    const again = await post(node.port, path, signed.headers, body);
    assert.equal(again.status, 401);
    assert.match(again.text, /replayed/);
    const old = signRequest(KEY, path, body, Date.now() - 60_000);
    const stale = await post(node.port, path, old.headers, body);
    assert.equal(stale.status, 401);
    assert.match(stale.text, /stale timestamp/);
    const skewed = new NodeGpuBackend({ host: '127.0.0.1', port: node.port, key: KEY, connectTimeoutMs: 300, readTimeoutMs: 1000, maxResponseBytes: 65536, now: () => Date.now() + 120_000 });
    cleanup.push(() => skewed.close());
    await expectCode(skewed.list(), 'AUTH_FAILED', /stale timestamp/);
  });

  test('oversized bodies are refused', async () => {
    const body = JSON.stringify({ uuid: 'x'.repeat(40_000) });
    const signed = signRequest(KEY, GPU_NODE_PATHS.read, body, Date.now());
    const res = await post(node.port, GPU_NODE_PATHS.read, signed.headers, body).catch(() => ({ status: 413, text: 'reset' }));
    assert.equal(res.status, 413);
  });

  test('a node that goes away: readings go stale with the transport error, no crash', async () => {
    const spare = await startGpuNode({ backend: local, key: KEY, host: '127.0.0.1', port: 0 });
    const d = nodeDriver(spare.port);
    await d.start();
    assert.equal((await d.read({ deadlineMs: 2000 })).freshness, 'fresh');
    await spare.close();
    const r = await d.read({ deadlineMs: 2000 });
    assert.equal(r.freshness, 'stale');
    assert.equal(r.online, false);
    assert.match(r.error?.code ?? '', /CONNECT_REFUSED|CONNECTION_CLOSED|UNREACHABLE/);
    assert.equal(r.fields.gpuCount, 2, 'the last good values are kept');
  });

  test('a node that is down from the start: start fails clearly, reads are missing, a curtail fails naming the node, and it recovers once the node is up', async () => {
    const port = await freePort();
    const d = nodeDriver(port);
    await assert.rejects(d.start(), (e: RackpilotError) => /CONNECT_REFUSED|UNREACHABLE/.test(e.code) && e.message.includes(`127.0.0.1:${port}`));
    const r = await d.read({ deadlineMs: 1000 });
    assert.equal(r.freshness, 'missing');
    assert.equal(r.online, false);
    await assert.rejects(d.curtail({ deadlineMs: 1500 }), (e: RackpilotError) => e instanceof RackpilotError && e.message.includes(`127.0.0.1:${port}`));
    const late = await startGpuNode({ backend: local, key: KEY, host: '127.0.0.1', port });
    cleanup.push(() => late.close());
    const ok = await d.read({ deadlineMs: 2000 });
    assert.equal(ok.freshness, 'fresh');
  });

  test('a slow node: reads end at the deadline as stale telemetry', async () => {
    let slow = false;
    const slowBackend: GpuBackend = {
      open: () => local.open(),
      close: () => Promise.resolve(),
      list: () => local.list(),
      read: async (uuid) => {
        if (slow) await delay(1500);
        return local.read(uuid);
      },
      setPowerLimit: (u, mw) => local.setPowerLimit(u, mw),
      setLockedClocks: (u, a, b) => local.setLockedClocks(u, a, b),
      resetLockedClocks: (u) => local.resetLockedClocks(u),
    };
    const sn = await startGpuNode({ backend: slowBackend, key: KEY, host: '127.0.0.1', port: 0 });
    cleanup.push(() => sn.close());
    const d = nodeDriver(sn.port);
    await d.start();
    assert.equal((await d.read({ deadlineMs: 2000 })).freshness, 'fresh');
    slow = true;
    const t0 = Date.now();
    const r = await d.read({ deadlineMs: 400 });
    assert.ok(Date.now() - t0 < 1000, 'read returned at its deadline');
    assert.equal(r.freshness, 'stale');
    assert.equal(r.error?.code, 'DEADLINE_EXCEEDED');
    const r2 = await d.read({ deadlineMs: 5000 });
    assert.equal(r2.error?.code, 'READ_TIMEOUT', 'the client request deadline (timeouts.readMs 500) applies too');
  });
  test('connections are bounded: idle sockets are closed, slow headers are cut, past maxConnections refused', async () => {
    const bounded = await startGpuNode({ backend: local, key: KEY, host: '127.0.0.1', port: 0, idleTimeoutMs: 300, requestDeadlineMs: 200, requestTimeoutMs: 500, maxConnections: 2 });
    cleanup.push(() => bounded.close());
    /** Resolves with the ms until the server closed the socket (or -1 after `maxMs`). */
    const closedAfter = (s: net.Socket, maxMs: number): Promise<number> => {
      const t0 = Date.now();
      return new Promise((resolve) => {
        const t = setTimeout(() => {
          s.destroy();
          resolve(-1);
        }, maxMs);
        s.on('error', () => undefined);
        s.resume(); // read whatever the server sends (a 408) so its FIN is seen
        s.on('close', () => {
          clearTimeout(t);
          resolve(Date.now() - t0);
        });
      });
    };
    const connect = (): Promise<net.Socket> =>
      new Promise((resolve, reject) => {
        const s = net.connect(bounded.port, '127.0.0.1', () => resolve(s));
        s.on('error', reject);
      });
    const a = await connect();
    const b = await connect();
    const aClosed = closedAfter(a, 5000);
    const bClosed = closedAfter(b, 5000);
    // a header trickle on b: one byte at a time, never finishing the request
    b.write('POST /v1/list HTTP/1.1\r\nHost: x\r\n');
    const trickle = setInterval(() => b.writable && b.write('X-A: b\r\n'), 100);
    await delay(50);
    const c = await connect();
    const cClosed = await closedAfter(c, 3000);
    assert.ok(cClosed >= 0 && cClosed < 1000, `a connection past maxConnections is refused at once (${cClosed} ms)`);
    const [ta, tb] = await Promise.all([aClosed, bClosed]);
    clearInterval(trickle);
    assert.ok(ta >= 0 && ta < 3000, `an idle connection is closed (${ta} ms)`);
    assert.ok(tb >= 0 && tb < 3000, `a header trickle is cut (${tb} ms)`);
  });

  test('keep-alive: the client drops idle sockets before the node closes them', () => {
    assert.ok(GPU_NODE_CLIENT_IDLE_MS < GPU_NODE_KEEPALIVE_MS);
  });

  test('a busy node (503 BUSY) is retried within the action deadline', async () => {
    let hold = 0;
    const busyBackend: GpuBackend = {
      open: () => local.open(),
      close: () => Promise.resolve(),
      list: () => local.list(),
      read: async (uuid) => {
        if (hold > 0) {
          hold--;
          await delay(300);
        }
        return local.read(uuid);
      },
      setPowerLimit: (u, mw) => local.setPowerLimit(u, mw),
      setLockedClocks: (u, a, b) => local.setLockedClocks(u, a, b),
      resetLockedClocks: (u) => local.resetLockedClocks(u),
    };
    const bn = await startGpuNode({ backend: busyBackend, key: KEY, host: '127.0.0.1', port: 0, maxConcurrent: 1 });
    cleanup.push(() => bn.close());
    const d = nodeDriver(bn.port, { gpus: [0] });
    await d.start();
    // another client keeps the node's only slot busy while the curtail is sent
    const other = new NodeGpuBackend({ host: '127.0.0.1', port: bn.port, key: KEY, connectTimeoutMs: 300, readTimeoutMs: 2000, maxResponseBytes: 65536 });
    cleanup.push(() => other.close());
    const uuid = d.gpuList[0]?.uuid ?? '';
    hold = 1;
    const busy = other.read(uuid);
    await delay(50);
    const c = await d.curtail({ deadlineMs: 3000 });
    assert.equal(c.confirmed, true);
    await busy;
    await d.restore({ deadlineMs: 3000 });
  });
});

function post(port: number, path: string, headers: Record<string, string>, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
