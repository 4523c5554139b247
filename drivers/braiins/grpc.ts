/**
 * Unary gRPC calls to the Braiins OS API over plaintext HTTP/2 (h2c), with
 * @grpc/grpc-js. One channel (one HTTP/2 connection) per device, reused by
 * every call; every call carries a deadline and is cancelled when the
 * caller's signal aborts; replies are capped in size; gRPC statuses and
 * transport failures become RackpilotErrors with stable codes. Calls
 * prepared ahead (the armed curtail) go over a connection of their own,
 * `prepared` (h2.ts), and their statuses map through the same `statusError`.
 */
import * as grpc from '@grpc/grpc-js';
import { RackpilotError } from '../lib/errors.js';
import { PreparedCalls } from './h2.js';
import { methodOf, type ServiceName } from './proto.js';

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
  headers: grpc.Metadata;
}

const S = grpc.status;

export class BraiinsGrpc {
  /** Calls encoded ahead and sent with one request on a raw HTTP/2 session (the armed curtail). */
  readonly prepared: PreparedCalls;
  private client: grpc.Client | undefined;
  /** Why a channel was dropped after a timeout: its other calls time out the same way. */
  private readonly droppedAs = new WeakMap<grpc.Client, 'READ_TIMEOUT' | 'CONNECT_TIMEOUT'>();
  private readonly target: string;

  constructor(private readonly ep: GrpcEndpoint) {
    this.target = ep.host.includes(':') ? `[${ep.host}]:${ep.port}` : `${ep.host}:${ep.port}`;
    this.prepared = new PreparedCalls(ep, this.target, (code, details, where, deadlineMs) => this.statusError(code, details, where, deadlineMs, () => true));
  }

  get label(): string {
    return this.ep.label;
  }

  private channel(): grpc.Client {
    this.client ??= new grpc.Client(this.target, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': this.ep.maxResponseBytes,
      // a miner back from an outage is found within seconds, not grpc's default 2 minutes
      'grpc.initial_reconnect_backoff_ms': 250,
      'grpc.max_reconnect_backoff_ms': 2000,
      'grpc.enable_retries': 0,
      'grpc.service_config_disable_resolution': 1,
    });
    return this.client;
  }

  /** Drops the channel (and its connection); the next call opens a new one. */
  reset(): void {
    this.client?.close();
    this.client = undefined;
  }

  close(): void {
    this.reset();
    this.prepared.close();
  }

  /** `Service/Method` with the device, as every message about a call starts. */
  where(service: ServiceName, method: string): string {
    return `${this.ep.label} ${service.slice(service.lastIndexOf('.') + 1)}/${method}`;
  }

  call<T>(service: ServiceName, method: string, request: object, opts: CallOptions): Promise<CallResult<T>> {
    const def = methodOf(service, method);
    const where = this.where(service, method);
    return new Promise<CallResult<T>>((resolve, reject) => {
      if (opts.signal?.aborted) {
        reject(new RackpilotError('CANCELLED', `${where}: cancelled before it was sent`));
        return;
      }
      const client = this.channel();
      const md = new grpc.Metadata();
      if (opts.token !== undefined) md.set('authorization', opts.token);
      let headers = new grpc.Metadata();
      const onAbort = (): void => call.cancel();
      const call = client.makeUnaryRequest<object, T>(
        def.path,
        def.requestSerialize,
        def.responseDeserialize as (b: Buffer) => T,
        request,
        md,
        { deadline: Date.now() + opts.deadlineMs },
        (err, reply) => {
          opts.signal?.removeEventListener('abort', onAbort);
          if (err) {
            const e = this.toError(err, where, opts.deadlineMs, client);
            // a peer that stopped answering on an open connection: start afresh next time
            const stuck = e.code === 'READ_TIMEOUT' || e.code === 'CONNECT_TIMEOUT' || e.code === 'MALFORMED_RESPONSE';
            if (stuck && this.client === client) {
              if (e.code !== 'MALFORMED_RESPONSE') this.droppedAs.set(client, e.code);
              this.reset();
            }
            reject(e);
            return;
          }
          if (reply === undefined) {
            reject(new RackpilotError('MALFORMED_RESPONSE', `${where}: empty reply`));
            return;
          }
          resolve({ reply, headers });
        },
      );
      call.on('metadata', (m) => {
        headers = m;
      });
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private toError(err: grpc.ServiceError, where: string, deadlineMs: number, client: grpc.Client): RackpilotError {
    return this.statusError(err.code, err.details || err.message, where, deadlineMs, () => {
      const state = client.getChannel().getConnectivityState(false);
      return state === grpc.connectivityState.READY || (state === grpc.connectivityState.SHUTDOWN && this.droppedAs.get(client) === 'READ_TIMEOUT');
    });
  }

  /**
   * A gRPC status (or a transport failure given one) as a RackpilotError with
   * a stable code. `connected` tells, for DEADLINE_EXCEEDED, a peer that took
   * the connection but did not answer from one that never completed it.
   */
  statusError(code: grpc.status, details: string, where: string, deadlineMs: number, connected: () => boolean): RackpilotError {
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
        return connected()
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
        return new RackpilotError('DEVICE_ERROR', `${where}: miner refused the request (${S[code]}: ${details})`, ctx);
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
        return new RackpilotError('DEVICE_ERROR', `${where}: miner error (${S[code]}: ${details})`, ctx);
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
