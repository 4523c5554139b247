/**
 * The shared keep-alive HTTP client against real sockets on 127.0.0.1:
 * HttpSimServer for the switchable faults, and small raw servers where a
 * fault needs byte-level control (reset mid-answer, a stale kept-alive socket).
 */
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { readdirSync } from 'node:fs';
import { HttpSimServer, type HttpHandler } from '../../hil/sim/http-server.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { HttpClient, type HttpEndpoint } from './http.js';

const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

function client(port: number, over: Partial<HttpEndpoint> = {}): HttpClient {
  const c = new HttpClient({ host: '127.0.0.1', port, connectTimeoutMs: 1000, readTimeoutMs: 1500, ...over });
  closers.push(() => c.close());
  return c;
}

async function sim(handler: HttpHandler = () => ({ body: { ok: true } })): Promise<{ server: HttpSimServer; port: number }> {
  const server = new HttpSimServer(handler);
  const { port } = await server.listen();
  closers.push(() => server.close());
  return { server, port };
}

async function rawServer(onConn: (s: net.Socket, n: number) => void): Promise<number> {
  let n = 0;
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    onConn(s, n++);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  );
  return (srv.address() as net.AddressInfo).port;
}

/** A port nothing listens on (bound, then closed). */
async function deadPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

const fdCount = (): number => readdirSync('/proc/self/fd').length;

describe('HttpClient', () => {
  test('answers status, headers and JSON; sends an object body as JSON', async () => {
    let seen: unknown;
    const { port } = await sim((req) => {
      seen = { method: req.method, path: req.path, json: req.json, type: req.headers['content-type'] };
      return { status: 201, body: { hello: 'world' } };
    });
    const res = await client(port).request({ method: 'POST', path: '/x?y=1', body: { a: 1 } });
    assert.equal(res.status, 201);
    assert.deepEqual(res.json(), { hello: 'world' });
    assert.deepEqual(seen, { method: 'POST', path: '/x', json: { a: 1 }, type: 'application/json' });
  });

  test('keeps the connection alive between requests', async () => {
    let connections = 0;
    const srv = http.createServer((_req, res) => res.end('{"n":1}'));
    srv.on('connection', () => connections++);
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => (srv.closeAllConnections(), srv.close(() => resolve()))));
    const c = client((srv.address() as net.AddressInfo).port);
    for (let i = 0; i < 5; i++) assert.equal((await c.request({ path: '/' })).status, 200);
    assert.equal(connections, 1, 'one TCP connection for five sequential requests');
  });

  test('a refused port is CONNECT_REFUSED naming the endpoint', async () => {
    const port = await deadPort();
    const err = await expectCode(client(port).request({ path: '/summary' }), 'CONNECT_REFUSED');
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}/summary`));
    assert.equal(err.retriable, true);
  });

  test('a peer that accepts and never answers is READ_TIMEOUT at the deadline', async () => {
    const { server, port } = await sim();
    server.fault = { kind: 'silent' };
    const t0 = Date.now();
    await expectCode(client(port, { readTimeoutMs: 300 }).request({ path: '/' }), 'READ_TIMEOUT');
    assert.ok(Date.now() - t0 < 3000);
  });

  test('a slow answer within the deadline succeeds; one beyond it is READ_TIMEOUT', async () => {
    const { server, port } = await sim();
    server.fault = { kind: 'slow', delayMs: 100 };
    const c = client(port, { readTimeoutMs: 2000 });
    assert.equal((await c.request({ path: '/' })).status, 200);
    server.fault = { kind: 'slow', delayMs: 1500 };
    await expectCode(c.request({ path: '/', timeoutMs: 300 }), 'READ_TIMEOUT');
  });

  test('a truncated body is CONNECTION_CLOSED', async () => {
    const { server, port } = await sim(() => ({ body: { data: 'x'.repeat(2000) } }));
    server.fault = { kind: 'truncate' };
    await expectCode(client(port).request({ path: '/' }), 'CONNECTION_CLOSED');
  });

  test('an oversized answer is refused, whether declared or streamed', async () => {
    const { server, port } = await sim(() => ({ body: 'y'.repeat(10_000) }));
    const c = client(port, { maxResponseBytes: 4096 });
    await expectCode(c.request({ path: '/' }), 'RESPONSE_TOO_LARGE', /10000 bytes exceeds 4096/);
    server.fault = { kind: 'flood', bytes: 8 * 1024 * 1024 };
    const err = await expectCode(c.request({ path: '/' }), 'RESPONSE_TOO_LARGE', /refusing to buffer more/);
    assert.equal(err.retriable, false);
  });

  test('a reset right after accept, and a reset mid-answer, are CONNECTION_CLOSED', async () => {
    const { server, port } = await sim();
    server.fault = { kind: 'reset' };
    await expectCode(client(port).request({ path: '/' }), 'CONNECTION_CLOSED');
    const midPort = await rawServer((s) => {
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"partial":');
        setTimeout(() => s.resetAndDestroy(), 20);
      });
    });
    await expectCode(client(midPort).request({ path: '/' }), 'CONNECTION_CLOSED');
  });

  test('garbage instead of HTTP is MALFORMED_RESPONSE', async () => {
    const { server, port } = await sim();
    server.fault = { kind: 'garbage' };
    await expectCode(client(port).request({ path: '/' }), 'MALFORMED_RESPONSE', /not valid HTTP/);
  });

  test('json() on a non-JSON body is MALFORMED_RESPONSE', async () => {
    const { port } = await sim(() => ({ body: '<html>not json</html>' }));
    const res = await client(port).request({ path: '/' });
    assert.throws(() => res.json(), (e: Error & { code?: string }) => e.code === 'MALFORMED_RESPONSE');
  });

  test('an aborted signal cancels a request in flight, and a pre-aborted one never starts', async () => {
    const { server, port } = await sim();
    server.fault = { kind: 'silent' };
    const c = client(port, { readTimeoutMs: 10_000 });
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(), 50);
    const t0 = Date.now();
    await expectCode(c.request({ path: '/', signal: ctl.signal }), 'CANCELLED');
    assert.ok(Date.now() - t0 < 3000);
    const before = server.requests;
    await expectCode(c.request({ path: '/', signal: AbortSignal.abort() }), 'CANCELLED');
    assert.equal(server.requests, before);
  });

  test('a kept-alive socket the device closed is retried once on a fresh connection', async () => {
    // each connection answers its first request, then resets on the next one
    const port = await rawServer((s) => {
      let n = 0;
      s.on('data', () => {
        if (n++ === 0) s.write('HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok');
        else s.resetAndDestroy();
      });
    });
    const c = client(port);
    assert.equal((await c.request({ path: '/' })).text(), 'ok');
    assert.equal((await c.request({ method: 'POST', path: '/mining/stop' })).text(), 'ok');
  });

  test('file descriptors stay stable across 10 000 failed requests', async () => {
    const refused = client(await deadPort());
    const { server, port } = await sim();
    server.fault = { kind: 'garbage' };
    const garbage = client(port);
    const run = async (c: HttpClient, n: number, width: number): Promise<number> => {
      let failed = 0;
      let next = 0;
      await Promise.all(
        Array.from({ length: width }, async () => {
          while (next < n) {
            next++;
            await c.request({ path: '/' }).catch(() => failed++);
          }
        }),
      );
      return failed;
    };
    // warm up lazily opened descriptors (DNS, timers, ...) before the baseline
    await run(refused, 50, 10);
    await run(garbage, 50, 10);
    const before = fdCount();
    assert.equal(await run(refused, 9_000, 50), 9_000);
    assert.equal(await run(garbage, 1_000, 20), 1_000);
    await new Promise((r) => setTimeout(r, 100));
    const after = fdCount();
    assert.ok(after - before <= 5, `fd count grew from ${before} to ${after}`);
  });
});
