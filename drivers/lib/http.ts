/**
 * HTTP client shared by the drivers of HTTP-speaking firmwares: keep-alive
 * connections (no handshake on the curtail hot path), a connect deadline, an
 * overall deadline per request, a cap on response size, and transport
 * failures mapped onto RackpilotError codes. Status codes are returned, not
 * thrown: auth handling differs per firmware. Optionally (`keepWarm`) a
 * pooled connection is kept open against the device's idle timeout, so an
 * action after minutes of quiet still finds one (http-keep-warm.ts).
 *
 * Two ways to send, one request encoding and one answer handling
 * (http-exchange.ts) for both:
 *  - `request()`: through Node's http client and its connection pool;
 *  - `prepare()` then `fire()`: the request encoded beforehand, written at
 *    fire time straight onto the most recently used pooled connection (or a
 *    new one), for an armed action (see ArmedAction in drivers/contract.ts):
 *    the send costs a socket write instead of a ClientRequest.
 */
import http from 'node:http';
import net from 'node:net';
import { RackpilotError } from './errors.js';
import { afterSends, answerBatch } from './send-batch.js';
import { closeLater } from './socket-reaper.js';
import { HttpExchange, StaleSocketError, type ExchangeLimits, type HttpResponse } from './http-exchange.js';
import { KeepWarm, type KeepWarmOptions, type KeepWarmStats } from './http-keep-warm.js';
import { encodeRequest, readAnswer } from './http-wire.js';
import type { DeviceEndpointConfig } from './transports.js';

export type { HttpResponse } from './http-exchange.js';

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

/** A request encoded once (`HttpClient.prepare`), to be sent later with nothing else on the path. */
export interface PreparedRequest {
  /** The bytes written on the wire. */
  readonly bytes: Buffer;
  /**
   * Writes the bytes now: on the most recently used pooled connection,
   * taken off the pool, or on a new one (the write is queued until it
   * connects). Synchronous: the pool lookup, the listeners that collect the
   * answer and the write; no timer, promise or encoding. Undefined once the
   * client is closed. May be called again (a new send each time).
   */
  fire(): FiredRequest | undefined;
}

/** A prepared request on the wire. */
export interface FiredRequest {
  /** performance.now() when the bytes were handed to the OS. */
  readonly sentAt: number;
  /**
   * The answer, as `request()` would give it; the deadline (`timeoutMs`,
   * default the request's or the endpoint's) counts from `sentAt`. A send
   * that died on a connection the device had closed is sent again the plain
   * way, as `request()` does. Call it once.
   */
  result(opts?: { signal?: AbortSignal; timeoutMs?: number }): Promise<HttpResponse>;
  /** Drops the request if still unanswered (its connection is destroyed). */
  cancel(): void;
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

interface Encoded {
  method: string;
  headers: Record<string, string>;
  body: Buffer | undefined;
}

class Fired implements FiredRequest {
  private pending: Promise<HttpResponse> | undefined;

  constructor(
    private readonly x: HttpExchange,
    private readonly timeoutMs: number,
    private readonly again: (opts: { signal?: AbortSignal; timeoutMs?: number }) => Promise<HttpResponse>,
    /** The bookkeeping kept off fire() (see HttpClient.shoot). */
    private readonly adopt: () => void,
  ) {}

  get sentAt(): number {
    return this.x.sentAt;
  }

  result(opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<HttpResponse> {
    this.pending ??= this.wait(opts);
    return this.pending;
  }

  private async wait(opts: { signal?: AbortSignal; timeoutMs?: number }): Promise<HttpResponse> {
    this.adopt();
    try {
      return await this.x.result(opts.timeoutMs ?? this.timeoutMs, opts.signal);
    } catch (err) {
      if (!(err instanceof StaleSocketError)) throw err;
      return this.again(opts);
    }
  }

  cancel(): void {
    this.x.cancel();
  }
}

export class HttpClient {
  private readonly agent: http.Agent;
  private readonly warm: KeepWarm | undefined;
  private readonly limits: ExchangeLimits;
  /** The agent's key for this endpoint's pooled sockets. */
  private readonly poolName: string;
  /** Fired requests still unanswered (closed with the client). */
  private readonly shots = new Set<HttpExchange>();
  private readonly hint: ((h: http.IncomingHttpHeaders) => void) | undefined;
  private connects = 0;
  private staleRetries = 0;
  private closed = false;

  constructor(private readonly ep: HttpEndpoint) {
    const idleMs = ep.idleSocketMs ?? DEFAULT_IDLE_SOCKET_MS;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: ep.maxSockets ?? 2, maxFreeSockets: ep.maxSockets ?? 2, timeout: idleMs });
    this.poolName = this.agent.getName({ host: ep.host, port: ep.port });
    this.limits = { host: ep.host, port: ep.port, connectTimeoutMs: ep.connectTimeoutMs, maxResponseBytes: ep.maxResponseBytes ?? DEFAULT_MAX_HTTP_BYTES };
    if (ep.keepWarm) {
      const ping = ep.keepWarm.ping ?? ((signal: AbortSignal) => this.request({ path: '/', signal }));
      const warm = new KeepWarm(ping, ep.connectTimeoutMs + ep.readTimeoutMs, idleMs, ep.keepWarm);
      this.warm = warm;
      this.hint = (h) => warm.hint(h['keep-alive']);
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

  /** Closes kept-alive sockets and fired requests still in flight, and stops keeping one warm (for good). */
  close(): void {
    this.closed = true;
    this.warm?.close();
    for (const x of [...this.shots]) x.cancel();
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

  /**
   * Encodes a request for `fire()` later (no I/O). Throws (TypeError) on a
   * header value or path that cannot be sent, as `request()` would.
   */
  prepare(req: Omit<HttpRequest, 'signal'>): PreparedRequest {
    const e = this.encode(req);
    const port = this.ep.port;
    const host = net.isIPv6(this.ep.host) ? `[${this.ep.host}]` : this.ep.host;
    const bytes = encodeRequest({ method: e.method, path: req.path, host: port === 80 ? host : `${host}:${port}`, headers: e.headers, body: e.body });
    const where = this.whereOf(e.method, req.path);
    const timeoutMs = req.timeoutMs ?? this.ep.readTimeoutMs;
    const again = (opts: { signal?: AbortSignal; timeoutMs?: number }): Promise<HttpResponse> => {
      this.staleRetries++;
      return this.request({ ...req, ...(opts.signal ? { signal: opts.signal } : {}), ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) });
    };
    return { bytes, fire: () => this.shoot(bytes, where, timeoutMs, again) };
  }

  /** The one place a request's headers and body are decided, for both ways of sending. */
  private encode(req: Omit<HttpRequest, 'signal'>): Encoded {
    const headers: Record<string, string> = { ...req.headers };
    let body: Buffer | undefined;
    if (req.body !== undefined) {
      if (Buffer.isBuffer(req.body)) body = req.body;
      else if (typeof req.body === 'string') body = Buffer.from(req.body);
      else {
        body = Buffer.from(JSON.stringify(req.body));
        headers['content-type'] ??= 'application/json';
      }
      headers['content-length'] = String(body.length);
    }
    return { method: req.method ?? 'GET', headers, body };
  }

  private whereOf(method: string, path: string): string {
    return `${method} http://${this.where}${path}`;
  }

  private once(req: HttpRequest): Promise<HttpResponse> {
    const ep = this.ep;
    const e = this.encode(req);
    const where = this.whereOf(e.method, req.path);
    if (req.signal?.aborted) return Promise.reject(new RackpilotError('CANCELLED', `${where}: cancelled`));
    const r = http.request({ host: ep.host, port: ep.port, method: e.method, path: req.path, headers: e.headers, agent: this.agent });
    const x = new HttpExchange(where, this.limits, (err) => {
      // an answered request gives its socket back to the pool by itself
      if (err) r.destroy();
    });
    r.on('socket', (s) => {
      this.warm?.taken(s);
      x.reused = r.reusedSocket;
      if (!s.connecting) {
        x.connect();
        return;
      }
      this.connects++;
      x.connecting();
      s.once('connect', () => x.connect());
    });
    r.on('error', (err: NodeJS.ErrnoException) => x.fail(err));
    r.on('response', (res) => {
      this.warm?.hint(res.headers['keep-alive']);
      if (!x.head(res.statusCode ?? 0, res.headers)) {
        res.destroy();
        return;
      }
      res.on('data', (c: Buffer) => {
        if (!x.body(c)) res.destroy();
      });
      res.on('error', (err: NodeJS.ErrnoException) => x.cutOff(` (${err.code ?? err.message})`));
      res.on('aborted', () => x.cutOff(''));
      res.on('end', () => x.end(res.complete));
    });
    r.end(e.body);
    return x.result(req.timeoutMs ?? ep.readTimeoutMs, req.signal);
  }

  /** The most recently used pooled socket, popped from the agent's free list; undefined when none is free. */
  private takeFree(): net.Socket | undefined {
    const pools = this.agent.freeSockets as Record<string, net.Socket[] | undefined>;
    const free = pools[this.poolName];
    if (!free) return undefined;
    let s = free.pop();
    // a socket destroyed but not yet reported closed: the agent forgets it on 'close'
    while (s !== undefined && (s.destroyed || !s.writable)) s = free.pop();
    if (free.length === 0) delete pools[this.poolName];
    return s;
  }

  /**
   * fire(): the bytes written on a pooled socket (or a new connection) with
   * the listeners that collect the answer, and nothing else. What can wait,
   * waits: keep-warm's accounting until result() or the answer, whichever is
   * first; detaching the socket from the agent for good (it can no longer
   * hand it out: it is off the free list) and undoing what pooling did to
   * it (unref, idle timeout) until result(), or, fired in a wave
   * (BatchAnswers), until the wave's answers are all in (at most
   * LATER_MAX_MS), so that none of it runs among the answers still coming.
   */
  private shoot(
    bytes: Buffer,
    where: string,
    timeoutMs: number,
    again: (opts: { signal?: AbortSignal; timeoutMs?: number }) => Promise<HttpResponse>,
  ): FiredRequest | undefined {
    if (this.closed) return undefined;
    const pooled = this.takeFree();
    const socket = pooled ?? net.connect({ host: this.ep.host, port: this.ep.port, noDelay: true });
    let claimed = false;
    /** Keep-warm's accounting: the request is in flight on this socket, which is no longer idle in the pool. */
    const claim = (): void => {
      if (claimed) return;
      claimed = true;
      this.warm?.begin();
      this.warm?.taken(socket);
    };
    let adopted = false;
    const adopt = (): void => {
      claim();
      if (adopted) return;
      adopted = true;
      // (a socket whose 'close' the agent already saw is forgotten by it; 'agentRemove' would count it out twice)
      if (pooled && !socket.closed) socket.emit('agentRemove');
      if (!socket.destroyed) {
        socket.ref();
        socket.setTimeout(0);
      }
    };
    const batch = answerBatch();
    const ended = batch?.member();
    const x = new HttpExchange(where, this.limits, (err) => {
      ended?.();
      // at once, before the socket can close: keep-warm must not take its close for an idle pooled one's
      claim();
      // one request per connection taken: keep-warm opens the next one when the pool ran dry (not at once);
      // after an answer the close can wait for the end of the burst of answers (socket-reaper.ts)
      if (err === null) closeLater(socket);
      else socket.destroy();
      const rest = (): void => {
        adopt();
        this.shots.delete(x);
        this.warm?.end(err === null, true);
      };
      // fired in a wave: the bookkeeping waits for the wave's other answers (result() adopts sooner if called)
      if (batch) batch.later(rest);
      else rest();
    });
    this.shots.add(x);
    if (pooled) {
      x.reused = true;
      x.connect();
    } else {
      this.connects++;
      x.connecting();
    }
    socket.write(bytes);
    // every event of the socket comes later: its listeners can wait for the end of a batch of sends
    afterSends(() => {
      if (!pooled) socket.once('connect', () => x.connect());
      readAnswer(socket, x, this.hint);
    });
    return new Fired(x, timeoutMs, again, adopt);
  }
}
