/**
 * Braiins OS API session: `AuthenticationService/Login` returns a token (in
 * the reply since API 1.1.0, and in the `authorization` response header on
 * all versions) that goes in the `authorization` metadata of later calls.
 * The token expires after `timeout_s` (3600 s) idle, and every call renews
 * it: we reuse it while it is warm, log in again when it has gone cold, and
 * once more when a call with a reused token is refused as UNAUTHENTICATED.
 * A call prepared with the token ahead (the armed curtail) is held to the
 * same rule: its answer is checked here, and a refusal gets that one login.
 */
import { RackpilotError } from '../lib/errors.js';
import type { BraiinsGrpc, CallOptions } from './grpc.js';
import { text } from './h2.js';
import type { LoginResponse, ServiceName } from './proto.js';

const DEFAULT_IDLE_S = 3600;
const UNAUTHENTICATED = 16;

export interface Credentials {
  username: string;
  password: string;
}

/** A call already sent with `token` (a prepared one); `reply` awaits its answer. */
export interface SentCall<T> {
  token: string;
  /** performance.now() when it went out. */
  sentAt: number;
  reply: (opts: Omit<CallOptions, 'token'>) => Promise<T>;
}

export class BraiinsSession {
  private token: string | undefined;
  private lastUsed = 0;
  private idleMs = DEFAULT_IDLE_S * 1000;
  private pending: Promise<string> | undefined;
  /** Logins performed (for tests and diagnostics). */
  logins = 0;

  constructor(
    private readonly grpc: BraiinsGrpc,
    private readonly creds: Credentials,
    private readonly now: () => number,
  ) {}

  /** Whether a token is held and not about to expire (renewed a minute, or 10 %, early). */
  get warm(): boolean {
    const margin = Math.min(60_000, this.idleMs / 10);
    return this.token !== undefined && this.now() - this.lastUsed < this.idleMs - margin;
  }

  forget(): void {
    this.token = undefined;
  }

  /** The token to prepare a call with: the one held while it is warm and no login is replacing it. */
  armable(): string | undefined {
    return this.pending === undefined && this.warm ? this.token : undefined;
  }

  /** Whether `token` is still the one held (a call prepared with it may still go out). */
  holds(token: string): boolean {
    return this.token === token;
  }

  /** Logs in (concurrent callers share one Login). */
  login(opts: Omit<CallOptions, 'token'>): Promise<string> {
    this.pending ??= this.doLogin(opts).finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  private async doLogin(opts: Omit<CallOptions, 'token'>): Promise<string> {
    const started = this.now();
    let res;
    try {
      res = await this.grpc.call<LoginResponse>('braiins.bos.v1.AuthenticationService', 'Login', this.creds, opts);
    } catch (err) {
      if (err instanceof RackpilotError && err.context.grpcStatus === UNAUTHENTICATED) {
        throw new RackpilotError(
          'AUTH_FAILED',
          `${this.grpc.label}: login refused: wrong username or password (check the device's username/password config keys)`,
          { host: err.context.host, port: err.context.port },
          { cause: err },
        );
      }
      throw err;
    }
    const token = res.reply.token || text(res.headers.authorization);
    if (!token) {
      throw new RackpilotError('MALFORMED_RESPONSE', `${this.grpc.label}: login succeeded but returned no token`);
    }
    this.logins++;
    this.token = token;
    this.idleMs = (res.reply.timeout_s && res.reply.timeout_s > 0 ? res.reply.timeout_s : DEFAULT_IDLE_S) * 1000;
    this.lastUsed = started;
    return token;
  }

  /**
   * An authenticated unary call: logs in when no warm token is held, and once
   * more if a reused token is refused. `sent`: its first attempt, already on
   * the wire with a reused token; only its answer is awaited.
   */
  async call<T>(service: ServiceName, method: string, request: object, opts: Omit<CallOptions, 'token'>, sent?: SentCall<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const first = attempt === 0 ? sent : undefined;
      const reused = first !== undefined || this.warm;
      const token = first ? first.token : reused ? (this.token as string) : await this.login(opts);
      const at = first ? this.now() - (performance.now() - first.sentAt) : this.now();
      try {
        const reply = first ? await first.reply(opts) : (await this.grpc.call<T>(service, method, request, { ...opts, token })).reply;
        if (this.token === token) this.lastUsed = Math.max(this.lastUsed, at);
        return reply;
      } catch (err) {
        const expired = err instanceof RackpilotError && err.context.grpcStatus === UNAUTHENTICATED;
        if (expired && this.token === token) this.token = undefined;
        if (!(expired && reused && attempt === 0)) throw err;
      }
    }
  }
}
