/**
 * Calls prepared ahead and sent with one HTTP/2 request, for the armed
 * curtail. grpc-js spends tens of microseconds per call before the send
 * (metadata, interceptors, a filter stack, deadline timers) and takes no
 * prebuilt bytes, so the request is encoded here once (the gRPC
 * length-prefixed message, with the codec grpc-js uses, see proto.ts) and
 * goes out as `session.request(headers)` + `stream.end(body)` on a
 * node:http2 session of our own to the same port. The answer is read as
 * grpc-js reads one (HTTP status, grpc-status in the trailers or in a
 * trailers-only answer, one message, the size cap) and its status becomes an
 * error through the same mapping as a plain call's (BraiinsGrpc.statusError).
 *
 * The session opens on demand (`session()`: the caller prepares once it is
 * up, i.e. once the peer has sent its HTTP/2 SETTINGS), is kept alive with a
 * PING every PING_MS (one still unanswered at the next is the end of it),
 * and is dropped when the peer closes it, errs, or lets a call time out, or
 * when nobody has asked for it for IDLE_MS (the device is no longer armed);
 * the next demand opens a new one, no sooner than REOPEN_MS after the last.
 * It never holds the process open (unref'd).
 */
import { afterSends } from '../lib/send-batch.js';
import http2 from 'node:http2';
import { status as S } from '@grpc/grpc-js';
import { toRackpilotError, type RackpilotError } from '../lib/errors.js';
import type { GrpcEndpoint } from './grpc.js';
import { methodOf, type ServiceName } from './proto.js';

/** Keep-alive PING interval of an open session. */
const PING_MS = 20_000;
/** A session the peer has not answered with SETTINGS by then is given up. */
const OPEN_TIMEOUT_MS = 5_000;
/** At most one new session per this interval (a peer that refuses or is not HTTP/2 is not hammered). */
const REOPEN_MS = 2_000;
/** A session nobody has asked for in this long (the device is no longer armed) is closed. */
const IDLE_MS = 3 * PING_MS;
const { NGHTTP2_CANCEL } = http2.constants;

/** The gRPC status of an answer as a RackpilotError (BraiinsGrpc.statusError, connected). */
export type StatusError = (code: S, details: string, where: string, deadlineMs: number) => RackpilotError;

/** A unary call encoded ahead with one token. */
export interface PreparedCall {
  /** e.g. "m1 (10.0.0.5:50051) ActionsService/PauseMining", for messages. */
  readonly where: string;
  readonly token: string;
  readonly headers: http2.OutgoingHttpHeaders;
  /** The length-prefixed request message. */
  readonly body: Buffer;
  readonly decode: (message: Buffer) => unknown;
}

/** HTTP statuses of a non-gRPC answer, as grpc-js reads them (gRPC's http-grpc-status-mapping). */
function fromHttpStatus(code: number): S {
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

function text(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

export class PreparedCalls {
  private current: http2.ClientHttp2Session | undefined;
  /** Whether the peer of `current` has sent its SETTINGS (it speaks HTTP/2). */
  private up = false;
  private openedAt = Number.NEGATIVE_INFINITY;
  private askedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly ep: GrpcEndpoint,
    private readonly target: string,
    private readonly statusError: StatusError,
  ) {}

  /** The session to send prepared calls on once it is up; else undefined, and one is being opened. */
  session(): http2.ClientHttp2Session | undefined {
    this.askedAt = performance.now();
    const s = this.current;
    if (s && !s.closed && !s.destroyed) {
      if (this.up) return s;
      if (performance.now() - this.openedAt < OPEN_TIMEOUT_MS) return undefined;
      this.drop(s);
    }
    if (performance.now() - this.openedAt >= REOPEN_MS) this.open();
    return undefined;
  }

  /** Encodes `request` for `service/method` with `token`; the result is sent by `send`, as often as wanted. */
  prepare(service: ServiceName, method: string, request: object, token: string, where: string): PreparedCall {
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
      authorization: token,
    };
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
    return new InFlightCall(s, stream, call, sentAt, this.ep.maxResponseBytes, this.statusError, () => this.drop(s));
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
      if (pingOut || s !== this.current || !this.up || performance.now() - this.askedAt > IDLE_MS) {
        this.drop(s);
        return;
      }
      pingOut = true;
      // false: too many unanswered pings queued, the same verdict
      if (!s.ping((err) => (err ? this.drop(s) : (pingOut = false)))) this.drop(s);
    }, PING_MS);
    pinger.unref();
    s.once('remoteSettings', () => {
      if (s === this.current) this.up = true;
    });
    // every session error ends the session ('close' follows); the next demand opens another
    s.on('error', () => undefined);
    s.once('close', () => {
      clearInterval(pinger);
      if (s === this.current) this.current = undefined;
    });
  }

  private drop(s: http2.ClientHttp2Session): void {
    if (s === this.current) this.current = undefined;
    if (!s.destroyed) s.destroy();
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

  constructor(
    private readonly session: http2.ClientHttp2Session,
    private readonly stream: http2.ClientHttp2Stream,
    private readonly call: PreparedCall,
    /** performance.now() when it was handed to the session. */
    readonly sentAt: number,
    private readonly maxBytes: number,
    private readonly statusError: StatusError,
    private readonly dropSession: () => void,
  ) {
    // the request went out before this (see send): its answer is read from right after the batch of sends
    afterSends(() => this.listen(stream, maxBytes));
  }

  private listen(stream: http2.ClientHttp2Stream, maxBytes: number): void {
    stream.on('response', (h, flags) => {
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
      this.onClose?.();
    });
  }

  /**
   * The decoded reply, once the answer is complete; rejects as a plain call
   * would (the mapped gRPC status, READ_TIMEOUT `deadlineMs` after it was
   * sent, CANCELLED when `signal` aborts: the stream is then reset).
   */
  result(deadlineMs: number, signal?: AbortSignal): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const finish = (err?: RackpilotError): void => {
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
        finish(this.statusError(S.CANCELLED, 'cancelled by the caller', this.call.where, deadlineMs));
      };
      const timer = setTimeout(
        () => {
          // a peer that stopped answering on an open session: start afresh next time, as plain calls do
          this.dropSession();
          finish(this.statusError(S.DEADLINE_EXCEEDED, 'deadline exceeded', this.call.where, deadlineMs));
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
    const fail = (code: S, details: string): RackpilotError => this.statusError(code, details, this.call.where, deadlineMs);
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
    if (code !== 0) throw fail(code, this.grpcMessage ?? '');
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
  private noStatus(fail: (code: S, details: string) => RackpilotError): RackpilotError {
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
