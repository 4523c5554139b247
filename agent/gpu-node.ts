/**
 * `rackpilot gpu-node`: runs on a GPU server and exposes exactly the
 * GpuBackend operations (list, read, setPowerLimit, set/resetLockedClocks)
 * to the rack agent (drivers/gpu/node-client.ts). Protocol and signing:
 * drivers/gpu/node-protocol.ts.
 *
 * Bounded: request bodies (maxBodyBytes, 413), concurrent requests
 * (maxConcurrent, 503 BUSY), a deadline per request (504), a nonce cache
 * (maxNonces, oldest evicted; nonces older than the allowed skew are dropped
 * anyway since their timestamp is refused), open connections
 * (maxConnections), idle connections (closed after idleTimeoutMs), slow
 * senders (the whole request within requestTimeoutMs, checked every second),
 * kept-alive connections (GPU_NODE_KEEPALIVE_MS, longer than the client's
 * idle socket timeout). Authenticated: HMAC-SHA256 per
 * request, timestamps more than maxSkewMs away refused, nonces seen before
 * refused, constant-time compare; 401 with the reason otherwise.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import type { GpuBackend } from '../drivers/gpu/backend.js';
import {
  GPU_NODE_KEEPALIVE_MS,
  GPU_NODE_PATHS,
  HEADER_NONCE,
  HEADER_SIG,
  HEADER_TS,
  macEquals,
  requestMac,
  requestSchemas,
  responseMac,
  type GpuNodeOp,
} from '../drivers/gpu/node-protocol.js';
import { withDeadline } from '../drivers/lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../drivers/lib/errors.js';

export interface GpuNodeOptions {
  backend: GpuBackend;
  /** Shared secret (at least 16 characters); never logged. */
  key: string;
  host?: string;
  /** 0 = an ephemeral port (tests). */
  port?: number;
  logger?: Logger;
  maxBodyBytes?: number;
  maxConcurrent?: number;
  requestDeadlineMs?: number;
  maxSkewMs?: number;
  maxNonces?: number;
  /** Open connections at most (more are refused at once; default 64). */
  maxConnections?: number;
  /** A connection with no traffic for this long is closed (ms, default 10 s). */
  idleTimeoutMs?: number;
  /** The whole request (headers and body) must arrive within this (ms, default 5 s). */
  requestTimeoutMs?: number;
  now?: () => number;
}

export interface GpuNode {
  host: string;
  port: number;
  close(): Promise<void>;
}

const OPS = new Map<string, GpuNodeOp>(Object.entries(GPU_NODE_PATHS).map(([op, path]) => [path, op as GpuNodeOp]));

const HTTP_STATUS: Partial<Record<string, number>> = {
  AUTH_FAILED: 401,
  CONFIG_INVALID: 400,
  BUSY: 503,
  DEADLINE_EXCEEDED: 504,
  RESPONSE_TOO_LARGE: 413,
};

/** Seen nonces in insertion order, bounded. */
class NonceCache {
  private readonly seen = new Map<string, number>();
  constructor(private readonly max: number) {}
  /** False when the nonce was seen already. */
  add(nonce: string, ts: number, oldest: number): boolean {
    if (this.seen.has(nonce)) return false;
    for (const [n, t] of this.seen) {
      if (this.seen.size < this.max && t >= oldest) break;
      this.seen.delete(n);
    }
    this.seen.set(nonce, ts);
    return true;
  }
}

async function dispatch(backend: GpuBackend, op: GpuNodeOp, body: unknown): Promise<unknown> {
  switch (op) {
    case 'list':
      requestSchemas.list.parse(body);
      return backend.list();
    case 'read':
      return backend.read(requestSchemas.read.parse(body).uuid);
    case 'setPowerLimit': {
      const b = requestSchemas.setPowerLimit.parse(body);
      await backend.setPowerLimit(b.uuid, b.mw);
      return null;
    }
    case 'setLockedClocks': {
      const b = requestSchemas.setLockedClocks.parse(body);
      await backend.setLockedClocks(b.uuid, b.minMhz, b.maxMhz);
      return null;
    }
    case 'resetLockedClocks':
      await backend.resetLockedClocks(requestSchemas.resetLockedClocks.parse(body).uuid);
      return null;
    default: {
      const never: never = op;
      throw new RackpilotError('INTERNAL', `unknown op ${String(never)}`);
    }
  }
}

export async function startGpuNode(opts: GpuNodeOptions): Promise<GpuNode> {
  if (opts.key.length < 16) throw new RackpilotError('CONFIG_INVALID', 'gpu-node: the shared key must have at least 16 characters');
  const log = opts.logger ?? pino({ level: 'silent' });
  const key = opts.key;
  const maxBody = opts.maxBodyBytes ?? 16 * 1024;
  const maxConcurrent = opts.maxConcurrent ?? 8;
  const deadlineMs = opts.requestDeadlineMs ?? 5_000;
  const maxSkew = opts.maxSkewMs ?? 30_000;
  const now = opts.now ?? Date.now;
  const nonces = new NonceCache(opts.maxNonces ?? 10_000);
  let active = 0;

  const idleMs = opts.idleTimeoutMs ?? 10_000;
  const requestMs = opts.requestTimeoutMs ?? 5_000;
  // checked every second (Node's default is 30 s), so slow senders are cut near requestTimeout
  const server = http.createServer({ connectionsCheckingInterval: Math.min(1_000, requestMs), keepAliveTimeout: Math.min(GPU_NODE_KEEPALIVE_MS, idleMs) }, (req, res) => {
    const nonceHdr = req.headers[HEADER_NONCE];
    const nonce = typeof nonceHdr === 'string' && /^[0-9a-f]{32}$/.test(nonceHdr) ? nonceHdr : '';
    const answer = (status: number, payload: object): void => {
      const body = JSON.stringify(payload);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), [HEADER_SIG]: responseMac(key, nonce, status, body) });
      res.end(body);
    };
    const fail = (err: RackpilotError, status = HTTP_STATUS[err.code] ?? 500): void => answer(status, { ok: false, error: err.toJSON() });
    const op = req.method === 'POST' && req.url ? OPS.get(req.url) : undefined;
    if (!op || !req.url) {
      fail(new RackpilotError('UNSUPPORTED', `no such gpu-node call: ${req.method ?? '?'} ${(req.url ?? '').slice(0, 64)}`), 404);
      req.resume();
      return;
    }
    const path = req.url;
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > maxBody) {
      fail(new RackpilotError('RESPONSE_TOO_LARGE', `request body of ${declared} bytes exceeds ${maxBody}`));
      req.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBody) {
        tooBig = true;
        fail(new RackpilotError('RESPONSE_TOO_LARGE', `request body exceeds ${maxBody} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (tooBig) return;
      const body = Buffer.concat(chunks).toString('utf8');
      const tsHdr = req.headers[HEADER_TS];
      const sig = req.headers[HEADER_SIG];
      const ts = typeof tsHdr === 'string' && /^\d{1,16}$/.test(tsHdr) ? Number(tsHdr) : NaN;
      const auth = (reason: string): void => {
        log.warn({ remote: req.socket.remoteAddress, path, reason }, 'gpu-node request refused');
        fail(new RackpilotError('AUTH_FAILED', reason));
      };
      if (!nonce || typeof sig !== 'string' || typeof tsHdr !== 'string' || !Number.isFinite(ts)) return auth('missing or malformed authentication headers');
      if (!macEquals(sig, requestMac(key, path, tsHdr, nonce, body))) return auth('bad signature (wrong key?)');
      const t = now();
      if (Math.abs(t - ts) > maxSkew) return auth(`stale timestamp (${Math.round((t - ts) / 1000)} s off; allowed ${maxSkew / 1000} s)`);
      if (!nonces.add(nonce, ts, t - maxSkew)) return auth('replayed request (nonce seen before)');
      if (active >= maxConcurrent) return fail(new RackpilotError('BUSY', `gpu-node busy: ${maxConcurrent} requests in progress; retry`));
      let parsed: unknown;
      try {
        parsed = JSON.parse(body || '{}');
      } catch {
        return fail(new RackpilotError('CONFIG_INVALID', 'request body is not JSON'));
      }
      active++;
      withDeadline(`gpu-node ${op}`, deadlineMs, () => dispatch(opts.backend, op, parsed))
        .then(
          (result) => answer(200, { ok: true, result }),
          (err: unknown) => {
            const e =
              err instanceof Error && err.name === 'ZodError'
                ? new RackpilotError('CONFIG_INVALID', `bad ${op} request: ${err.message.slice(0, 200)}`)
                : toRackpilotError(err);
            log.debug({ op, err: e.toJSON() }, 'gpu-node call failed');
            fail(e);
          },
        )
        .finally(() => {
          active--;
        });
    });
  });
  // bounded: an unauthenticated peer cannot hold connections (file descriptors) open
  server.maxConnections = opts.maxConnections ?? 64;
  server.headersTimeout = requestMs;
  server.requestTimeout = requestMs;
  // above the client's idle socket timeout (GPU_NODE_CLIENT_IDLE_MS), so the client closes first
  server.keepAliveTimeout = Math.min(GPU_NODE_KEEPALIVE_MS, idleMs);
  // a connection with no traffic at all (not even a request started) is closed; the request deadline fits inside
  server.timeout = Math.max(idleMs, deadlineMs + 1_000);
  server.on('timeout', (socket: import('node:net').Socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 9400, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  log.info({ host: addr.address, port: addr.port }, 'gpu-node listening');
  return {
    host: addr.address,
    port: addr.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
