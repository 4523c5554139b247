/**
 * Device side of an HTTP API, for simulators: a router on node:http bound to
 * an ephemeral loopback port, with the same switchable faults as the TCP
 * simulators (reusing the `Fault` type of cgminer-server.ts). Like the web
 * servers of real devices it drops a kept-alive connection after
 * `keepAliveMs` idle (default 5 s, the default of lighttpd, Apache and Node)
 * without announcing it in a `Keep-Alive: timeout=` header unless
 * `announceKeepAlive` (clients then learn it only from the close).
 */
import http from 'node:http';
import type net from 'node:net';
import { flood, type Fault } from './cgminer-server.js';
import { SimListener } from './listen.js';

export interface SimRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: unknown;
}

export interface SimResponse {
  status?: number;
  headers?: Record<string, string>;
  /** An object is sent as JSON; a string or Buffer as is. */
  body?: unknown;
  /** Answer only after this many ms (e.g. Antminer's ~20 s set_miner_conf). */
  delayMs?: number;
}

export type HttpHandler = (req: SimRequest) => SimResponse | Promise<SimResponse>;

export const SIM_HTTP_KEEP_ALIVE_MS = 5_000;

export interface HttpSimOptions {
  /** A kept-alive connection idle this long is closed (default SIM_HTTP_KEEP_ALIVE_MS). */
  keepAliveMs?: number;
  /** Announce it (`Keep-Alive: timeout=N`, as Node and Apache do; lighttpd does not). Default false. */
  announceKeepAlive?: boolean;
}

export class HttpSimServer {
  private readonly listener: SimListener;
  private readonly idleTimers = new Map<net.Socket, NodeJS.Timeout>();
  fault: Fault = { kind: 'none' };
  requests = 0;
  /** TCP connections accepted. */
  connections = 0;
  /** Idle time after which a kept-alive connection is closed; applies from the next answer on. */
  keepAliveMs: number;
  announceKeepAlive: boolean;

  constructor(
    private readonly handler: HttpHandler,
    private readonly host = '127.0.0.1',
    private readonly wantedPort = 0,
    o: HttpSimOptions = {},
  ) {
    const server = http.createServer((req, res) => this.onRequest(req, res));
    server.on('connection', (s) => {
      this.connections++;
      this.listener.track(s);
      s.once('close', () => this.idle(s, false));
      if (this.fault.kind === 'reset') s.resetAndDestroy();
    });
    // node's own idle timer runs 1 s past its keepAliveTimeout and announces itself: ours is exact
    server.keepAliveTimeout = 0;
    this.keepAliveMs = o.keepAliveMs ?? SIM_HTTP_KEEP_ALIVE_MS;
    this.announceKeepAlive = o.announceKeepAlive ?? false;
    this.listener = new SimListener(server);
  }

  /** Starts (or stops) the idle timer of a kept-alive connection. */
  private idle(s: net.Socket, on: boolean): void {
    clearTimeout(this.idleTimers.get(s));
    this.idleTimers.delete(s);
    if (on && !s.destroyed) this.idleTimers.set(s, setTimeout(() => s.destroy(), this.keepAliveMs));
  }

  listen(): Promise<{ host: string; port: number }> {
    return this.listener.listen(this.host, this.wantedPort);
  }

  get port(): number {
    return this.listener.port;
  }

  close(): Promise<void> {
    return this.listener.close();
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const socket = req.socket;
    this.idle(socket, false);
    res.once('finish', () => this.idle(socket, true));
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      this.requests++;
      void this.respond(req, Buffer.concat(chunks), res);
    });
  }

  private async respond(req: http.IncomingMessage, body: Buffer, res: http.ServerResponse): Promise<void> {
    const fault = this.fault;
    switch (fault.kind) {
      case 'silent':
        return;
      case 'garbage':
        res.socket?.end('\x07\xffHTTP/9 garbage\r\n\r\n{{{');
        return;
      case 'flood': {
        res.writeHead(200, { 'content-type': 'application/json' });
        flood(res, fault.bytes, () => res.end());
        return;
      }
      case 'reset':
        req.socket.resetAndDestroy();
        return;
      case 'none':
      case 'slow':
      case 'truncate':
        break;
    }
    const url = new URL(req.url ?? '/', 'http://sim');
    let json: unknown;
    try {
      json = body.length > 0 ? JSON.parse(body.toString('utf8')) : undefined;
    } catch {
      json = undefined;
    }
    let out: SimResponse;
    try {
      out = await this.handler({ method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, headers: req.headers, body, json });
    } catch (err) {
      out = { status: 500, body: { error: (err as Error).message } };
    }
    const payload =
      out.body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(out.body) ? out.body : Buffer.from(typeof out.body === 'string' ? out.body : JSON.stringify(out.body));
    const headers: Record<string, string> = {
      'content-type': typeof out.body === 'object' && !Buffer.isBuffer(out.body) ? 'application/json' : 'text/plain',
      ...(req.headers.connection === 'close'
        ? {}
        : { connection: 'keep-alive', ...(this.announceKeepAlive ? { 'keep-alive': `timeout=${Math.floor(this.keepAliveMs / 1000)}` } : {}) }),
      ...out.headers,
    };
    const send = (): void => {
      if (res.destroyed) return;
      if (fault.kind === 'truncate') {
        res.writeHead(out.status ?? 200, { ...headers, 'content-length': String(payload.length) });
        res.write(payload.subarray(0, Math.floor(payload.length / 2)));
        res.socket?.destroy();
        return;
      }
      res.writeHead(out.status ?? 200, { ...headers, 'content-length': String(payload.length) });
      res.end(payload);
    };
    const delay = (fault.kind === 'slow' ? fault.delayMs : 0) + (out.delayMs ?? 0);
    if (delay > 0) {
      const t = setTimeout(send, delay);
      res.once('close', () => clearTimeout(t));
    } else send();
  }
}
