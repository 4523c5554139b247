/**
 * The cgminer-family client against raw `net` servers on 127.0.0.1:0 that
 * play the firmware's side byte by byte (no mocking of the client).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { CgminerClient, cgminerExchange, type CgminerEndpoint } from './client.js';
import { expectCode } from '../../../hil/testing/expect-code.js';

/** How a test server answers one connection: it gets the request bytes read so far and the socket. */
type Answer = (request: string, socket: net.Socket) => void;

interface RawServer {
  port: number;
  /** Every request, as the exact text received. */
  requests: string[];
  connections: number;
  close(): Promise<void>;
}

/** A server that waits until the request is complete JSON (or 200 ms of quiet), then calls `answer`. */
async function rawServer(answer: Answer, opts: { readRequest?: boolean } = {}): Promise<RawServer> {
  const sockets = new Set<net.Socket>();
  const state: RawServer = {
    port: 0,
    requests: [],
    connections: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = net.createServer((s) => {
    state.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    if (opts.readRequest === false) {
      answer('', s);
      return;
    }
    let buf = '';
    let done = false;
    s.on('data', (chunk: Buffer) => {
      if (done) return;
      buf += chunk.toString('utf8');
      try {
        JSON.parse(buf);
      } catch {
        return;
      }
      done = true;
      state.requests.push(buf);
      answer(buf, s);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const addr = server.address();
  assert.ok(addr && typeof addr === 'object');
  state.port = addr.port;
  return state;
}

function ep(port: number, over: Partial<CgminerEndpoint> = {}): CgminerEndpoint {
  return { host: '127.0.0.1', port, connectTimeoutMs: 2000, readTimeoutMs: 2000, ...over };
}

const ok = (code: number, msg: string, sections: Record<string, unknown> = {}) => ({
  STATUS: [{ STATUS: 'S', When: 1700000000, Code: code, Msg: msg, Description: 'test' }],
  ...sections,
  id: 1,
});
const errReply = (code: number, msg: string) => ({
  STATUS: [{ STATUS: 'E', When: 1700000000, Code: code, Msg: msg, Description: 'test' }],
  id: 1,
});
const withNul = (obj: unknown): Buffer => Buffer.concat([Buffer.from(JSON.stringify(obj)), Buffer.from([0])]);

const servers: RawServer[] = [];
async function serve(answer: Answer, opts?: { readRequest?: boolean }): Promise<RawServer> {
  const s = await rawServer(answer, opts);
  servers.push(s);
  return s;
}
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

describe('cgminerExchange framing', () => {
  test('request is the bare JSON object, no terminator; reply read to EOF with trailing NUL stripped', async () => {
    const srv = await serve((_req, s) => s.end(withNul(ok(11, 'Summary', { SUMMARY: [{ 'GHS 5s': 1 }] }))));
    const client = new CgminerClient(ep(srv.port));
    const reply = await client.command('summary');
    assert.equal(srv.requests[0], '{"command":"summary"}');
    assert.deepEqual(reply.SUMMARY, [{ 'GHS 5s': 1 }]);

    await client.raw('curtail', 'abc123,sleep');
    assert.equal(srv.requests[1], '{"command":"curtail","parameter":"abc123,sleep"}');

    const text = await cgminerExchange(ep(srv.port), '{"command":"summary"}');
    assert.ok(!text.includes('\0'), 'NUL stripped');
    assert.ok(text.endsWith('}'));
  });

  test('a reply split across many small chunks is reassembled', async () => {
    const body = withNul(ok(70, 'Stats', { STATS: [{ STATS: 0 }, { Elapsed: 3600, note: 'x'.repeat(3000) }] }));
    const srv = await serve((_req, s) => {
      s.setNoDelay(true);
      let i = 0;
      const step = (): void => {
        if (s.destroyed) return;
        if (i >= body.length) {
          s.end();
          return;
        }
        s.write(body.subarray(i, i + 7));
        i += 7;
        if (i % 700 === 0) setTimeout(step, 1);
        else step();
      };
      step();
    });
    const reply = await new CgminerClient(ep(srv.port)).command('stats');
    assert.deepEqual((reply.STATS as unknown[])[1], { Elapsed: 3600, note: 'x'.repeat(3000) });
  });

  test('malformed firmware JSON is repaired (glued objects in stats)', async () => {
    const srv = await serve((_req, s) =>
      s.end(Buffer.from('{"STATUS":[{"STATUS":"S","Code":70,"Msg":"Stats"}],"STATS":[{"STATS":0}{"Elapsed":5,}],"id":1}\0')),
    );
    const reply = await new CgminerClient(ep(srv.port)).command('stats');
    assert.deepEqual(reply.STATS, [{ STATS: 0 }, { Elapsed: 5 }]);
  });

  test('a reply over the size cap is refused with RESPONSE_TOO_LARGE and the socket is destroyed', async () => {
    let serverSocketClosed: Promise<unknown> | undefined;
    const srv = await serve((_req, s) => {
      serverSocketClosed = new Promise((resolve) => s.once('close', resolve)); // 'error' (ECONNRESET) may come first
      const chunk = Buffer.alloc(16 * 1024, 0x41);
      const pump = (): void => {
        // never ends on its own: only the client tearing the socket down stops it
        while (!s.destroyed && !s.writableEnded) {
          if (!s.write(chunk)) {
            s.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
    const err = await expectCode(
      cgminerExchange(ep(srv.port, { maxResponseBytes: 64 * 1024 }), '{"command":"stats"}'),
      'RESPONSE_TOO_LARGE',
      /65536 bytes/,
    );
    assert.equal(err.retriable, false);
    assert.ok(serverSocketClosed);
    await serverSocketClosed; // the client destroyed its end, so the server sees the close (no hang)
  });

  test('a silent peer (accepts, never answers) gives READ_TIMEOUT near the read deadline', async () => {
    const srv = await serve(() => {
      /* never answer, never close */
    });
    const t0 = Date.now();
    const err = await expectCode(
      new CgminerClient(ep(srv.port, { readTimeoutMs: 300 })).raw('summary'),
      'READ_TIMEOUT',
      /within 300 ms/,
    );
    const took = Date.now() - t0;
    assert.ok(took >= 250, `not early (${took} ms)`);
    assert.ok(took < 5000, `not hung (${took} ms)`);
    assert.equal(err.retriable, true);
    assert.equal(err.context.port, srv.port);
  });

  test('a peer that closes without replying gives CONNECTION_CLOSED', async () => {
    const srv = await serve((_req, s) => s.end());
    await expectCode(new CgminerClient(ep(srv.port)).raw('summary'), 'CONNECTION_CLOSED', /without a reply/);
    // a lone NUL is no reply either
    const srv2 = await serve((_req, s) => s.end(Buffer.from([0])));
    await expectCode(new CgminerClient(ep(srv2.port)).raw('summary'), 'CONNECTION_CLOSED');
  });

  test('a peer that resets mid-reply gives CONNECTION_CLOSED', async () => {
    const srv = await serve((_req, s) => {
      s.write('{"STATUS":[{"STATUS":"S"');
      setTimeout(() => s.resetAndDestroy(), 20);
    });
    await expectCode(new CgminerClient(ep(srv.port)).raw('summary'), 'CONNECTION_CLOSED');
  });

  test('a peer that resets right after accepting gives CONNECTION_CLOSED, not UNREACHABLE', async () => {
    // the reset may reach the client before it has seen 'connect'; it was still reached
    const srv = await serve((_req, s) => s.resetAndDestroy(), { readRequest: false });
    for (let i = 0; i < 20; i++) {
      await expectCode(new CgminerClient(ep(srv.port)).raw('summary'), 'CONNECTION_CLOSED');
    }
  });

  test('a truncated reply is MALFORMED_RESPONSE naming the truncation', async () => {
    const srv = await serve((_req, s) => s.end('{"STATUS":[{"STATUS":"S","Code":11}],"SUMMARY":[{"GHS 5s":11'));
    await expectCode(new CgminerClient(ep(srv.port)).raw('summary'), 'MALFORMED_RESPONSE', /truncated/);
  });

  test('a reply that is JSON but not an object is MALFORMED_RESPONSE', async () => {
    const srv = await serve((_req, s) => s.end('[1,2,3]\0'));
    await expectCode(new CgminerClient(ep(srv.port)).raw('summary'), 'MALFORMED_RESPONSE', /not a JSON object/);
  });

  test('a refused port gives CONNECT_REFUSED', async () => {
    // bind then close to get a port nobody listens on
    const probe = net.createServer();
    probe.listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const addr = probe.address();
    assert.ok(addr && typeof addr === 'object');
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const err = await expectCode(new CgminerClient(ep(addr.port)).raw('summary'), 'CONNECT_REFUSED', /refused/);
    assert.equal(err.retriable, true);
  });

  test('an aborted signal cancels a pending request with CANCELLED', async () => {
    const srv = await serve(() => {
      /* silent */
    });
    const ctl = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ctl.abort(), 100);
    await expectCode(
      new CgminerClient(ep(srv.port, { readTimeoutMs: 30_000 })).raw('summary', undefined, ctl.signal),
      'CANCELLED',
    );
    assert.ok(Date.now() - t0 < 10_000, 'cancelled long before the read deadline');
    // an already-aborted signal never opens a connection
    const before = srv.connections;
    await expectCode(new CgminerClient(ep(srv.port)).raw('summary', undefined, AbortSignal.abort()), 'CANCELLED');
    assert.equal(srv.connections, before);
  });
});

describe('STATUS checks', () => {
  test('STATUS E is DEVICE_ERROR with the device code and message', async () => {
    const srv = await serve((_req, s) => s.end(withNul(errReply(14, 'Invalid command'))));
    const client = new CgminerClient(ep(srv.port));
    const err = await expectCode(client.command('bogus'), 'DEVICE_ERROR', /error 14: Invalid command/);
    assert.equal(err.context.deviceCode, 14);
    assert.equal(err.retriable, false);
    // raw() returns the reply without judging it
    const reply = await client.raw('bogus');
    assert.ok(Array.isArray(reply.STATUS));
  });

  test('STATUS F (fatal) is DEVICE_ERROR too', async () => {
    const srv = await serve((_req, s) =>
      s.end(withNul({ STATUS: [{ STATUS: 'F', Code: 99, Msg: 'boom' }], id: 1 })),
    );
    await expectCode(new CgminerClient(ep(srv.port)).command('summary'), 'DEVICE_ERROR', /boom/);
  });

  test('code 45 is AUTH_FAILED', async () => {
    const srv = await serve((_req, s) => s.end(withNul(errReply(45, 'Access denied to \'ascset\' command'))));
    const err = await expectCode(new CgminerClient(ep(srv.port)).command('ascset'), 'AUTH_FAILED', /code 45/);
    assert.equal(err.retriable, false);
  });

  test('a reply without STATUS is MALFORMED_RESPONSE', async () => {
    const srv = await serve((_req, s) => s.end(withNul({ SUMMARY: [] })));
    await expectCode(new CgminerClient(ep(srv.port)).command('summary'), 'MALFORMED_RESPONSE', /no STATUS/);
  });

  test('a STATUS given as a single object (not an array) is accepted', async () => {
    const srv = await serve((_req, s) => s.end(withNul({ STATUS: { STATUS: 'S', Code: 11, Msg: 'ok' }, SUMMARY: [] })));
    const reply = await new CgminerClient(ep(srv.port)).command('summary');
    assert.deepEqual(reply.SUMMARY, []);
  });
});

describe('multi()', () => {
  const single = (cmd: string) => {
    switch (cmd) {
      case 'summary':
        return ok(11, 'Summary', { SUMMARY: [{ 'GHS 5s': 100 }] });
      case 'stats':
        return ok(70, 'Stats', { STATS: [{ STATS: 0 }, { Elapsed: 1 }] });
      default:
        return errReply(14, 'Invalid command');
    }
  };

  test('joins commands with + and splits the keyed reply', async () => {
    const srv = await serve((req, s) => {
      const { command } = JSON.parse(req) as { command: string };
      const parts = command.split('+');
      const body = parts.length > 1 ? Object.fromEntries(parts.map((c) => [c, [single(c)]])) : single(command);
      s.end(withNul(body));
    });
    const client = new CgminerClient(ep(srv.port));
    const out = await client.multi(['summary', 'stats']);
    assert.deepEqual(srv.requests, ['{"command":"summary+stats"}']);
    assert.deepEqual(out.summary?.SUMMARY, [{ 'GHS 5s': 100 }]);
    assert.deepEqual(out.stats?.STATS, [{ STATS: 0 }, { Elapsed: 1 }]);
    // a single command is sent as itself
    await client.multi(['summary']);
    assert.equal(srv.requests[1], '{"command":"summary"}');
  });

  test('an error STATUS inside a joined reply throws for that command', async () => {
    const srv = await serve((req, s) => {
      const { command } = JSON.parse(req) as { command: string };
      s.end(withNul(Object.fromEntries(command.split('+').map((c) => [c, [single(c)]]))));
    });
    await expectCode(new CgminerClient(ep(srv.port)).multi(['summary', 'nope']), 'DEVICE_ERROR', /nope/);
  });

  test('falls back to parallel single commands when joining is rejected, and remembers it', async () => {
    const srv = await serve((req, s) => {
      const { command } = JSON.parse(req) as { command: string };
      s.end(withNul(command.includes('+') ? errReply(14, 'Invalid command') : single(command)));
    });
    const client = new CgminerClient(ep(srv.port));
    const out = await client.multi(['summary', 'stats']);
    assert.deepEqual(out.summary?.SUMMARY, [{ 'GHS 5s': 100 }]);
    assert.deepEqual(out.stats?.STATS, [{ STATS: 0 }, { Elapsed: 1 }]);
    assert.equal(srv.requests[0], '{"command":"summary+stats"}');
    assert.deepEqual(srv.requests.slice(1).sort(), ['{"command":"stats"}', '{"command":"summary"}']);

    const n = srv.requests.length;
    await client.multi(['summary', 'stats']);
    const second = srv.requests.slice(n);
    assert.equal(second.length, 2, 'no joined attempt the second time');
    assert.ok(second.every((r) => !r.includes('+')));
  });

  test('a transport failure of the joined request is not taken as "joining unsupported"', async () => {
    let silent = true;
    const srv = await serve((req, s) => {
      if (silent) return;
      const { command } = JSON.parse(req) as { command: string };
      s.end(withNul(Object.fromEntries(command.split('+').map((c) => [c, [single(c)]]))));
    });
    const client = new CgminerClient(ep(srv.port, { readTimeoutMs: 200 }));
    await expectCode(client.multi(['summary', 'stats']), 'READ_TIMEOUT');
    silent = false;
    await client.multi(['summary', 'stats']);
    assert.equal(srv.requests.at(-1), '{"command":"summary+stats"}');
  });
});

describe('connect timeout', () => {
  /**
   * A peer that never completes the TCP handshake: python binds 127.0.0.1:0
   * with listen(0) and never accepts; we fill its accept queue so the kernel
   * drops further SYNs.
   */
  test('a listener whose accept queue is full gives CONNECT_TIMEOUT', async (t) => {
    let py: ChildProcess;
    try {
      py = spawn(
        'python3',
        [
          '-c',
          [
            'import socket, sys, time',
            's = socket.socket(socket.AF_INET, socket.SOCK_STREAM)',
            "s.bind(('127.0.0.1', 0))",
            's.listen(0)',
            'print(s.getsockname()[1], flush=True)',
            'sys.stdin.read()',
          ].join('\n'),
        ],
        { stdio: ['pipe', 'pipe', 'inherit'] },
      );
    } catch {
      t.skip('python3 not available');
      return;
    }
    const fillers: net.Socket[] = [];
    try {
      const port = await new Promise<number>((resolve, reject) => {
        py.once('error', reject);
        py.stdout?.once('data', (d: Buffer) => resolve(Number.parseInt(d.toString().trim(), 10)));
        setTimeout(() => reject(new Error('python3 did not print its port')), 10_000).unref();
      }).catch((err: unknown) => {
        t.skip(`python3 unusable: ${String(err)}`);
        return undefined;
      });
      if (port === undefined) return;

      // Fill the accept queue (Linux keeps backlog+1 = 1 established connection for listen(0)).
      for (let i = 0; i < 3; i++) {
        const f = net.createConnection({ host: '127.0.0.1', port });
        f.on('error', () => undefined);
        fillers.push(f);
      }
      await once(fillers[0]!, 'connect');
      await new Promise((r) => setTimeout(r, 100));

      const t0 = Date.now();
      const err = await expectCode(
        new CgminerClient(ep(port, { connectTimeoutMs: 300, readTimeoutMs: 300 })).raw('summary'),
        'CONNECT_TIMEOUT',
        /no TCP connection within 300 ms/,
      );
      const took = Date.now() - t0;
      assert.ok(took >= 250 && took < 5000, `took ${took} ms`);
      assert.equal(err.retriable, true);
    } finally {
      for (const f of fillers) f.destroy();
      py.stdin?.end();
      py.kill();
    }
  });
});
