/**
 * Unary gRPC calls to the Braiins OS API over plaintext HTTP/2 (h2c): one
 * session per device (h2.ts), shared by every call, the polls' and the armed
 * curtail's alike; every call carries a deadline (sent to the server as
 * `grpc-timeout` too) and is cancelled when the caller's signal aborts;
 * replies are capped in size; gRPC statuses and transport failures become
 * RackpilotErrors with stable codes (statusError).
 */
import type http2 from 'node:http2';
import { RackpilotError } from '../lib/errors.js';
import { H2Connection, S, statusName, type GrpcStatus } from './h2.js';
import type { ServiceName } from './proto.js';

export interface GrpcEndpoint {
  host: string;
  port: number;
  /** Replies larger than this are refused (RESPONSE_TOO_LARGE). */
  maxResponseBytes: number;
  /** Names the device in messages, e.g. "m1 (10.0.0.5:50051)". */
  label: string;
}

export interface CallOptions {
  /** Deadline of this one RPC, sent to the server as grpc-timeout too. */
  deadlineMs: number;
  signal?: AbortSignal;
  /** Session token, sent as metadata `authorization`. */
  token?: string;
}

export interface CallResult<T> {
  reply: T;
  /** Response headers (initial metadata): older firmware puts the login token here. */
  headers: http2.IncomingHttpHeaders;
}

export class BraiinsGrpc {
  /** The device's HTTP/2 session: plain calls go through call(), the armed curtail prepares and sends on it directly. */
  readonly h2: H2Connection;
  private readonly target: string;

  constructor(private readonly ep: GrpcEndpoint) {
    this.target = ep.host.includes(':') ? `[${ep.host}]:${ep.port}` : `${ep.host}:${ep.port}`;
    this.h2 = new H2Connection(ep, this.target, (code, details, where, deadlineMs, connected) => this.statusError(code, details, where, deadlineMs, connected));
  }

  get label(): string {
    return this.ep.label;
  }

  close(): void {
    this.h2.close();
  }

  /** `Service/Method` with the device, as every message about a call starts. */
  where(service: ServiceName, method: string): string {
    return `${this.ep.label} ${service.slice(service.lastIndexOf('.') + 1)}/${method}`;
  }

  async call<T>(service: ServiceName, method: string, request: object, opts: CallOptions): Promise<CallResult<T>> {
    const where = this.where(service, method);
    if (opts.signal?.aborted) throw new RackpilotError('CANCELLED', `${where}: cancelled before it was sent`);
    const started = performance.now();
    const session = await this.h2.ready(opts.deadlineMs, where, opts.signal);
    // what is left of the deadline after connecting; the server is told the same
    const left = Math.max(1, opts.deadlineMs - (performance.now() - started));
    const sent = this.h2.send(session, this.h2.prepare(service, method, request, opts.token, where, left));
    if (!sent) throw this.statusError(S.UNAVAILABLE, 'Connection dropped before the call was sent', where, opts.deadlineMs, true);
    const reply = (await sent.result(left, opts.signal)) as T;
    return { reply, headers: sent.headers };
  }

  /**
   * A gRPC status (or a transport failure given one) as a RackpilotError with
   * a stable code. `connected` tells, for DEADLINE_EXCEEDED, a peer that took
   * the connection but did not answer from one that never completed the
   * HTTP/2 handshake.
   */
  statusError(code: GrpcStatus, details: string, where: string, deadlineMs: number, connected: boolean): RackpilotError {
    const ctx = { host: this.ep.host, port: this.ep.port, grpcStatus: code };
    switch (code) {
      case S.UNAUTHENTICATED:
        return new RackpilotError('AUTH_FAILED', `${where}: not authenticated (${details})`, ctx);
      case S.PERMISSION_DENIED:
        return new RackpilotError(
          'AUTH_FAILED',
          `${where}: permission denied by the miner (${details}); the account may lack write access or the API is read-only`,
          ctx,
        );
      case S.DEADLINE_EXCEEDED:
        return connected
          ? new RackpilotError('READ_TIMEOUT', `${where}: connected but no reply within ${deadlineMs} ms`, ctx)
          : new RackpilotError(
              'CONNECT_TIMEOUT',
              `${where}: no gRPC connection within ${deadlineMs} ms (is the miner powered, and gRPC enabled on port ${this.ep.port}?)`,
              ctx,
            );
      case S.CANCELLED:
        return new RackpilotError('CANCELLED', `${where}: cancelled`, ctx);
      case S.RESOURCE_EXHAUSTED:
        return /larger than max|exceeds/i.test(details)
          ? new RackpilotError('RESPONSE_TOO_LARGE', `${where}: reply exceeds ${this.ep.maxResponseBytes} bytes; refused`, ctx)
          : new RackpilotError('BUSY', `${where}: miner is out of resources (${details}); retry later`, ctx);
      case S.UNIMPLEMENTED:
        return new RackpilotError('UNSUPPORTED', `${where}: not implemented by this firmware (${details})`, ctx);
      case S.INVALID_ARGUMENT:
      case S.OUT_OF_RANGE:
      case S.FAILED_PRECONDITION:
      case S.NOT_FOUND:
      case S.ALREADY_EXISTS:
      case S.ABORTED:
        return new RackpilotError('DEVICE_ERROR', `${where}: miner refused the request (${statusName(code)}: ${details})`, ctx);
      case S.UNAVAILABLE:
        return this.transportError(details, where, ctx);
      case S.INTERNAL:
      case S.UNKNOWN:
      case S.DATA_LOSS:
      case S.OK: // an error callback never carries OK; treat it like an unknown failure
        if (/parsing|deserializ|protocol|malformed|invalid/i.test(details)) {
          return new RackpilotError('MALFORMED_RESPONSE', `${where}: reply is not valid gRPC/protobuf (${details})`, ctx);
        }
        if (/stream|closed|reset|RST_STREAM|socket/i.test(details)) return this.transportError(details, where, ctx);
        return new RackpilotError('DEVICE_ERROR', `${where}: miner error (${statusName(code)}: ${details})`, ctx);
    }
  }

  private transportError(details: string, where: string, ctx: Record<string, string | number>): RackpilotError {
    if (/ECONNREFUSED/.test(details)) {
      return new RackpilotError('CONNECT_REFUSED', `${where}: connection refused (is gRPC enabled on port ${this.ep.port}?)`, ctx);
    }
    if (/EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|EADDRNOTAVAIL/.test(details)) {
      return new RackpilotError('UNREACHABLE', `${where}: cannot connect (${details})`, ctx);
    }
    if (/protocol|PROTOCOL_ERROR|ERR_HTTP2|invalid|malformed|frame/i.test(details)) {
      return new RackpilotError(
        'MALFORMED_RESPONSE',
        `${where}: the peer does not speak gRPC/HTTP/2 (${details}); is port ${this.ep.port} really the Braiins gRPC API?`,
        ctx,
      );
    }
    return new RackpilotError('CONNECTION_CLOSED', `${where}: connection lost before the reply completed (${details}); retry`, ctx);
  }
}
