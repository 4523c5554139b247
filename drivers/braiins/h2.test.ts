/**
 * The gRPC transport (h2.ts) against a plain node:http2 server that answers
 * each request as a test says, including the answers a gRPC server never
 * gives. Each case goes three ways: a prepared call (the armed curtail's
 * path), a plain call (BraiinsGrpc.call), and the reference, a @grpc/grpc-js
 * client on the same server whose status goes through the same mapping: all
 * three must fail with the same code and gRPC status.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import * as grpcJs from '@grpc/grpc-js';
import net, { type AddressInfo } from 'node:net';
import type { ErrorCode } from '../lib/errors.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { BraiinsGrpc } from './grpc.js';
import { methodOf } from './proto.js';

const ACTIONS = 'braiins.bos.v1.ActionsService';
const MAX = 4096;

type Answer = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;
let answer: Answer = () => undefined;
const seen: http2.IncomingHttpHeaders[] = [];
const server = http2.createServer();
server.on('stream', (stream, headers) => {
  seen.push(headers);
  stream.on('error', () => undefined);
  // the request is read whole before the answer, as a gRPC server does for a unary call
  stream.resume();
  stream.on('end', () => answer(stream, headers));
});
let grpc: BraiinsGrpc;
let reference: grpcJs.Client;

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  grpc = new BraiinsGrpc({ host: '127.0.0.1', port, maxResponseBytes: MAX, label: `m1 (127.0.0.1:${port})` });
  reference = new grpcJs.Client(`127.0.0.1:${port}`, grpcJs.credentials.createInsecure(), { 'grpc.max_receive_message_length': MAX });
});
after(async () => {
  grpc.close();
  reference.close();
  await new Promise((resolve) => server.close(resolve));
});

function frame(message: Buffer): Buffer {
  const b = Buffer.alloc(5 + message.length);
  b.writeUInt32BE(message.length, 1);
  message.copy(b, 5);
  return b;
}
const PAUSED = frame(methodOf(ACTIONS, 'PauseMining').responseSerialize({ already_paused: true }));
const GRPC_OK = { ':status': 200, 'content-type': 'application/grpc' };

async function ready() {
  // a session that never came up is retried after a backoff (250 ms doubling to 2 s)
  for (let i = 0; i < 400; i++) {
    const s = grpc.h2.session();
    if (s) return s;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail('the prepared-calls session never came up');
}

async function prepared(deadlineMs = 1000, signal?: AbortSignal): Promise<unknown> {
  const call = grpc.h2.prepare(ACTIONS, 'PauseMining', {}, 'tok-1', grpc.where(ACTIONS, 'PauseMining'));
  const sent = grpc.h2.send(await ready(), call);
  assert.ok(sent);
  return sent.result(deadlineMs, signal);
}

const plain = (deadlineMs = 1000) => grpc.call(ACTIONS, 'PauseMining', {}, { deadlineMs, token: 'tok-1' });

/** The same call by grpc-js, its error mapped as ours are. */
function byGrpcJs(deadlineMs = 1000): Promise<unknown> {
  const def = methodOf(ACTIONS, 'PauseMining');
  const md = new grpcJs.Metadata();
  md.set('authorization', 'tok-1');
  return new Promise((resolve, reject) => {
    reference.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, {}, md, { deadline: Date.now() + deadlineMs }, (err, reply) => {
      if (err) reject(grpc.statusError(err.code, err.details || err.message, grpc.where(ACTIONS, 'PauseMining'), deadlineMs, true));
      else resolve(reply);
    });
  });
}

describe('braiins gRPC transport (node:http2)', () => {
  test('the request is the gRPC request grpc-js sends: path, content-type, te, token, length-prefixed message', async () => {
    answer = (s) => {
      s.respond(GRPC_OK, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
      s.end(PAUSED);
    };
    seen.length = 0;
    assert.deepEqual(await prepared(), { already_paused: true });
    assert.deepEqual((await plain()).reply, { already_paused: true });
    assert.deepEqual(await byGrpcJs(), { already_paused: true });
    const [armed, ours, theirs] = seen;
    for (const h of ['method', 'path', 'scheme'].map((k) => `:${k}`).concat(['content-type', 'te', 'authorization'])) {
      assert.equal(armed?.[h], theirs?.[h], h);
      assert.equal(ours?.[h], theirs?.[h], h);
    }
    assert.equal(ours?.[':path'], '/braiins.bos.v1.ActionsService/PauseMining');
    // a plain call tells the server its deadline, as grpc-js does
    assert.match(String(ours?.['grpc-timeout']), /^\d{1,8}m$/);
    assert.match(String(theirs?.['grpc-timeout']), /^\d{1,8}[mSu]$/);
  });

  const cases: { name: string; code: ErrorCode; message?: RegExp; answer: Answer }[] = [
    {
      name: 'trailers-only UNAUTHENTICATED',
      code: 'AUTH_FAILED',
      message: /PauseMining: not authenticated \(expired token\)/,
      answer: (s) => s.respond({ ...GRPC_OK, 'grpc-status': '16', 'grpc-message': 'expired%20token' }, { endStream: true }),
    },
    {
      name: 'FAILED_PRECONDITION in the trailers',
      code: 'DEVICE_ERROR',
      message: /miner refused the request \(FAILED_PRECONDITION: not now\)/,
      answer: (s) => {
        s.respond(GRPC_OK, { waitForTrailers: true });
        s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '9', 'grpc-message': 'not now' }));
        s.end();
      },
    },
    { name: 'HTTP 503 without a gRPC status', code: 'CONNECTION_CLOSED', answer: (s) => s.respond({ ':status': 503 }, { endStream: true }) },
    {
      name: 'status OK but a message that is not protobuf',
      code: 'MALFORMED_RESPONSE',
      message: /not valid gRPC\/protobuf/,
      answer: (s) => {
        s.respond(GRPC_OK, { waitForTrailers: true });
        s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
        s.end(frame(Buffer.from([0xff, 0xff, 0xff, 0xff])));
      },
    },
    {
      name: 'status OK but a body that is not length-prefixed (read as a huge length)',
      code: 'RESPONSE_TOO_LARGE',
      answer: (s) => {
        s.respond(GRPC_OK, { waitForTrailers: true });
        s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
        s.end(Buffer.from('not a grpc frame'));
      },
    },
    {
      name: 'an HTML error page with HTTP 502',
      code: 'CONNECTION_CLOSED',
      message: /Received HTTP status code 502/,
      answer: (s) => {
        s.respond({ ':status': 502, 'content-type': 'text/html' });
        s.end('<html><body>Bad gateway</body></html>');
      },
    },
    {
      name: 'status OK with no message',
      code: 'UNSUPPORTED',
      answer: (s) => s.respond({ ...GRPC_OK, 'grpc-status': '0' }, { endStream: true }),
    },
    {
      name: 'a reply over maxResponseBytes',
      code: 'RESPONSE_TOO_LARGE',
      answer: (s) => {
        s.respond(GRPC_OK, { waitForTrailers: true });
        s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
        s.end(frame(Buffer.alloc(2 * MAX, 0x0a)));
      },
    },
    { name: 'the stream reset by the peer', code: 'CONNECTION_CLOSED', answer: (s) => s.close(http2.constants.NGHTTP2_INTERNAL_ERROR) },
  ];
  for (const c of cases) {
    test(`${c.name} -> ${c.code}, prepared and plain alike, as grpc-js reads it`, async () => {
      answer = c.answer;
      const armed = await expectCode(prepared(), c.code, c.message);
      const ours = await expectCode(plain(), c.code, c.message);
      const theirs = await expectCode(byGrpcJs(), c.code, c.message);
      assert.match(armed.message, /^m1 \(127\.0\.0\.1:\d+\) ActionsService\/PauseMining: /);
      assert.equal(armed.context.grpcStatus, theirs.context.grpcStatus);
      assert.equal(ours.context.grpcStatus, theirs.context.grpcStatus);
    });
  }

  test('no answer: READ_TIMEOUT at the deadline counted from the send; the session takes no new call and closes', async () => {
    answer = () => undefined;
    const s = await ready();
    const gone = new Promise((resolve) => s.once('close', resolve));
    const t0 = performance.now();
    await expectCode(prepared(300), 'READ_TIMEOUT', /connected but no reply within 300 ms/);
    assert.ok(performance.now() - t0 < 600);
    assert.equal(s.closed, true, 'closing: no new stream goes on it');
    assert.notEqual(grpc.h2.session(), s);
    // its only call was reset at the deadline, so it ends at once
    await gone;
    assert.equal(s.destroyed, true);
  });

  test('calls in flight on a session that one call timed out end each by its own deadline, not as a lost connection', async () => {
    answer = () => undefined;
    await ready();
    const results = await Promise.allSettled([plain(300), plain(400), plain(500)]);
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.equal((r.reason as { code: string }).code, 'READ_TIMEOUT');
    }
  });

  test('an abort resets the stream: CANCELLED, and the session stays', async () => {
    answer = () => undefined;
    const s = await ready();
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(), 50);
    await expectCode(prepared(5000, ctl.signal), 'CANCELLED', /PauseMining: cancelled/);
    assert.equal(s.destroyed, false);
    assert.equal(grpc.h2.session(), s);
  });

  test('a session closed by the peer is not sent on (send -> undefined) and is reopened on demand', async () => {
    const s = await ready();
    const call = grpc.h2.prepare(ACTIONS, 'PauseMining', {}, 'tok-1', 'x');
    const closed = new Promise((resolve) => s.once('close', resolve));
    for (const sess of sessions) sess.destroy();
    await closed;
    assert.equal(grpc.h2.send(s, call), undefined);
    const again = await ready();
    assert.notEqual(again, s);
  });
});

const sessions = new Set<http2.ServerHttp2Session>();
server.on('session', (s) => {
  sessions.add(s);
  s.on('close', () => sessions.delete(s));
});

describe('braiins gRPC transport: a peer that never completes HTTP/2', () => {
  test('a connection closed before the handshake: CONNECTION_CLOSED at once, and retries back off instead of hammering', async () => {
    let accepted = 0;
    const closer = net.createServer((c) => {
      accepted++;
      c.destroy();
    });
    await new Promise<void>((resolve) => closer.listen(0, '127.0.0.1', resolve));
    const { port } = closer.address() as AddressInfo;
    const g = new BraiinsGrpc({ host: '127.0.0.1', port, maxResponseBytes: MAX, label: `m2 (127.0.0.1:${port})` });
    try {
      const t0 = performance.now();
      await expectCode(g.call(ACTIONS, 'PauseMining', {}, { deadlineMs: 1000 }), 'CONNECTION_CLOSED', /m2 .*PauseMining: connection lost/);
      assert.ok(performance.now() - t0 < 500, 'fails when the connection closes, not at the deadline');
      // a burst of calls inside the backoff: they fail with the last reason, and few connections are tried
      const burst = await Promise.allSettled(Array.from({ length: 20 }, () => g.call(ACTIONS, 'PauseMining', {}, { deadlineMs: 200 })));
      assert.ok(burst.every((r) => r.status === 'rejected' && (r.reason as { code: string }).code === 'CONNECTION_CLOSED'));
      assert.ok(accepted <= 3, `${accepted} connections for 21 calls`);
      // once the backoff has passed, the next call tries again
      await new Promise((r) => setTimeout(r, 2100));
      const before = accepted;
      await expectCode(g.call(ACTIONS, 'PauseMining', {}, { deadlineMs: 1000 }), 'CONNECTION_CLOSED');
      assert.equal(accepted, before + 1);
    } finally {
      g.close();
      await new Promise((resolve) => closer.close(resolve));
    }
  });
});
