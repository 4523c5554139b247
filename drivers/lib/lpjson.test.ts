/**
 * lpjson client against raw TCP peers on 127.0.0.1 that misbehave in every
 * way the framing allows. Deadlines are generous; no timing assertions beyond
 * "returned before a much later bound".
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readdirSync } from 'node:fs';
import { encodeFrame, FrameReader, lpjsonExchange, type LpjsonEndpoint } from './lpjson.js';
import { expectCode } from '../../hil/testing/expect-code.js';

type Behave = (s: net.Socket, request: Buffer) => void;

const servers: net.Server[] = [];
after(async () => {
  for (const s of servers) await new Promise<void>((r) => s.close(() => r()));
});

/** A peer that waits for one full request frame, then behaves as told. */
async function peer(behave: Behave): Promise<LpjsonEndpoint> {
  const server = net.createServer((s) => {
    s.on('error', () => s.destroy());
    const reader = new FrameReader(1 << 20, 'test');
    s.on('data', (c: Buffer) => {
      const body = reader.push(c);
      if (body) behave(s, body);
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address() as net.AddressInfo;
  return { host: '127.0.0.1', port: a.port, connectTimeoutMs: 1000, readTimeoutMs: 1000, maxFrameBytes: 64 * 1024 };
}

const header = (n: number): Buffer => {
  const h = Buffer.alloc(4);
  h.writeUInt32LE(n, 0);
  return h;
};

describe('lpjson framing', () => {
  test('a request frame is length + JSON, and the reply frame is parsed', async () => {
    let seen: unknown;
    const ep = await peer((s, body) => {
      seen = JSON.parse(body.toString('utf8'));
      s.end(encodeFrame({ code: 0, msg: 'ok', echo: seen }));
    });
    const reply = await lpjsonExchange(ep, { cmd: 'get.device.info', param: 'salt' });
    assert.deepEqual(seen, { cmd: 'get.device.info', param: 'salt' });
    assert.deepEqual(reply, { code: 0, msg: 'ok', echo: seen });
    const f = encodeFrame({ a: 'é' });
    assert.equal(f.readUInt32LE(0), Buffer.byteLength('{"a":"é"}'));
  });

  test('a reply dribbled one byte at a time is reassembled; bytes after the frame are ignored', async () => {
    const ep = await peer((s) => {
      const bytes = Buffer.concat([encodeFrame({ code: 0, msg: { salt: 'abc' } }), Buffer.from('trailing junk')]);
      let i = 0;
      const t = setInterval(() => {
        if (s.destroyed || i >= bytes.length) {
          clearInterval(t);
          if (!s.destroyed) s.end();
          return;
        }
        s.write(bytes.subarray(i, i + 1));
        i++;
      }, 1);
    });
    assert.deepEqual(await lpjsonExchange({ ...ep, readTimeoutMs: 5000 }, { cmd: 'x' }), { code: 0, msg: { salt: 'abc' } });
  });

  test('a header announcing more than the cap is refused before any body is buffered', async () => {
    let written = 0;
    const ep = await peer((s) => {
      s.write(header(500 * 1024 * 1024));
      const chunk = Buffer.alloc(64 * 1024, 0x41);
      const pump = (): void => {
        while (!s.destroyed && written < 50 * 1024 * 1024) {
          written += chunk.length;
          if (!s.write(chunk)) {
            s.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
    const err = await expectCode(lpjsonExchange(ep, { cmd: 'x' }), 'RESPONSE_TOO_LARGE', /announces 524288000 bytes, over the 65536-byte cap/);
    assert.equal(err.retriable, false);
  });

  test('a body cut short is reported as truncated', async () => {
    const ep = await peer((s) => {
      const f = encodeFrame({ code: 0, msg: 'a fairly long message body here' });
      s.end(f.subarray(0, 12));
    });
    await expectCode(lpjsonExchange(ep, { cmd: 'x' }), 'MALFORMED_RESPONSE', /truncated \(8 of \d+ body bytes/);
  });

  test('a header cut short is reported as truncated', async () => {
    const ep = await peer((s) => s.end(Buffer.from([5, 0])));
    await expectCode(lpjsonExchange(ep, { cmd: 'x' }), 'MALFORMED_RESPONSE', /truncated \(2 of 4 header bytes/);
  });

  test('unframed JSON (a garbage length) is named as such', async () => {
    const ep = await peer((s) => s.end('{"STATUS":"S","Code":131}'));
    await expectCode(lpjsonExchange(ep, { cmd: 'x' }), 'MALFORMED_RESPONSE', /not length-prefixed/);
  });

  test('random binary garbage with a huge length is refused by the cap', async () => {
    const ep = await peer((s) => s.end(Buffer.from([0xff, 0xfe, 0x07, 0x9a, 1, 2, 3])));
    await expectCode(lpjsonExchange(ep, { cmd: 'x' }), 'RESPONSE_TOO_LARGE');
  });

  test('a zero length and a non-JSON body are malformed', async () => {
    const zero = await peer((s) => s.end(header(0)));
    await expectCode(lpjsonExchange(zero, { cmd: 'x' }), 'MALFORMED_RESPONSE', /length 0/);
    const bad = await peer((s) => s.end(Buffer.concat([header(9), Buffer.from('not json!')])));
    await expectCode(lpjsonExchange(bad, { cmd: 'x' }), 'MALFORMED_RESPONSE', /not JSON/);
  });

  test('a peer that accepts and never answers hits the read deadline', async () => {
    const ep = await peer(() => undefined);
    const t0 = Date.now();
    await expectCode(lpjsonExchange({ ...ep, readTimeoutMs: 200 }, { cmd: 'x' }), 'READ_TIMEOUT', /no complete length header/);
    assert.ok(Date.now() - t0 < 5000);
  });

  test('a reset mid-reply is CONNECTION_CLOSED; a closed port is CONNECT_REFUSED', async () => {
    const ep = await peer((s) => {
      s.write(header(100));
      s.write('{"code":0,');
      setTimeout(() => s.resetAndDestroy(), 20);
    });
    await expectCode(lpjsonExchange(ep, { cmd: 'x' }), 'CONNECTION_CLOSED');
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise<void>((r) => server.close(() => r()));
    await expectCode(lpjsonExchange({ ...ep, port }, { cmd: 'x' }), 'CONNECT_REFUSED');
  });

  test('an aborted signal cancels the exchange', async () => {
    const ep = await peer(() => undefined);
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(), 50);
    await expectCode(lpjsonExchange({ ...ep, readTimeoutMs: 10_000 }, { cmd: 'x' }, ctl.signal), 'CANCELLED');
  });
});

describe('lpjson resources', () => {
  const fdCount = (): number => readdirSync('/proc/self/fd').length;

  test('10 000 failed calls leave the file-descriptor count where it was', { timeout: 180_000 }, async () => {
    let n = 0;
    const ep = await peer((s) => {
      // rotate through the failure modes: garbage length, truncated body, reset, bad JSON
      switch (n++ % 4) {
        case 0:
          s.end(Buffer.from([0xff, 0xff, 0xff, 0x7f]));
          return;
        case 1:
          s.end(Buffer.concat([header(50), Buffer.from('{"co')]));
          return;
        case 2:
          s.resetAndDestroy();
          return;
        default:
          s.end(Buffer.concat([header(3), Buffer.from('{{{')]));
      }
    });
    // warm up so lazily opened handles are not counted as a leak
    await lpjsonExchange(ep, { cmd: 'x' }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 50));
    const before = fdCount();
    const total = 10_000;
    const concurrency = 32;
    let failures = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < total) {
        next++;
        try {
          await lpjsonExchange({ ...ep, readTimeoutMs: 5000 }, { cmd: 'x' });
        } catch {
          failures++;
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    assert.equal(failures, total, 'every call failed');
    // sockets closed by the peer may linger a moment in the server's accept path
    let after = fdCount();
    for (let i = 0; i < 50 && after > before + 2; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = fdCount();
    }
    assert.ok(after <= before + 2, `fd count ${before} -> ${after}`);
  });
});
