/**
 * One request on its own TCP connection, in two phases so that a prepared
 * request can go out with nothing else on the path (see ArmedAction in
 * drivers/contract.ts): the constructor connects and queues the bytes (Node
 * sends them once connected) and only records what happens; `result()`
 * applies the connect and read deadlines, counted from the start, and the
 * abort signal. How the reply is framed is the subclass's: read to EOF (the
 * cgminer API) or a length-prefixed frame (Whatsminer v3).
 */
import net from 'node:net';
import { RackpilotError } from './errors.js';
import { afterSends, answerTracker } from './send-batch.js';
import { closeLater } from './socket-reaper.js';

export interface TcpExchangeEndpoint {
  host: string;
  port: number;
  connectTimeoutMs: number;
  /** Deadline from the connection being open to the reply being complete. */
  readTimeoutMs: number;
}

export abstract class TcpExchange<T> {
  /** performance.now() when the request was handed to the OS. */
  readonly sentAt = performance.now();
  /** performance.now() when the exchange ended (reply complete, failed or cancelled). */
  endedAt: number | undefined;
  protected readonly where: string;
  private readonly socket: net.Socket;
  private connectedAt: number | undefined;
  private outcome: { err: RackpilotError | null; value: T | undefined } | undefined;
  private notify: (() => void) | undefined;
  /** Tells the batch of sends this was started in that it ended (send-batch.ts). */
  private readonly ended = answerTracker();

  constructor(
    protected readonly ep: TcpExchangeEndpoint,
    request: string | Buffer,
  ) {
    this.where = `${ep.host}:${ep.port}`;
    // half-open allowed: a peer's FIN (the cgminer API's end of reply) leaves the close to finish(), which
    // can put it off the hot path (socket-reaper.ts) instead of Node ending and destroying the socket at once
    const socket = net.createConnection({ host: ep.host, port: ep.port, allowHalfOpen: true });
    this.socket = socket;
    socket.setNoDelay(true);
    socket.write(request);
    // every event of the socket comes later: its listeners can wait for the end of a batch of sends
    afterSends(() => {
      socket.once('connect', () => {
        this.connectedAt = performance.now();
        this.notify?.();
      });
      socket.on('data', (chunk: Buffer) => {
        if (!this.outcome) this.onData(chunk);
      });
      socket.once('end', () => this.onEnd());
      socket.on('error', (err: NodeJS.ErrnoException) => this.onError(err));
    });
  }

  /** A chunk of the reply (never after the exchange ended). */
  protected abstract onData(chunk: Buffer): void;
  /** The peer closed its side. */
  protected abstract onEnd(): void;
  /** The READ_TIMEOUT error, saying how much of the reply had come. */
  protected abstract readTimeout(): RackpilotError;

  /** Ends the exchange once: the reply (`err` null) or why not; the connection is closed (after a reply, soon). */
  protected finish(err: RackpilotError | null, value?: T): void {
    if (this.outcome) return;
    this.endedAt = performance.now();
    this.outcome = { err, value };
    if (err === null) closeLater(this.socket);
    else this.socket.destroy();
    this.ended?.();
    // the waiter's work (parsing, confirming, the engine's bookkeeping) runs after the other sockets
    // that are ready now have been read, so their answers are taken when they arrived, not after ours
    if (this.notify) setImmediate(this.notify);
  }

  private onError(err: NodeJS.ErrnoException): void {
    const { host, port } = this.ep;
    // a reset can surface before 'connect' is seen when the peer accepts and resets at once:
    // the miner was reached, so it is a closed connection
    const reset = err.code === 'ECONNRESET' || err.code === 'EPIPE';
    if (this.connectedAt === undefined && !reset) {
      const refused = err.code === 'ECONNREFUSED';
      this.finish(
        new RackpilotError(
          refused ? 'CONNECT_REFUSED' : 'UNREACHABLE',
          refused ? `${this.where}: connection refused (is the API enabled on port ${port}?)` : `${this.where}: cannot connect (${err.code ?? err.message})`,
          { host, port },
        ),
      );
    } else {
      this.finish(
        new RackpilotError('CONNECTION_CLOSED', `${this.where}: the miner closed the connection before the reply completed (${err.code ?? err.message}); retry`, { host, port }),
      );
    }
  }

  /** Drops the exchange (nobody waits for it). */
  cancel(): void {
    this.finish(new RackpilotError('CANCELLED', `${this.where}: request cancelled`));
  }

  /** The reply; the connect and read deadlines count from the start. */
  result(signal?: AbortSignal): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => this.cancel();
      const check = (): void => {
        const o = this.outcome;
        if (o) {
          clearTimeout(timer);
          this.notify = undefined;
          signal?.removeEventListener('abort', onAbort);
          if (o.err) reject(o.err);
          else resolve(o.value as T);
          return;
        }
        // (re)arms the deadline of the phase the exchange is in
        clearTimeout(timer);
        const { host, port, connectTimeoutMs, readTimeoutMs } = this.ep;
        if (this.connectedAt === undefined) {
          timer = setTimeout(
            () =>
              this.finish(
                new RackpilotError('CONNECT_TIMEOUT', `${this.where}: no TCP connection within ${connectTimeoutMs} ms (is the miner powered and on this network?)`, { host, port }),
              ),
            Math.max(0, this.sentAt + connectTimeoutMs - performance.now()),
          );
        } else {
          timer = setTimeout(() => this.finish(this.readTimeout()), Math.max(0, this.connectedAt + readTimeoutMs - performance.now()));
        }
      };
      if (signal?.aborted) this.cancel();
      else signal?.addEventListener('abort', onAbort, { once: true });
      this.notify = check;
      check();
    });
  }
}
