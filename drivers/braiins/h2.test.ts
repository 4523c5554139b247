/**
 * Prepared calls (h2.ts) against a plain node:http2 server that answers
 * each request as a test says, including the answers a gRPC server never
 * gives: each case is also put to the plain grpc-js call on the same server,
 * and both must fail with the same code.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
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

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  grpc = new BraiinsGrpc({ host: '127.0.0.1', port, maxResponseBytes: MAX, label: `m1 (127.0.0.1:${port})` });
});
after(async () => {
  grpc.close();
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
  // a dropped session is reopened no sooner than 2 s after the last open
  for (let i = 0; i < 400; i++) {
    const s = grpc.prepared.session();
    if (s) return s;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail('the prepared-calls session never came up');
}

async function prepared(deadlineMs = 1000, signal?: AbortSignal): Promise<unknown> {
  const call = grpc.prepared.prepare(ACTIONS, 'PauseMining', {}, 'tok-1', grpc.where(ACTIONS, 'PauseMining'));
  const sent = grpc.prepared.send(await ready(), call);
  assert.ok(sent);
  return sent.result(deadlineMs, signal);
}

const plain = (deadlineMs = 1000) => grpc.call(ACTIONS, 'PauseMining', {}, { deadlineMs, token: 'tok-1' });

describe('braiins prepared calls (raw HTTP/2)', () => {
  test('the request is the gRPC request grpc-js sends: path, content-type, te, token, length-prefixed message', async () => {
    answer = (s) => {
      s.respond(GRPC_OK, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
      s.end(PAUSED);
    };
    seen.length = 0;
    assert.deepEqual(await prepared(), { already_paused: true });
    assert.deepEqual((await plain()).reply, { already_paused: true });
    const [ours, theirs] = seen;
    for (const h of ['method', 'path', 'scheme'].map((k) => `:${k}`).concat(['content-type', 'te', 'authorization'])) {
      assert.equal(ours?.[h], theirs?.[h], h);
    }
    assert.equal(ours?.[':path'], '/braiins.bos.v1.ActionsService/PauseMining');
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
    test(`${c.name} -> ${c.code}, as the plain call`, async () => {
      answer = c.answer;
      const ours = await expectCode(prepared(), c.code, c.message);
      const theirs = await expectCode(plain(), c.code, c.message);
      assert.match(ours.message, /^m1 \(127\.0\.0\.1:\d+\) ActionsService\/PauseMining: /);
      assert.equal(ours.context.grpcStatus, theirs.context.grpcStatus);
    });
  }

  test('no answer: READ_TIMEOUT at the deadline counted from the send, and the session is dropped', async () => {
    answer = () => undefined;
    const s = await ready();
    const t0 = performance.now();
    await expectCode(prepared(300), 'READ_TIMEOUT', /connected but no reply within 300 ms/);
    assert.ok(performance.now() - t0 < 600);
    assert.equal(s.destroyed, true);
    assert.equal(grpc.prepared.session(), undefined);
  });

  test('an abort resets the stream: CANCELLED, and the session stays', async () => {
    answer = () => undefined;
    const s = await ready();
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(), 50);
    await expectCode(prepared(5000, ctl.signal), 'CANCELLED', /PauseMining: cancelled/);
    assert.equal(s.destroyed, false);
    assert.equal(grpc.prepared.session(), s);
  });

  test('a session closed by the peer is not sent on (send -> undefined) and is reopened on demand', async () => {
    const s = await ready();
    const call = grpc.prepared.prepare(ACTIONS, 'PauseMining', {}, 'tok-1', 'x');
    const closed = new Promise((resolve) => s.once('close', resolve));
    for (const sess of sessions) sess.destroy();
    await closed;
    assert.equal(grpc.prepared.send(s, call), undefined);
    const again = await ready();
    assert.notEqual(again, s);
  });
});

const sessions = new Set<http2.ServerHttp2Session>();
server.on('session', (s) => {
  sessions.add(s);
  s.on('close', () => sessions.delete(s));
});
