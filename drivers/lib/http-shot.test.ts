/**
 * Prepared requests of the shared HttpClient (`prepare()` / `fire()`):
 * the bytes written straight onto a pooled socket or a new connection, and
 * the answer parsed by http-parser-js, against real sockets on 127.0.0.1.
 * Each fault is also sent through the plain `request()` to check both ways
 * end in the same error code.
 */
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readdirSync } from 'node:fs';
import fc from 'fast-check';
import { HttpSimServer, type HttpHandler, type HttpSimOptions } from '../../hil/sim/http-server.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { RackpilotError, type ErrorCode } from './errors.js';
import { HttpClient, type HttpEndpoint, type HttpRequest } from './http.js';
import { answerTracker, BatchAnswers, sendBatch } from './send-batch.js';

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

/** A server that hands each request's raw bytes to `onRequest` and writes back what it returns (undefined: nothing). */
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

/** Answers every request on a connection with `answer` (once the request's head is in), then does `after`. */
async function answering(answer: string | Buffer, after: 'keep' | 'end' | 'reset' = 'keep'): Promise<number> {
  return rawServer((s) => {
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (!buf.includes('\r\n\r\n')) return;
      buf = '';
      s.write(answer);
      if (after === 'end') s.end();
      if (after === 'reset') s.resetAndDestroy();
    });
  });
}

async function deadPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

const fdCount = (): number => readdirSync('/proc/self/fd').length;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Fires `req` prepared, and sends it plain, expecting `code` from both. */
async function bothFail(c: HttpClient, req: HttpRequest, code: ErrorCode, message?: RegExp): Promise<void> {
  const fired = c.prepare(req).fire();
  assert.ok(fired);
  await expectCode(fired.result(), code, message);
  await expectCode(c.request(req), code, message);
}

describe('HttpClient prepared requests', () => {
  test('the bytes are those the plain request sends (headers, Host, Content-Length, body)', async () => {
    const seen: string[] = [];
    const port = await rawServer((s) =>
      s.on('data', (d: Buffer) => {
        seen.push(d.toString('latin1'));
        s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      }),
    );
    const c = client(port);
    const req: HttpRequest = { method: 'POST', path: '/api/v1/mining/stop?x=1', headers: { authorization: 'Bearer abc' }, body: { pw: 'x' } };
    await c.request(req);
    const p = c.prepare(req);
    assert.equal(p.bytes.toString('latin1'), seen[0]);
    assert.equal((await p.fire()?.result())?.text(), 'ok');
    assert.equal(seen[1], seen[0]);
    // a POST without a body carries Content-Length: 0, as Node's client sends it
    assert.match(c.prepare({ method: 'POST', path: '/mining/stop' }).bytes.toString('latin1'), /\r\nContent-Length: 0\r\n\r\n$/);
  });

  test('goes over the warm pooled connection and answers as request() does', async () => {
    const paths: string[] = [];
    const { server, port } = await sim((req) => (paths.push(`${req.method} ${req.path}`), { status: 201, body: { stopped: true } }));
    const c = client(port);
    await c.request({ path: '/summary' });
    const fired = c.prepare({ method: 'POST', path: '/mining/stop', body: { a: 1 } }).fire();
    assert.ok(fired);
    const res = await fired.result();
    assert.equal(res.status, 201);
    assert.deepEqual(res.json(), { stopped: true });
    assert.ok(res.receivedAt >= fired.sentAt);
    assert.equal(server.connections, 1, 'no new connection');
    assert.equal(c.stats.connects, 1);
    assert.deepEqual(paths, ['GET /summary', 'POST /mining/stop']);
    // the taken connection is closed after its answer; the plain path opens another
    assert.equal((await c.request({ path: '/summary' })).status, 201);
    assert.equal(server.connections, 2);
  });

  test('without a pooled connection it opens one, and the write is on the wire before any await', async () => {
    const { server, port } = await sim();
    const c = client(port);
    const fired = c.prepare({ method: 'POST', path: '/x' }).fire();
    assert.ok(fired);
    // nobody awaits the answer for a while: the request still reaches the device
    await sleep(150);
    assert.equal(server.requests, 1);
    const res = await fired.result();
    assert.equal(res.status, 200);
    assert.ok(res.receivedAt - fired.sentAt < 150, 'the answer time is when it arrived, not when it was awaited');
    assert.equal(c.stats.connects, 1);
  });

  test('answers: chunked, read to the close, an interim 100 Continue, a 204', async () => {
    const c1 = client(await answering('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'));
    assert.deepEqual((await c1.prepare({ path: '/' }).fire()!.result()).json(), { a: 1 });
    const c2 = client(await answering('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the close', 'end'));
    assert.equal((await c2.prepare({ path: '/' }).fire()!.result()).text(), 'until the close');
    const c3 = client(await answering('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nx-y: 1\r\nX-Y: 2\r\n\r\ndone'));
    const r3 = await c3.prepare({ method: 'POST', path: '/' }).fire()!.result();
    assert.equal(r3.status, 200);
    assert.equal(r3.text(), 'done');
    assert.deepEqual(r3.headers['set-cookie'], ['a=1', 'b=2']);
    assert.equal(r3.headers['x-y'], '1, 2');
    const c4 = client(await answering('HTTP/1.1 204 No Content\r\n\r\n'));
    const r4 = await c4.prepare({ method: 'POST', path: '/' }).fire()!.result();
    assert.equal(r4.status, 204);
    assert.equal(r4.body.length, 0);
  });

  test('a pooled connection the device closed meanwhile: sent again the plain way, and answered', async () => {
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
    const fired = c.prepare({ method: 'POST', path: '/mining/stop' }).fire();
    assert.ok(fired);
    assert.equal((await fired.result()).text(), 'ok');
    assert.equal(c.stats.staleRetries, 1);
  });

  test('a pooled connection closed by the device with a FIN: not taken once seen; the shot opens a new one', async () => {
    const { server, port } = await sim(undefined, { keepAliveMs: 100 });
    const c = client(port);
    await c.request({ path: '/' });
    await sleep(250);
    const fired = c.prepare({ method: 'POST', path: '/x' }).fire();
    assert.ok(fired);
    assert.equal((await fired.result()).status, 200);
    assert.equal(server.connections, 2);
    assert.equal(c.stats.staleRetries, 0);
  });

  test('faults end in the codes request() gives', async () => {
    const { server, port } = await sim(() => ({ body: { data: 'x'.repeat(2000) } }));
    const c = client(port, { readTimeoutMs: 300, maxResponseBytes: 1500 });
    server.fault = { kind: 'garbage' };
    await bothFail(c, { path: '/' }, 'MALFORMED_RESPONSE', /not valid HTTP/);
    server.fault = { kind: 'none' };
    await bothFail(c, { path: '/' }, 'RESPONSE_TOO_LARGE', /answer of \d+ bytes exceeds 1500/);
    server.fault = { kind: 'flood', bytes: 8 * 1024 * 1024 };
    await bothFail(c, { path: '/' }, 'RESPONSE_TOO_LARGE', /refusing to buffer more/);
    server.fault = { kind: 'silent' };
    await bothFail(c, { path: '/' }, 'READ_TIMEOUT', /no complete answer within 300 ms/);
    server.fault = { kind: 'reset' };
    await bothFail(c, { path: '/' }, 'CONNECTION_CLOSED');
    const big = client(port);
    server.fault = { kind: 'truncate' };
    await bothFail(big, { path: '/' }, 'CONNECTION_CLOSED');
    await bothFail(client(await deadPort()), { path: '/summary' }, 'CONNECT_REFUSED', /127\.0\.0\.1:\d+\/summary/);
  });

  test('malformed answers: a bad status line, a bad Content-Length, headers beyond 16 KiB, a close mid-headers', async () => {
    await bothFail(client(await answering('HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n')), { path: '/' }, 'MALFORMED_RESPONSE');
    await bothFail(client(await answering('HTTP/1.1 200 OK\r\ncontent-length: 12abc\r\n\r\n{}')), { path: '/' }, 'MALFORMED_RESPONSE');
    await bothFail(client(await answering(`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(20_000)}\r\ncontent-length: 0\r\n\r\n`)), { path: '/' }, 'MALFORMED_RESPONSE');
    await bothFail(client(await answering('HTTP/1.1 200 OK\r\ncontent-le', 'end')), { path: '/' }, 'CONNECTION_CLOSED');
    await bothFail(client(await answering('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{"a"', 'end')), { path: '/' }, 'CONNECTION_CLOSED');
    await bothFail(client(await answering('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"a":', 'end')), { path: '/' }, 'CONNECTION_CLOSED');
    await bothFail(client(await answering('', 'end')), { path: '/' }, 'CONNECTION_CLOSED');
  });

  test('the deadline counts from the send, not from when the answer is awaited', async () => {
    const { server, port } = await sim();
    server.fault = { kind: 'silent' };
    const c = client(port, { readTimeoutMs: 5000 });
    const fired = c.prepare({ method: 'POST', path: '/x', timeoutMs: 300 }).fire();
    assert.ok(fired);
    await sleep(200);
    const t0 = performance.now();
    await expectCode(fired.result(), 'READ_TIMEOUT', /within 300 ms/);
    const waited = performance.now() - t0;
    assert.ok(waited < 200, `waited ${waited} ms after result()`);
  });

  test('an abort destroys the connection and ends in CANCELLED; cancel() before result() too; no descriptor leaks', async () => {
    const { server, port } = await sim();
    server.fault = { kind: 'silent' };
    const c = client(port, { readTimeoutMs: 10_000 });
    const before = fdCount();
    for (let i = 0; i < 50; i++) {
      const fired = c.prepare({ method: 'POST', path: '/x' }).fire();
      assert.ok(fired);
      const ctl = new AbortController();
      setTimeout(() => ctl.abort(), 5);
      await expectCode(fired.result({ signal: ctl.signal }), 'CANCELLED');
      const dropped = c.prepare({ method: 'POST', path: '/y' }).fire();
      dropped?.cancel();
      await expectCode(dropped!.result(), 'CANCELLED');
    }
    await sleep(100);
    assert.ok(fdCount() - before <= 3, `fd count grew from ${before} to ${fdCount()}`);
  });

  test('close() ends fired requests still in flight and refuses to fire', async () => {
    const { server, port } = await sim();
    server.fault = { kind: 'silent' };
    const c = client(port, { readTimeoutMs: 10_000 });
    const p = c.prepare({ method: 'POST', path: '/x' });
    const fired = p.fire();
    assert.ok(fired);
    const res = fired.result();
    c.close();
    await expectCode(res, 'CANCELLED');
    assert.equal(p.fire(), undefined);
  });

  test('keep-warm: the taken connection is replaced by the next ping, minIntervalMs after the shot (not in the middle of a wave)', async () => {
    const { server, port } = await sim(undefined, { keepAliveMs: 2000 });
    const c = client(port, { keepWarm: { minIntervalMs: 400 } });
    await c.request({ path: '/' });
    await sleep(450); // past minIntervalMs since that request: only the shot holds the reopen back
    const res = await c.prepare({ method: 'POST', path: '/x' }).fire()!.result();
    assert.equal(res.status, 200);
    await sleep(150);
    assert.equal(server.connections, 1, 'no new connection right after the shot');
    await sleep(600);
    assert.equal(server.connections, 2, 'keep-warm opened a new connection');
    assert.ok((c.stats.keepWarm?.reopens ?? 0) >= 1);
    const conns = server.connections;
    await c.prepare({ method: 'POST', path: '/x' }).fire()!.result();
    assert.equal(server.connections, conns, 'the next shot found it');
  });

  test("fired in a wave: the shot's bookkeeping (keep-warm's replacement included) waits for the wave's other answers", async () => {
    const { server, port } = await sim(undefined, { keepAliveMs: 2000 });
    const c = client(port, { keepWarm: { minIntervalMs: 100 } });
    await c.request({ path: '/' });
    await sleep(150); // past minIntervalMs since that request
    const wave = new BatchAnswers(10_000);
    let other!: () => void;
    const fired = sendBatch(() => {
      const f = c.prepare({ method: 'POST', path: '/x' }).fire();
      other = answerTracker() as () => void; // another device of the wave, still to answer
      return f;
    }, wave);
    assert.ok(fired);
    // answered, but nobody asked for the result yet (the engine asks once the wave's answers are in)
    for (let i = 0; i < 100 && server.requests < 2; i++) await sleep(10);
    await sleep(300);
    assert.equal(server.connections, 1, 'no replacement while the wave still waits for an answer');
    other();
    for (let i = 0; i < 300 && server.connections < 2; i++) await sleep(10);
    assert.equal(server.connections, 2, 'keep-warm opened the replacement once the answers were in');
    const res = await fired.result();
    assert.equal(res.status, 200);
  });

  test('a status line with three digits that are no HTTP status ("000") is MALFORMED_RESPONSE, fired or requested', async () => {
    const port = await rawServer((s) => {
      s.once('data', () => s.end('HTTP/1.0 000 OK\r\n\r\n{"till":"close"}'));
    });
    const c = client(port, { readTimeoutMs: 1000 });
    const fired = c.prepare({ path: '/' }).fire();
    assert.ok(fired);
    await expectCode(fired.result(), 'MALFORMED_RESPONSE');
    await expectCode(c.request({ path: '/' }), 'MALFORMED_RESPONSE');
    c.close();
  });

  test('fuzz: truncated, corrupted or padded answers end in an answer or a transport error code, never a throw or a hang', async () => {
    const valid = [
      'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}',
      'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n',
      'HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Digest realm="x", nonce="n", qop="auth"\r\ncontent-length: 0\r\n\r\n',
      'HTTP/1.0 200 OK\r\n\r\n{"till":"close"}',
    ];
    let next: Buffer = Buffer.alloc(0);
    const port = await rawServer((s) => {
      const answer = next;
      s.once('data', () => s.end(answer));
    });
    const c = client(port, { readTimeoutMs: 300, maxResponseBytes: 4096 });
    const allowed = new Set(['MALFORMED_RESPONSE', 'CONNECTION_CLOSED', 'READ_TIMEOUT', 'RESPONSE_TOO_LARGE']);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...valid),
        fc.oneof(
          fc.record({ cut: fc.nat() }),
          fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
          fc.record({ pad: fc.uint8Array({ maxLength: 64 }) }),
        ),
        async (answer, m) => {
          let b = Buffer.from(answer, 'latin1');
          if ('cut' in m) b = b.subarray(0, m.cut % (b.length + 1));
          else if ('at' in m) b[m.at % b.length] = m.byte;
          else b = Buffer.concat([b, Buffer.from(m.pad)]);
          next = b;
          const fired = c.prepare({ path: '/' }).fire();
          assert.ok(fired);
          try {
            const res = await fired.result();
            assert.ok(res.status >= 100 && res.status <= 999);
          } catch (err) {
            assert.ok(err instanceof RackpilotError, String(err));
            assert.ok(allowed.has(err.code), `${err.code}: ${err.message}`);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  test('a header value that cannot be sent is refused when preparing', () => {
    const c = client(1);
    assert.throws(() => c.prepare({ path: '/', headers: { authorization: 'Bearer a\r\nx: y' } }), TypeError);
    assert.throws(() => c.prepare({ path: '/a b' }), TypeError);
  });
});
