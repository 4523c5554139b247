/**
 * One HTTP request/answer of the shared HttpClient, whatever carries it:
 * Node's ClientRequest (the plain `request()`) or prepared bytes written
 * straight onto a socket (a fired `PreparedRequest`, http-wire.ts). The
 * transport only reports what happens (connected, an error, the status
 * line, body bytes, the end); this is the one place that turns that into an
 * answer or a RackpilotError: the deadlines, counted from when the request
 * went out, the abort signal, the cap on the answer's size and the mapping
 * of socket errors onto error codes.
 *
 * Two phases, so that a prepared request can go out with nothing else on
 * the path: the transport starts and feeds the exchange; `result()` (which
 * may come later) arms the timers and awaits the outcome.
 */
import type http from 'node:http';
import { RackpilotError } from './errors.js';

export interface HttpResponse {
  status: number;
  /** performance.now() when the whole answer was in (which may be before anyone awaited it). */
  receivedAt: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text(): string;
  /** Parses the body as JSON; MALFORMED_RESPONSE when it is not. */
  json(): unknown;
}

/** The request died on a reused keep-alive socket before any answer: the device closed it as we wrote; send again. */
export class StaleSocketError extends RackpilotError {
  constructor(where: string) {
    super('CONNECTION_CLOSED', `${where}: the kept-alive connection was closed by the device; retry`);
  }
}

export interface ExchangeLimits {
  host: string;
  port: number;
  connectTimeoutMs: number;
  maxResponseBytes: number;
}

function response(where: string, status: number, headers: http.IncomingHttpHeaders, buf: Buffer): HttpResponse {
  return {
    status,
    receivedAt: performance.now(),
    headers,
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
  };
}

export class HttpExchange {
  /** performance.now() when the request was handed over (to Node's http client or the OS). */
  readonly sentAt = performance.now();
  /** The request went over a pooled keep-alive socket (set by the transport once known). */
  reused = false;
  private connectingAt: number | undefined;
  private connected = false;
  private answered = false;
  private status = 0;
  private headers: http.IncomingHttpHeaders = {};
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private outcome: { err: RackpilotError } | { res: HttpResponse } | undefined;
  private notify: (() => void) | undefined;

  constructor(
    /** e.g. `POST http://10.0.0.5:80/api/v1/mining/stop`, for messages. */
    readonly where: string,
    private readonly lim: ExchangeLimits,
    /** Called once when the outcome is known (the transport releases or destroys its socket). */
    private readonly settle: (err: RackpilotError | null) => void,
  ) {}

  get settled(): boolean {
    return this.outcome !== undefined;
  }

  // ---- transport side --------------------------------------------------------

  /** A new TCP connection is being opened: the connect deadline applies from now. */
  connecting(): void {
    this.connectingAt = performance.now();
    this.notify?.();
  }

  /** The connection is open (or a pooled one was taken). */
  connect(): void {
    this.connected = true;
    this.notify?.();
  }

  /** A socket or request error. */
  fail(err: NodeJS.ErrnoException): void {
    const code = err.code ?? err.message;
    const { host, port } = this.lim;
    if (this.reused && !this.answered && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
      this.finish(new StaleSocketError(this.where));
    } else if (err.code?.startsWith('HPE_')) {
      this.malformed(code);
    } else if (!this.connected && err.code === 'ECONNREFUSED') {
      this.finish(new RackpilotError('CONNECT_REFUSED', `${this.where}: connection refused (is the web API enabled on port ${port}?)`, { host, port }));
    } else if (!this.connected && err.code !== 'ECONNRESET') {
      this.finish(new RackpilotError('UNREACHABLE', `${this.where}: cannot connect (${code})`, { host, port }));
    } else {
      this.finish(new RackpilotError('CONNECTION_CLOSED', `${this.where}: connection closed before the answer completed (${code}); retry`, { host, port }));
    }
  }

  /** What came back is not HTTP. */
  malformed(detail: string): void {
    this.finish(new RackpilotError('MALFORMED_RESPONSE', `${this.where}: the answer is not valid HTTP (${detail})`, { host: this.lim.host, port: this.lim.port }));
  }

  /** The answer broke off before it was complete. */
  cutOff(detail: string): void {
    this.finish(new RackpilotError('CONNECTION_CLOSED', `${this.where}: answer cut off${detail}`, { host: this.lim.host, port: this.lim.port }));
  }

  /** The status line and headers arrived; false when the answer is refused (too large). */
  head(status: number, headers: http.IncomingHttpHeaders): boolean {
    if (this.outcome) return false;
    this.answered = true;
    if (!(status >= 100 && status <= 999)) {
      // a status line the parsers accept (three digits) but no HTTP status, e.g. "000"
      this.finish(new RackpilotError('MALFORMED_RESPONSE', `${this.where}: answer has no valid HTTP status (${status})`));
      return false;
    }
    this.status = status;
    this.headers = headers;
    const max = this.lim.maxResponseBytes;
    const declared = Number(headers['content-length'] ?? '0');
    if (declared > max) {
      this.finish(new RackpilotError('RESPONSE_TOO_LARGE', `${this.where}: answer of ${declared} bytes exceeds ${max}`, { limit: max }));
      return false;
    }
    return true;
  }

  /** Body bytes; false once the answer is refused (too large). */
  body(chunk: Buffer): boolean {
    if (this.outcome) return false;
    const max = this.lim.maxResponseBytes;
    this.size += chunk.length;
    if (this.size > max) {
      this.finish(new RackpilotError('RESPONSE_TOO_LARGE', `${this.where}: answer exceeds ${max} bytes; refusing to buffer more`, { limit: max }));
      return false;
    }
    this.chunks.push(chunk);
    return true;
  }

  /** The answer ended; `complete`: it was whole (else it was cut off). */
  end(complete: boolean): void {
    if (!complete) {
      this.cutOff(` after ${this.size} bytes`);
      return;
    }
    this.finish(null, response(this.where, this.status, this.headers, Buffer.concat(this.chunks)));
  }

  private finish(err: RackpilotError | null, res?: HttpResponse): void {
    if (this.outcome) return;
    this.outcome = err ? { err } : { res: res as HttpResponse };
    this.settle(err);
    // as tcp-exchange.ts: the waiter's work runs after the other sockets ready now have been read
    if (this.notify) setImmediate(this.notify);
  }

  // ---- consumer side ---------------------------------------------------------

  /** Drops the exchange (nobody waits for its answer): the socket is destroyed. */
  cancel(): void {
    this.finish(new RackpilotError('CANCELLED', `${this.where}: cancelled`));
  }

  /**
   * The answer. The deadlines count from `sentAt` (the whole answer within
   * `timeoutMs`) and from when a new connection was started (connected
   * within connectTimeoutMs), however late this is called.
   */
  result(timeoutMs: number, signal?: AbortSignal): Promise<HttpResponse> {
    return new Promise<HttpResponse>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => this.cancel();
      const check = (): void => {
        clearTimeout(timer);
        const o = this.outcome;
        if (o) {
          this.notify = undefined;
          signal?.removeEventListener('abort', onAbort);
          if ('err' in o) reject(o.err);
          else resolve(o.res);
          return;
        }
        const { host, port, connectTimeoutMs } = this.lim;
        const now = performance.now();
        const overall = this.sentAt + timeoutMs;
        const connectBy = !this.connected && this.connectingAt !== undefined ? this.connectingAt + connectTimeoutMs : Infinity;
        timer = setTimeout(
          () => {
            if (connectBy < overall) {
              this.finish(
                new RackpilotError('CONNECT_TIMEOUT', `${this.where}: no TCP connection within ${connectTimeoutMs} ms (is the device powered and on this network?)`, { host, port }),
              );
            } else if (this.connected) {
              this.finish(new RackpilotError('READ_TIMEOUT', `${this.where}: no complete answer within ${timeoutMs} ms`, { host, port }));
            } else {
              this.finish(new RackpilotError('CONNECT_TIMEOUT', `${this.where}: no TCP connection within ${timeoutMs} ms`, { host, port }));
            }
          },
          Math.max(0, Math.min(overall, connectBy) - now),
        );
      };
      if (signal?.aborted) this.cancel();
      else signal?.addEventListener('abort', onAbort, { once: true });
      this.notify = check;
      check();
    });
  }
}
