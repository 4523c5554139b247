/**
 * HTTP client shared by the drivers of HTTP-speaking firmwares: keep-alive
 * connections (no handshake on the curtail hot path), a connect deadline, an
 * overall deadline per request, a cap on response size, and transport
 * failures mapped onto RackpilotError codes. Status codes are returned, not
 * thrown: auth handling differs per firmware. Optionally (`keepWarm`) a
 * pooled connection is kept open against the device's idle timeout, so an
 * action after minutes of quiet still finds one (http-keep-warm.ts).
 */
import http from 'node:http';
import type net from 'node:net';
import { RackpilotError } from './errors.js';
import { KeepWarm, type KeepWarmOptions, type KeepWarmStats } from './http-keep-warm.js';
import type { DeviceEndpointConfig } from './transports.js';

export interface HttpEndpoint {
  host: string;
  port: number;
  connectTimeoutMs: number;
  /** Overall deadline of one request: connect, send, and the whole answer. */
  readTimeoutMs: number;
  maxResponseBytes?: number;
  /** Idle keep-alive sockets kept per device (default 2). */
  maxSockets?: number;
  /** An idle kept-alive socket is closed after this many ms (default 60 s); keep it below the server's keep-alive timeout. */
  idleSocketMs?: number;
  /** Keep a pooled connection warm (off unless set; see http-keep-warm.ts for what it costs the device). */
  keepWarm?: KeepWarmOptions;
}

export interface HttpRequest {
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  headers?: Record<string, string>;
  /** An object is sent as JSON. */
  body?: string | Buffer | object;
  /** Overrides the endpoint's readTimeoutMs (e.g. a firmware known to answer slowly). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text(): string;
  /** Parses the body as JSON; MALFORMED_RESPONSE when it is not. */
  json(): unknown;
}

/** A device block's HTTP endpoint: its host, `port` (or another port of it, e.g. `webPort`), timeouts and reply cap. */
export function httpEndpoint(cfg: DeviceEndpointConfig, port = cfg.port): HttpEndpoint {
  return { host: cfg.host, port, connectTimeoutMs: cfg.timeouts.connectMs, readTimeoutMs: cfg.timeouts.readMs, maxResponseBytes: cfg.maxResponseBytes };
}

export const DEFAULT_MAX_HTTP_BYTES = 1024 * 1024;
const DEFAULT_IDLE_SOCKET_MS = 60_000;

export interface HttpClientStats {
  /** TCP connections opened. */
  connects: number;
  /** Requests sent again because a kept-alive connection turned out closed. */
  staleRetries: number;
  keepWarm?: KeepWarmStats;
}

/** Internal: the request died on a reused keep-alive socket before any answer; sent again. */
class StaleSocketError extends RackpilotError {
  constructor(where: string) {
    super('CONNECTION_CLOSED', `${where}: the kept-alive connection was closed by the device; retry`);
  }
}

export class HttpClient {
  private readonly agent: http.Agent;
  private readonly warm: KeepWarm | undefined;
  private connects = 0;
  private staleRetries = 0;

  constructor(private readonly ep: HttpEndpoint) {
    const idleMs = ep.idleSocketMs ?? DEFAULT_IDLE_SOCKET_MS;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: ep.maxSockets ?? 2, maxFreeSockets: ep.maxSockets ?? 2, timeout: idleMs });
    if (ep.keepWarm) {
      const ping = ep.keepWarm.ping ?? ((signal: AbortSignal) => this.request({ path: '/', signal }));
      const warm = new KeepWarm(ping, ep.connectTimeoutMs + ep.readTimeoutMs, idleMs, ep.keepWarm);
      this.warm = warm;
      // registered after the agent's own 'free' listener: the socket is pooled (or destroyed) by now
      this.agent.on('free', (s: net.Socket) => warm.pooled(s));
    }
  }

  get stats(): HttpClientStats {
    return { connects: this.connects, staleRetries: this.staleRetries, ...(this.warm ? { keepWarm: this.warm.stats } : {}) };
  }

  get where(): string {
    return `${this.ep.host}:${this.ep.port}`;
  }

  /** Closes kept-alive sockets and stops keeping one warm (for good). */
  close(): void {
    this.warm?.close();
    this.agent.destroy();
  }

  /**
   * Sends one request. A request that fails on a reused keep-alive socket
   * before any answer arrived (the device closed the idle connection as we
   * wrote: ECONNRESET/EPIPE) is sent again; it is the known keep-alive race,
   * not a device fault. Each such failure uses up one dead pooled socket, so
   * after at most maxSockets of them the request goes over a new connection.
   * Requests the firmwares get here (start/stop/sleep/set target) are
   * idempotent.
   */
  async request(req: HttpRequest): Promise<HttpResponse> {
    this.warm?.begin();
    let ok = false;
    try {
      for (let stale = 0; ; stale++) {
        try {
          const res = await this.once(req);
          ok = true;
          return res;
        } catch (err) {
          if (!(err instanceof StaleSocketError) || stale >= (this.ep.maxSockets ?? 2)) throw err;
          this.staleRetries++;
        }
      }
    } finally {
      this.warm?.end(ok);
    }
  }

  private once(req: HttpRequest): Promise<HttpResponse> {
    const ep = this.ep;
    const where = `${req.method ?? 'GET'} http://${this.where}${req.path}`;
    const max = ep.maxResponseBytes ?? DEFAULT_MAX_HTTP_BYTES;
    const timeoutMs = req.timeoutMs ?? ep.readTimeoutMs;
    let body: Buffer | undefined;
    const headers: Record<string, string> = { ...req.headers };
    if (req.body !== undefined) {
      if (Buffer.isBuffer(req.body)) body = req.body;
      else if (typeof req.body === 'string') body = Buffer.from(req.body);
      else {
        body = Buffer.from(JSON.stringify(req.body));
        headers['content-type'] ??= 'application/json';
      }
      headers['content-length'] = String(body.length);
    }
    return new Promise<HttpResponse>((resolve, reject) => {
      if (req.signal?.aborted) {
        reject(new RackpilotError('CANCELLED', `${where}: cancelled`));
        return;
      }
      let settled = false;
      let connected = false;
      let connectTimer: NodeJS.Timeout | undefined;
      const finish = (err: RackpilotError | null, res?: HttpResponse): void => {
        if (settled) return;
        settled = true;
        clearTimeout(connectTimer);
        clearTimeout(overall);
        req.signal?.removeEventListener('abort', onAbort);
        if (err) {
          r.destroy();
          reject(err);
        } else resolve(res as HttpResponse);
      };
      const r = http.request({ host: ep.host, port: ep.port, method: req.method ?? 'GET', path: req.path, headers, agent: this.agent });
      const onAbort = (): void => finish(new RackpilotError('CANCELLED', `${where}: cancelled`));
      req.signal?.addEventListener('abort', onAbort, { once: true });
      const overall = setTimeout(() => {
        finish(
          connected
            ? new RackpilotError('READ_TIMEOUT', `${where}: no complete answer within ${timeoutMs} ms`, { host: ep.host, port: ep.port })
            : new RackpilotError('CONNECT_TIMEOUT', `${where}: no TCP connection within ${timeoutMs} ms`, { host: ep.host, port: ep.port }),
        );
      }, timeoutMs);
      r.on('socket', (s) => {
        this.warm?.taken(s);
        if (!s.connecting) {
          connected = true;
          return;
        }
        this.connects++;
        connectTimer = setTimeout(() => {
          finish(
            new RackpilotError('CONNECT_TIMEOUT', `${where}: no TCP connection within ${ep.connectTimeoutMs} ms (is the device powered and on this network?)`, {
              host: ep.host,
              port: ep.port,
            }),
          );
        }, ep.connectTimeoutMs);
        s.once('connect', () => {
          connected = true;
          clearTimeout(connectTimer);
        });
      });
      let answered = false;
      r.on('error', (err: NodeJS.ErrnoException) => {
        const code = err.code ?? err.message;
        if (r.reusedSocket && !answered && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
          finish(new StaleSocketError(where));
        } else if (err.code?.startsWith('HPE_')) {
          finish(new RackpilotError('MALFORMED_RESPONSE', `${where}: the answer is not valid HTTP (${code})`, { host: ep.host, port: ep.port }));
        } else if (!connected && err.code === 'ECONNREFUSED') {
          finish(new RackpilotError('CONNECT_REFUSED', `${where}: connection refused (is the web API enabled on port ${ep.port}?)`, { host: ep.host, port: ep.port }));
        } else if (!connected && err.code !== 'ECONNRESET') {
          finish(new RackpilotError('UNREACHABLE', `${where}: cannot connect (${code})`, { host: ep.host, port: ep.port }));
        } else {
          finish(new RackpilotError('CONNECTION_CLOSED', `${where}: connection closed before the answer completed (${code}); retry`, { host: ep.host, port: ep.port }));
        }
      });
      r.on('response', (res) => {
        answered = true;
        this.warm?.hint(res.headers['keep-alive']);
        const declared = Number(res.headers['content-length'] ?? '0');
        if (declared > max) {
          finish(new RackpilotError('RESPONSE_TOO_LARGE', `${where}: answer of ${declared} bytes exceeds ${max}`, { limit: max }));
          res.destroy();
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > max) {
            finish(new RackpilotError('RESPONSE_TOO_LARGE', `${where}: answer exceeds ${max} bytes; refusing to buffer more`, { limit: max }));
            res.destroy();
            return;
          }
          chunks.push(c);
        });
        res.on('error', (err: NodeJS.ErrnoException) =>
          finish(new RackpilotError('CONNECTION_CLOSED', `${where}: answer cut off (${err.code ?? err.message})`, { host: ep.host, port: ep.port })),
        );
        res.on('aborted', () => finish(new RackpilotError('CONNECTION_CLOSED', `${where}: answer cut off`, { host: ep.host, port: ep.port })));
        res.on('end', () => {
          if (!res.complete) {
            finish(new RackpilotError('CONNECTION_CLOSED', `${where}: answer cut off after ${size} bytes`, { host: ep.host, port: ep.port }));
            return;
          }
          const buf = Buffer.concat(chunks);
          finish(null, {
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: buf,
            text: () => buf.toString('utf8'),
            json: () => {
              try {
                return JSON.parse(buf.toString('utf8')) as unknown;
              } catch {
                const t = buf.toString('utf8');
                throw new RackpilotError('MALFORMED_RESPONSE', `${where}: answer is not JSON: ${JSON.stringify(t.length > 80 ? `${t.slice(0, 80)}…` : t)}`);
              }
            },
          });
        });
      });
      r.end(body);
    });
  }
}
