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
import { HttpSimServer, type HttpHandler, type HttpSimOptions } from '../../hil/sim/http-server.js';
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

async function sim(handler: HttpHandler = () => ({ body: { ok: true } }), opts: HttpSimOptions = {}): Promise<{ server: HttpSimServer; port: number }> {
  const server = new HttpSimServer(handler, '127.0.0.1', 0, opts);
  const { port } = await server.listen();
  closers.push(() => server.close());
  return { server, port };
}

/** A connection that answers its first request (keep-alive) and resets on the next: a pooled socket gone stale. */
function answerOnceThenReset(s: net.Socket): void {
  let n = 0;
  s.on('data', () => {
    if (n++ === 0) s.write('HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok');
    else s.resetAndDestroy();
  });
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
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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
    const port = await rawServer(answerOnceThenReset);
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

describe('HttpClient keep-warm, against a server that drops idle connections', () => {
  test('without keep-warm, a request after the server dropped the idle connection succeeds on a new one', async () => {
    const { server, port } = await sim(undefined, { keepAliveMs: 200 });
    const c = client(port);
    assert.equal((await c.request({ path: '/a' })).status, 200);
    await sleep(400);
    assert.equal((await c.request({ method: 'POST', path: '/mining/stop' })).status, 200);
    assert.equal(server.connections, 2);
    assert.equal(c.stats.connects, 2);
    assert.equal(c.stats.keepWarm, undefined);
  });

  test('learns the idle limit from the close, reopens at once, and keeps the connection open past that limit', async () => {
    const paths: string[] = [];
    const { server, port } = await sim((req) => (paths.push(`${req.method} ${req.path}`), { body: { ok: true } }), { keepAliveMs: 500 });
    const c = client(port, { keepWarm: { minIntervalMs: 50 } });
    assert.equal((await c.request({ path: '/summary' })).status, 200);
    // the server drops it after 500 ms idle; the client reopens one and then pings it every 0.7 x 500 ms
    await sleep(2000);
    const before = server.connections;
    assert.ok(before >= 2, 'the dropped connection was replaced');
    assert.equal((await c.request({ method: 'POST', path: '/mining/stop' })).status, 200);
    assert.equal(server.connections, before, 'the action went over the warm connection');
    const kw = c.stats.keepWarm;
    assert.ok(kw);
    assert.equal(kw.learned, true);
    assert.ok(kw.idleLimitMs < 60_000, `learned ${kw.idleLimitMs} ms`);
    assert.ok(kw.reopens >= 1);
    assert.equal(kw.pingFailures, 0);
    assert.ok(kw.pings >= 3, `${kw.pings} pings`);
    assert.ok(paths.includes('GET /'), 'the default ping is GET /');
    assert.equal(paths.at(-1), 'POST /mining/stop');
  });

  test('a Keep-Alive: timeout=N answer header is learned before any connection is lost', async () => {
    const { server, port } = await sim(undefined, { keepAliveMs: 2000, announceKeepAlive: true });
    const c = client(port, { keepWarm: { minIntervalMs: 50 } });
    const res = await c.request({ path: '/' });
    assert.equal(res.headers['keep-alive'], 'timeout=2');
    assert.equal(c.stats.keepWarm?.idleLimitMs, 1000, "node's agent drops the socket 1 s before the announced timeout");
    await sleep(2500);
    assert.equal((await c.request({ method: 'POST', path: '/x' })).status, 200);
    assert.equal(server.connections, 1, 'one connection all along');
    assert.equal(c.stats.keepWarm?.reopens, 0);
  });

  test('the simulator announces nothing by default, like lighttpd', async () => {
    const { port } = await sim();
    const res = await client(port).request({ path: '/' });
    assert.equal(res.headers['keep-alive'], undefined);
    assert.equal(res.headers.connection, 'keep-alive');
  });

  test('a device that never keeps connections is not pinged', async () => {
    const { server, port } = await sim(() => ({ headers: { connection: 'close' }, body: { ok: true } }), { keepAliveMs: 200 });
    const c = client(port, { keepWarm: { minIntervalMs: 20 } });
    for (let i = 0; i < 3; i++) assert.equal((await c.request({ path: '/' })).status, 200);
    await sleep(500);
    assert.equal(server.requests, 3);
    assert.equal(c.stats.keepWarm?.pings, 0);
  });

  test('a device that went away is not pinged again once a ping failed', async () => {
    const { server, port } = await sim();
    const c = client(port, { keepWarm: { minIntervalMs: 1 } });
    assert.equal((await c.request({ path: '/' })).status, 200);
    await sleep(100);
    // the device goes away: its connection closes while pooled, the client tries once to reopen one
    await server.close();
    await sleep(500);
    assert.deepEqual(
      { pings: c.stats.keepWarm?.pings, failures: c.stats.keepWarm?.pingFailures, reopens: c.stats.keepWarm?.reopens },
      { pings: 1, failures: 1, reopens: 1 },
    );
  });

  test('a limit too short to keep warm without hammering disables the pings', async () => {
    const { server, port } = await sim(undefined, { keepAliveMs: 100 });
    const c = client(port, { keepWarm: { minIntervalMs: 500 } });
    assert.equal((await c.request({ path: '/' })).status, 200);
    await sleep(600);
    assert.equal(server.requests, 1);
    assert.match(c.stats.keepWarm?.disabled ?? '', /too soon to keep one warm/);
    assert.equal((await c.request({ path: '/' })).status, 200, 'requests still work on a new connection');
  });

  test('two dead pooled sockets: the request still gets through on a new connection', async () => {
    // every connection answers one request, then resets on the next: both pooled sockets are stale
    const port = await rawServer(answerOnceThenReset);
    const c = client(port);
    await Promise.all([c.request({ path: '/a' }), c.request({ path: '/b' })]);
    assert.equal(c.stats.connects, 2);
    assert.equal((await c.request({ method: 'POST', path: '/mining/stop' })).text(), 'ok');
    assert.equal(c.stats.staleRetries, 2);
    assert.equal(c.stats.connects, 3);
  });
});
