/**
 * The Braiins OS API's gRPC transport: unary calls over one plaintext HTTP/2
 * (h2c) session per miner, on node:http2.
 *
 * Why not @grpc/grpc-js here: its client spends tens of microseconds per call
 * before the send (metadata, interceptors, a filter stack, deadline timers)
 * and takes no prebuilt bytes, so the armed curtail needed a session of its
 * own beside grpc-js's channel: two HTTP/2 sessions per miner, each ~30 KiB
 * of native memory, plus grpc-js's per-channel state and ~2.5 MiB of code.
 * The unary subset the driver uses is small (the gRPC length-prefixed
 * message, `grpc-status`/`grpc-message` in the trailers or a trailers-only
 * answer, the HTTP status mapping), and grpc-js remains the reference: the
 * simulator serves with it, and h2.test.ts puts every answer this reads,
 * good or bad, to a grpc-js client as well and requires the same status.
 *
 * Every call is encoded once (`prepare`, with the codec proto-loader builds
 * from the .proto files, see proto.ts) and goes out as
 * `session.request(headers)` + `stream.end(body)` (`send`); a plain call
 * (`BraiinsGrpc.call`) does the two at once after waiting for the session
 * (`ready`), the armed curtail prepares ahead and sends in the engine's
 * batch. The answer is read as grpc-js reads one (InFlightCall), and its
 * status becomes an error through one mapping (BraiinsGrpc.statusError).
 *
 * The session opens on demand and is up once the peer has sent its HTTP/2
 * SETTINGS. It is kept alive with a PING every PING_MS (one still unanswered
 * at the next is the end of it), and dropped when the peer closes it, errs,
 * or lets a call time out, or when nobody has used it for IDLE_MS. A session
 * that came up is reopened at once on the next demand; one that never came
 * up (refused, not HTTP/2, silent) is retried after a backoff of 250 ms
 * doubling to 2 s, as grpc-js reconnects, so a dead peer is not hammered. It
 * never holds the process open (unref'd).
 */
import { afterSends, answerTracker } from '../lib/send-batch.js';
import http2 from 'node:http2';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import type { GrpcEndpoint } from './grpc.js';
import { methodOf, type ServiceName } from './proto.js';

/** gRPC status codes (grpc/doc/statuscodes.md). */
export const S = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatus = (typeof S)[keyof typeof S];
const STATUS_NAMES = Object.fromEntries(Object.entries(S).map(([k, v]) => [v, k])) as Record<GrpcStatus, string>;
/** A status's name, e.g. FAILED_PRECONDITION. */
export const statusName = (code: GrpcStatus): string => STATUS_NAMES[code];

/** Keep-alive PING interval of an open session. */
const PING_MS = 20_000;
/** A session the peer has not answered with SETTINGS by then is given up. */
const OPEN_TIMEOUT_MS = 5_000;
/** Backoff after a session that never came up: the first retry after this, doubling... */
const BACKOFF_FIRST_MS = 250;
/** ...up to this. */
const BACKOFF_MAX_MS = 2_000;
/** A session nobody has used in this long (not polled, not armed) is closed. */
const IDLE_MS = 3 * PING_MS;
const { NGHTTP2_CANCEL } = http2.constants;

/**
 * The gRPC status of an answer as a RackpilotError (BraiinsGrpc.statusError).
 * `connected`: for DEADLINE_EXCEEDED, whether the session was up (READ_TIMEOUT)
 * or never came up (CONNECT_TIMEOUT).
 */
export type StatusError = (code: GrpcStatus, details: string, where: string, deadlineMs: number, connected: boolean) => RackpilotError;

/** A unary call encoded ahead with one token. */
export interface PreparedCall {
  /** e.g. "m1 (10.0.0.5:50051) ActionsService/PauseMining", for messages. */
  readonly where: string;
  readonly token: string | undefined;
  readonly headers: http2.OutgoingHttpHeaders;
  /** The length-prefixed request message. */
  readonly body: Buffer;
  readonly decode: (message: Buffer) => unknown;
}

/** HTTP statuses of a non-gRPC answer, as grpc-js reads them (gRPC's http-grpc-status-mapping). */
function fromHttpStatus(code: number): GrpcStatus {
  switch (code) {
    case 400:
      return S.INTERNAL;
    case 401:
      return S.UNAUTHENTICATED;
    case 403:
      return S.PERMISSION_DENIED;
    case 404:
      return S.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return S.UNAVAILABLE;
    default:
      return S.UNKNOWN;
  }
}

export function text(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Why the last session never came up, and when. */
interface OpenFailure {
  at: number;
  code: GrpcStatus;
  details: string;
}

export class H2Connection {
  private current: http2.ClientHttp2Session | undefined;
  /** Whether the peer of `current` has sent its SETTINGS (it speaks HTTP/2). */
  private up = false;
  private openedAt = Number.NEGATIVE_INFINITY;
  private usedAt = Number.NEGATIVE_INFINITY;
  /** No new session before this (performance.now()); see the backoff above. */
  private nextOpenAt = Number.NEGATIVE_INFINITY;
  /** Sessions in a row that never came up. */
  private failures = 0;
  private lastFailure: OpenFailure | undefined;
  /** Calls waiting for the session (ready()): told of every change. */
  private readonly waiters = new Set<() => void>();

  constructor(
    private readonly ep: GrpcEndpoint,
    private readonly target: string,
    private readonly statusError: StatusError,
  ) {}

  /** The session to send on if it is up; else undefined, and one is opened unless it is opening or backing off. */
  session(): http2.ClientHttp2Session | undefined {
    this.usedAt = performance.now();
    const s = this.current;
    if (s && !s.closed && !s.destroyed) {
      if (this.up) return s;
      if (performance.now() - this.openedAt < OPEN_TIMEOUT_MS) return undefined;
      this.failed(s, S.DEADLINE_EXCEEDED, `no HTTP/2 SETTINGS from the peer within ${OPEN_TIMEOUT_MS} ms`);
    }
    if (performance.now() >= this.nextOpenAt) this.open();
    return undefined;
  }

  /**
   * The session once it is up, for a plain call: waits for it within
   * `deadlineMs` (CONNECT_TIMEOUT after that), fails with the reason when a
   * session opened meanwhile does not come up (CONNECT_REFUSED,
   * MALFORMED_RESPONSE for a peer that is not HTTP/2, ...), at once when the
   * backoff outlasts the deadline, and with CANCELLED when `signal` aborts.
   */
  ready(deadlineMs: number, where: string, signal?: AbortSignal): Promise<http2.ClientHttp2Session> {
    const now = this.session();
    if (now) return Promise.resolve(now);
    const since = performance.now();
    const end = since + deadlineMs;
    return new Promise((resolve, reject) => {
      let retry: NodeJS.Timeout | undefined;
      const failure = (): RackpilotError | undefined => {
        const f = this.lastFailure;
        return f ? this.statusError(f.code, f.details, where, deadlineMs, false) : undefined;
      };
      const finish = (s: http2.ClientHttp2Session | undefined, err?: RackpilotError): void => {
        clearTimeout(timer);
        clearTimeout(retry);
        this.waiters.delete(check);
        signal?.removeEventListener('abort', onAbort);
        if (s) resolve(s);
        else reject(err ?? this.statusError(S.DEADLINE_EXCEEDED, 'no connection', where, deadlineMs, false));
      };
      const check = (): void => {
        const s = this.session();
        if (s) return finish(s);
        if (this.current) return; // opening: the next change tells
        // a session opened for this call failed, or the next may not open before the deadline
        if ((this.lastFailure && this.lastFailure.at >= since) || this.nextOpenAt >= end) return finish(undefined, failure());
        clearTimeout(retry);
        retry = setTimeout(check, this.nextOpenAt - performance.now());
      };
      const onAbort = (): void => finish(undefined, new RackpilotError('CANCELLED', `${where}: cancelled while connecting`));
      // a deadline that passes while the session is opening is a timeout, whatever failed before
      const timer = setTimeout(() => finish(undefined, this.current ? undefined : failure()), deadlineMs);
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(check);
      check();
    });
  }

  /**
   * Encodes `request` for `service/method` with `token` (none: no
   * `authorization`); the result is sent by `send`, as often as wanted.
   * `timeoutMs`: told to the server as `grpc-timeout` (a plain call's deadline).
   */
  prepare(service: ServiceName, method: string, request: object, token: string | undefined, where: string, timeoutMs?: number): PreparedCall {
    const def = methodOf(service, method);
    const message = def.requestSerialize(request);
    const body = Buffer.allocUnsafe(5 + message.length);
    body.writeUInt8(0, 0); // not compressed
    body.writeUInt32BE(message.length, 1);
    message.copy(body, 5);
    const headers: http2.OutgoingHttpHeaders = {
      ':method': 'POST',
      ':path': def.path,
      'content-type': 'application/grpc',
      te: 'trailers',
    };
    if (token !== undefined) headers.authorization = token;
    // at most 8 digits (the gRPC spec); a deadline that long is never one of ours
    if (timeoutMs !== undefined) headers['grpc-timeout'] = `${Math.min(99_999_999, Math.max(1, Math.ceil(timeoutMs)))}m`;
    return { where, token, headers, body, decode: def.responseDeserialize };
  }

  /**
   * Puts `call` on the wire on `s` now, and only that (the answer is
   * collected by listeners until `InFlightCall.result` reads it); undefined
   * when `s` can take no new stream (closed since, or dropped).
   */
  send(s: http2.ClientHttp2Session, call: PreparedCall): InFlightCall | undefined {
    if (s !== this.current || s.closed || s.destroyed) return undefined;
    const sentAt = performance.now();
    let stream: http2.ClientHttp2Stream;
    try {
      stream = s.request(call.headers);
    } catch {
      // the session ended between the check and the request (GOAWAY, out of stream ids)
      return undefined;
    }
    stream.end(call.body);
    return new InFlightCall(s, stream, call, sentAt, this.ep.maxResponseBytes, this.statusError, () => this.retire(s));
  }

  /** Closes the session (driver stop); a later demand opens a new one. */
  close(): void {
    if (this.current) this.drop(this.current);
  }

  private open(): void {
    const s = http2.connect(`http://${this.target}`, { settings: { enablePush: false } });
    this.current = s;
    this.up = false;
    this.openedAt = performance.now();
    s.unref();
    let pingOut = false;
    const pinger = setInterval(() => {
      if (pingOut || s !== this.current || !this.up || performance.now() - this.usedAt > IDLE_MS) {
        this.drop(s);
        return;
      }
      pingOut = true;
      // false: too many unanswered pings queued, the same verdict
      if (!s.ping((err) => (err ? this.drop(s) : (pingOut = false)))) this.drop(s);
    }, PING_MS);
    pinger.unref();
    s.once('remoteSettings', () => {
      if (s !== this.current) return;
      this.up = true;
      this.failures = 0;
      this.lastFailure = undefined;
      this.changed();
    });
    // every session error ends the session ('close' follows); one that never came up says why
    s.on('error', (err: Error) => {
      if (s === this.current && !this.up) this.failed(s, S.UNAVAILABLE, err.message);
    });
    s.once('close', () => {
      clearInterval(pinger);
      if (s !== this.current) return;
      if (this.up) this.drop(s);
      else this.failed(s, S.UNAVAILABLE, 'Connection dropped before the HTTP/2 handshake');
    });
  }

  /** A session that never came up: the next one waits out the backoff. */
  private failed(s: http2.ClientHttp2Session, code: GrpcStatus, details: string): void {
    if (s === this.current) {
      this.failures++;
      this.lastFailure = { at: performance.now(), code, details };
      this.nextOpenAt = performance.now() + Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (this.failures - 1));
      this.current = undefined;
    }
    if (!s.destroyed) s.destroy();
    this.changed();
  }

  /** Ends a session that was up (or one we no longer want): the next demand opens another at once. */
  private drop(s: http2.ClientHttp2Session): void {
    if (s === this.current) {
      this.current = undefined;
      this.nextOpenAt = performance.now();
    }
    if (!s.destroyed) s.destroy();
    this.changed();
  }

  /**
   * A session whose peer let a call time out: no new call goes on it (the
   * next opens another at once), and it closes once the calls still on it
   * have ended, each by its own answer or deadline, as grpc-js lets the
   * calls of a channel it drops finish; at the latest after OPEN_TIMEOUT_MS.
   */
  private retire(s: http2.ClientHttp2Session): void {
    if (s === this.current) {
      this.current = undefined;
      this.nextOpenAt = performance.now();
    }
    if (!s.closed && !s.destroyed) {
      s.close();
      setTimeout(() => s.destroy(), OPEN_TIMEOUT_MS).unref();
    }
    this.changed();
  }

  private changed(): void {
    for (const w of [...this.waiters]) w();
  }
}

/**
 * A prepared call on the wire. Its listeners note the answer as it comes;
 * `result` (phase 2) turns it into the decoded reply or the error a plain
 * call would give, with the call's deadline counted from when it was sent.
 */
export class InFlightCall {
  private httpStatus = 0;
  private grpcStatus: string | undefined;
  private grpcMessage: string | undefined;
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private tooLarge = false;
  /** A client-side failure of the stream (not one that just reports a RST_STREAM). */
  private failure: string | undefined;
  /** The answer's trailers (or trailers-only headers) arrived. */
  private ended = false;
  private closed = false;
  /** performance.now() when the answer's status arrived (its trailers, or a trailers-only answer). */
  private answeredAt: number | undefined;
  /** performance.now() when a good answer arrived, once `result` has read it as one. */
  answeredOkAt: number | undefined;
  private onClose: (() => void) | undefined;
  /** The answer's response headers (gRPC initial metadata: older firmware puts the login token there). */
  headers: http2.IncomingHttpHeaders = {};

  constructor(
    private readonly session: http2.ClientHttp2Session,
    private readonly stream: http2.ClientHttp2Stream,
    private readonly call: PreparedCall,
    /** performance.now() when it was handed to the session. */
    readonly sentAt: number,
    private readonly maxBytes: number,
    private readonly statusError: StatusError,
    private readonly retireSession: () => void,
  ) {
    // the request went out before this (see send): its answer is read from right after the batch of sends
    const ended = answerTracker();
    afterSends(() => this.listen(stream, maxBytes, ended));
  }

  private listen(stream: http2.ClientHttp2Stream, maxBytes: number, ended: (() => void) | undefined): void {
    stream.on('response', (h, flags) => {
      this.headers = h;
      this.httpStatus = Number(h[':status']);
      if (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) this.status(h);
    });
    stream.on('data', (b: Buffer) => {
      this.size += b.length;
      if (this.size > maxBytes + 5) {
        this.tooLarge = true;
        stream.close(NGHTTP2_CANCEL);
      } else this.chunks.push(b);
    });
    stream.on('trailers', (h: http2.IncomingHttpHeaders) => this.status(h));
    stream.on('error', (err: Error & { code?: string }) => {
      if (err.code !== 'ERR_HTTP2_STREAM_ERROR') this.failure ??= err.message;
    });
    stream.on('close', () => {
      this.closed = true;
      ended?.();
      // as tcp-exchange.ts: the waiter's work runs after the other sockets ready now have been read
      if (this.onClose) setImmediate(this.onClose);
    });
  }

  /**
   * The decoded reply, once the answer is complete; rejects as a plain call
   * would (the mapped gRPC status, READ_TIMEOUT `deadlineMs` after it was
   * sent, CANCELLED when `signal` aborts: the stream is then reset).
   */
  result(deadlineMs: number, signal?: AbortSignal): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (err?: RackpilotError): void => {
        // once: a deferred close may come after the deadline or an abort ended the wait
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.onClose = undefined;
        if (err) {
          reject(err);
          return;
        }
        let value: unknown;
        try {
          value = this.reply(deadlineMs);
        } catch (e) {
          reject(toRackpilotError(e));
          return;
        }
        this.answeredOkAt = this.answeredAt;
        resolve(value);
      };
      const onAbort = (): void => {
        this.cancel();
        finish(this.statusError(S.CANCELLED, 'cancelled by the caller', this.call.where, deadlineMs, true));
      };
      const timer = setTimeout(
        () => {
          // the stream closed just before, its close handed over but not run yet (setImmediate): that answer counts
          if (this.closed) {
            finish();
            return;
          }
          // a peer that stopped answering on an open session: this stream is reset, and the session
          // retired (the next call opens another)
          this.cancel();
          this.retireSession();
          finish(this.statusError(S.DEADLINE_EXCEEDED, 'deadline exceeded', this.call.where, deadlineMs, true));
        },
        Math.max(0, this.sentAt + deadlineMs - performance.now()),
      );
      if (signal?.aborted) onAbort();
      else if (this.closed) finish();
      else {
        this.onClose = () => finish();
        signal?.addEventListener('abort', onAbort, { once: true });
      }
    });
  }

  /** Resets the stream if it is still open (an answer nobody waits for any more). */
  cancel(): void {
    if (!this.stream.closed && !this.stream.destroyed) this.stream.close(NGHTTP2_CANCEL);
  }

  private status(h: http2.IncomingHttpHeaders): void {
    this.ended = true;
    this.answeredAt = performance.now();
    const st = text(h['grpc-status']);
    if (st === undefined) return;
    this.grpcStatus = st;
    const msg = text(h['grpc-message']);
    if (msg !== undefined) {
      try {
        this.grpcMessage = decodeURI(msg);
      } catch {
        this.grpcMessage = msg;
      }
    }
  }

  /**
   * The closed stream's answer: the decoded message, or the error it carries,
   * read with grpc-js's precedence (subchannel-call.js) so that both paths
   * give a miner's answer the same status: an oversized message, then the
   * grpc-status, then the HTTP status, then how the stream ended.
   */
  private reply(deadlineMs: number): unknown {
    const fail = (code: GrpcStatus, details: string): RackpilotError => this.statusError(code, details, this.call.where, deadlineMs, true);
    const http = this.httpStatus;
    const data = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
    const declared = data.length >= 5 ? data.readUInt32BE(1) : 0;
    if (this.tooLarge || declared > this.maxBytes) {
      // an HTML error page read as a message says more by its HTTP status
      if (http !== 0 && http !== 200) throw fail(fromHttpStatus(http), `Received HTTP status code ${http}`);
      throw fail(S.RESOURCE_EXHAUSTED, `Received message larger than max (${Math.max(declared, this.size - 5)} vs ${this.maxBytes})`);
    }
    if (this.grpcStatus === undefined) throw this.noStatus(fail);
    const code = Number(this.grpcStatus);
    if (!Number.isInteger(code) || code < 0 || code > 16) throw fail(S.UNKNOWN, `malformed grpc-status "${this.grpcStatus}"`);
    if (code !== 0) throw fail(code as GrpcStatus, this.grpcMessage ?? '');
    if (data.length === 0) throw fail(S.UNIMPLEMENTED, 'No message received');
    if (declared !== data.length - 5) throw fail(S.INTERNAL, `Response message parsing error: not one length-prefixed message (${data.length} bytes)`);
    if (data[0] !== 0) throw fail(S.INTERNAL, 'Response message parsing error: compressed, though no compression was offered');
    try {
      return this.call.decode(data.subarray(5));
    } catch (err) {
      throw fail(S.INTERNAL, `Response message parsing error: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** An answer that carried no grpc-status. */
  private noStatus(fail: (code: GrpcStatus, details: string) => RackpilotError): RackpilotError {
    const http = this.httpStatus;
    if (this.ended) return http !== 0 ? fail(fromHttpStatus(http), `Received HTTP status code ${http}`) : fail(S.UNKNOWN, 'No status information received');
    const rst = this.stream.rstCode ?? http2.constants.NGHTTP2_NO_ERROR;
    switch (rst) {
      case http2.constants.NGHTTP2_NO_ERROR:
        return http !== 0 && http !== 200
          ? fail(fromHttpStatus(http), `Received HTTP status code ${http}`)
          : fail(S.INTERNAL, `Received RST_STREAM with code ${rst} (Call ended without gRPC status)`);
      case http2.constants.NGHTTP2_REFUSED_STREAM:
        return fail(S.UNAVAILABLE, 'Stream refused by server');
      case NGHTTP2_CANCEL:
        // node reports a dropped connection as a cancelled stream; we cancel only after the wait is over
        return this.session.destroyed || this.session.closed || this.failure !== undefined
          ? fail(S.UNAVAILABLE, `Connection dropped${this.failure === undefined ? '' : ` (${this.failure})`}`)
          : fail(S.CANCELLED, 'Call cancelled by the server');
      case http2.constants.NGHTTP2_ENHANCE_YOUR_CALM:
        return fail(S.RESOURCE_EXHAUSTED, 'Bandwidth exhausted or memory limit exceeded');
      case http2.constants.NGHTTP2_INADEQUATE_SECURITY:
        return fail(S.PERMISSION_DENIED, 'Protocol not secure enough');
      case http2.constants.NGHTTP2_INTERNAL_ERROR:
        return this.failure !== undefined && /ECONNRESET|ETIMEDOUT/.test(this.failure)
          ? fail(S.UNAVAILABLE, this.failure)
          : fail(S.INTERNAL, `Received RST_STREAM with code ${rst}${this.failure === undefined ? ' (Internal server error)' : ` triggered by internal client error: ${this.failure}`}`);
      default:
        return fail(S.INTERNAL, `Received RST_STREAM with code ${rst}`);
    }
  }
}
