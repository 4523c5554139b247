/**
 * The cgminer TCP client must not leak sockets: the process's open file
 * descriptors (entries of /proc/self/fd) stay level across 10 000 failed
 * calls mixing refused connections, garbage replies, resets and silent
 * peers cut off by a short deadline. Linux only (skipped elsewhere).
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import net from 'node:net';
import { test } from 'node:test';
import { CgminerServer } from '../../../hil/sim/cgminer-server.js';
import { RackpilotError } from '../errors.js';
import { CgminerClient } from './client.js';

const fdCount = (): number => readdirSync('/proc/self/fd').length;

/** A port that refuses: bound then closed (nothing listens there afterwards). */
async function refusedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const a = s.address();
  const port = typeof a === 'object' && a ? a.port : 0;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

test('file descriptors stay level across 10 000 failed calls', { skip: !existsSync('/proc/self/fd'), timeout: 180_000 }, async () => {
  const handler = () => ({ STATUS: [{ STATUS: 'S', Code: 11 }], SUMMARY: [{}] });
  const garbage = new CgminerServer({ handler });
  garbage.fault = { kind: 'garbage' };
  const reset = new CgminerServer({ handler });
  reset.fault = { kind: 'reset' };
  const silent = new CgminerServer({ handler });
  silent.fault = { kind: 'silent' };
  const ports = { garbage: (await garbage.listen()).port, reset: (await reset.listen()).port, silent: (await silent.listen()).port, refused: await refusedPort() };
  const client = (port: number, readTimeoutMs = 1000) => new CgminerClient({ host: '127.0.0.1', port, connectTimeoutMs: 1000, readTimeoutMs });
  const clients = [client(ports.refused), client(ports.garbage), client(ports.reset), client(ports.silent, 15)];
  const expected = ['CONNECT_REFUSED', 'MALFORMED_RESPONSE', 'CONNECTION_CLOSED', 'READ_TIMEOUT'];

  const run = async (total: number): Promise<Map<string, number>> => {
    const codes = new Map<string, number>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < total) {
        const i = next++;
        const c = clients[i % 4] as CgminerClient;
        try {
          await c.raw('summary');
          codes.set('ok', (codes.get('ok') ?? 0) + 1);
        } catch (err) {
          const code = err instanceof RackpilotError ? err.code : 'non-RackpilotError';
          codes.set(code, (codes.get(code) ?? 0) + 1);
        }
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    return codes;
  };

  /** Waits until server-side sockets of the last calls have closed too. */
  const settle = async (target: number): Promise<number> => {
    let n = fdCount();
    for (let i = 0; i < 100 && n > target; i++) {
      await new Promise((r) => setTimeout(r, 50));
      n = fdCount();
    }
    return n;
  };

  try {
    await run(200); // warm-up: lazily opened handles (libuv, DNS, timers) are not leaks
    const before = await settle(0);
    const codes = await run(10_000);
    const after = await settle(before);
    const failed = [...codes.entries()].filter(([k]) => k !== 'ok').reduce((s, [, v]) => s + v, 0);
    assert.equal(failed, 10_000, `every call failed: ${JSON.stringify([...codes])}`);
    for (const code of expected) assert.ok((codes.get(code) ?? 0) > 2000, `${code}: ${JSON.stringify([...codes])}`);
    assert.ok(after <= before + 8, `open fds grew from ${before} to ${after}`);
  } finally {
    await Promise.all([garbage.close(), reset.close(), silent.close()]);
  }
});
