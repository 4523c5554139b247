/**
 * Instrumentation of the benchmark process (never of the agent's code):
 * patches `net.Socket.prototype.connect` / `.write` / `.end` and
 * `ClientHttp2Session.prototype.request` to note, per destination
 * `host:port`, when the first command after the signal was handed to the OS
 * (the first connect, write or HTTP/2 request while armed), on the one
 * high-resolution clock of the bench (stats.hrNow).
 *
 * In capture mode (a warm-up trial, untimed) it also keeps what went over
 * each connection: the bytes written and their times, the bytes read and
 * their times, EOF, and for HTTP/2 each request's headers, body and
 * grpc-status; the floor replays these.
 */
import http2 from 'node:http2';
import net from 'node:net';
import { hrNow } from './stats.js';

export interface SocketTrace {
  type: 'tcp';
  dest: string;
  /** Connected while armed (a fresh connection), else a connection opened before the signal was reused. */
  fresh: boolean;
  writes: { at: number; bytes: Buffer }[];
  reads: { at: number; bytes: Buffer }[];
  /** The peer closed its side (EOF). */
  endAt?: number;
}

export interface StreamTrace {
  type: 'h2';
  dest: string;
  at: number;
  headers: http2.OutgoingHttpHeaders;
  body: Buffer[];
  /** The response ended (trailers or end of stream). */
  endAt?: number;
  /** grpc-status of the answer, when it carried one. */
  grpcStatus?: string;
}

export type Trace = SocketTrace | StreamTrace;

type Method = (this: unknown, ...args: unknown[]) => unknown;

/** Replaces `obj[key]` (own or inherited) with `wrap(original)`; returns the undo. */
export function patchMethod(obj: object, key: string, wrap: (orig: Method) => Method): () => void {
  const own = Object.hasOwn(obj, key);
  const orig = Reflect.get(obj, key) as Method;
  Reflect.set(obj, key, wrap(orig));
  return () => {
    if (own) Reflect.set(obj, key, orig);
    else Reflect.deleteProperty(obj, key);
  };
}

function hostPort(host: unknown, port: unknown): string | undefined {
  if (typeof port !== 'number' && (typeof port !== 'string' || port === '')) return undefined;
  const h = typeof host === 'string' && host !== '' ? host : 'localhost';
  return `${h}:${port}`;
}

/** The destination of a `connect(...)` call, whichever of its forms was used. */
function connectDest(args: readonly unknown[]): string | undefined {
  // net.createConnection() passes its normalized [options, cb] array as the one argument
  const first = Array.isArray(args[0]) ? (args[0] as unknown[])[0] : args[0];
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    const second = Array.isArray(args[0]) ? undefined : args[1];
    return hostPort(second, first);
  }
  if (first && typeof first === 'object') {
    const o = first as { host?: unknown; port?: unknown };
    return hostPort(o.host, o.port);
  }
  return undefined;
}

function toBuffer(chunk: unknown, encoding: unknown): Buffer | undefined {
  if (typeof chunk === 'string') return Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  if (chunk instanceof Uint8Array) return Buffer.from(chunk);
  return undefined;
}

export class WireProbe {
  /** Per destination: when the first command after arming was handed to the OS. */
  readonly firstAt = new Map<string, number>();
  /** What went over the wire while armed in capture mode. */
  traces: Trace[] = [];
  private armed = false;
  private capturing = false;
  private readonly destOf = new WeakMap<net.Socket, string>();
  private readonly traceOf = new WeakMap<net.Socket, SocketTrace>();
  private readonly detach: (() => void)[] = [];
  private restore: (() => void) | undefined;

  /** Patches the socket and HTTP/2 prototypes (once). */
  install(): void {
    if (this.restore) return;
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const probe = this;
    const undo: (() => void)[] = [];
    undo.push(
      patchMethod(net.Socket.prototype, 'connect', (orig) =>
        function (this: unknown, ...args: unknown[]): unknown {
          const dest = connectDest(args);
          if (dest !== undefined && this instanceof net.Socket) {
            probe.destOf.set(this, dest);
            if (probe.armed) probe.onConnect(this, dest);
          }
          return orig.apply(this, args);
        },
      ),
      patchMethod(net.Socket.prototype, 'write', (orig) =>
        function (this: unknown, ...args: unknown[]): unknown {
          if (probe.armed && this instanceof net.Socket) probe.onWrite(this, args[0], args[1]);
          return orig.apply(this, args);
        },
      ),
      patchMethod(net.Socket.prototype, 'end', (orig) =>
        function (this: unknown, ...args: unknown[]): unknown {
          if (probe.armed && this instanceof net.Socket && args[0] !== undefined && typeof args[0] !== 'function') probe.onWrite(this, args[0], args[1]);
          return orig.apply(this, args);
        },
      ),
    );
    // the HTTP/2 client session class is not exported: take it from a session that is dropped at once
    const tmp = http2.connect('http://127.0.0.1:9');
    tmp.on('error', () => undefined);
    const h2proto = Object.getPrototypeOf(tmp) as object;
    tmp.destroy();
    undo.push(
      patchMethod(h2proto, 'request', (orig) =>
        function (this: unknown, ...args: unknown[]): unknown {
          const at = probe.armed ? hrNow() : NaN;
          const stream = orig.apply(this, args);
          if (probe.armed) probe.onRequest(this as http2.ClientHttp2Session, stream as http2.ClientHttp2Stream, at, (args[0] ?? {}) as http2.OutgoingHttpHeaders);
          return stream;
        },
      ),
    );
    this.restore = () => {
      for (const u of undo.reverse()) u();
    };
  }

  uninstall(): void {
    this.disarm();
    this.restore?.();
    this.restore = undefined;
  }

  /** Starts a trial: forgets the previous one's times (and traces). */
  arm(capture = false): void {
    this.firstAt.clear();
    this.traces = [];
    this.capturing = capture;
    this.armed = true;
  }

  /** Ends a trial: nothing more is noted; capture listeners are removed. */
  disarm(): void {
    this.armed = false;
    this.capturing = false;
    for (const d of this.detach.splice(0)) d();
  }

  private note(dest: string, at: number): void {
    if (!this.firstAt.has(dest)) this.firstAt.set(dest, at);
  }

  private onConnect(s: net.Socket, dest: string): void {
    this.note(dest, hrNow());
    if (this.capturing) this.trace(s, dest, true);
  }

  private onWrite(s: net.Socket, chunk: unknown, encoding: unknown): void {
    const at = hrNow();
    const dest = this.destOf.get(s) ?? hostPort(s.remoteAddress, s.remotePort);
    if (dest === undefined) return;
    this.note(dest, at);
    if (!this.capturing) return;
    const bytes = toBuffer(chunk, encoding);
    if (bytes && bytes.length > 0) this.trace(s, dest, false).writes.push({ at, bytes });
  }

  private trace(s: net.Socket, dest: string, fresh: boolean): SocketTrace {
    let t = this.traceOf.get(s);
    if (t && this.traces.includes(t)) return t;
    t = { type: 'tcp', dest, fresh, writes: [], reads: [] };
    const tr = t;
    this.traceOf.set(s, tr);
    this.traces.push(tr);
    const onData = (b: Buffer): void => {
      tr.reads.push({ at: hrNow(), bytes: b });
    };
    const onEnd = (): void => {
      tr.endAt ??= hrNow();
    };
    s.on('data', onData);
    s.once('end', onEnd);
    this.detach.push(() => {
      s.off('data', onData);
      s.off('end', onEnd);
    });
    return tr;
  }

  private onRequest(session: http2.ClientHttp2Session, stream: http2.ClientHttp2Stream, at: number, headers: http2.OutgoingHttpHeaders): void {
    const sock = session.socket as net.Socket | undefined;
    const dest = hostPort(sock?.remoteAddress, sock?.remotePort);
    if (dest === undefined) return;
    this.note(dest, at);
    if (!this.capturing) return;
    const t: StreamTrace = { type: 'h2', dest, at, headers: { ...headers }, body: [] };
    this.traces.push(t);
    const w = stream.write.bind(stream);
    const e = stream.end.bind(stream);
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      const b = toBuffer(chunk, rest[0]);
      if (b) t.body.push(b);
      return (w as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof stream.write;
    stream.end = ((...args: unknown[]) => {
      const b = typeof args[0] === 'function' ? undefined : toBuffer(args[0], args[1]);
      if (b) t.body.push(b);
      return (e as (...a: unknown[]) => http2.ClientHttp2Stream)(...args);
    }) as typeof stream.end;
    const status = (h: http2.IncomingHttpHeaders): void => {
      const g = h['grpc-status'];
      if (g !== undefined) t.grpcStatus = String(g);
    };
    stream.once('response', (h) => status(h));
    stream.once('trailers', (h: http2.IncomingHttpHeaders) => {
      status(h);
      t.endAt ??= hrNow();
    });
    stream.once('end', () => {
      t.endAt ??= hrNow();
    });
  }
}
