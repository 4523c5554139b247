/**
 * Length-prefixed JSON over TCP (Whatsminer API v3, port 4433): every frame,
 * both ways, is a 4-byte little-endian unsigned length followed by that many
 * bytes of UTF-8 JSON. One request per connection: connect (deadline), write
 * one frame, read one frame (deadline), close. The length header is checked
 * against the size cap BEFORE any body byte is buffered. The request can be
 * encoded beforehand and started on its own (`encodeFrame`, `startLpjson`).
 */
import net from 'node:net';
import { RackpilotError } from './errors.js';
import { afterSends } from './send-batch.js';

export interface LpjsonEndpoint {
  host: string;
  port: number;
  connectTimeoutMs: number;
  /** Deadline from the request being written to the whole reply frame being read. */
  readTimeoutMs: number;
  /** Reply frames announcing more than this are refused unread (default 1 MiB). */
  maxFrameBytes?: number;
}

export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;
const HEADER = 4;

export function encodeFrame(value: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  const header = Buffer.alloc(HEADER);
  header.writeUInt32LE(body.length, 0);
  return Buffer.concat([header, body]);
}

/** Whether 4 header bytes look like the start of unframed text (a peer that does not speak this framing). */
function looksLikeText(h: Buffer): boolean {
  const first = h[0] ?? 0;
  if (first !== 0x7b && first !== 0x5b && first !== 0x3c && first !== 0x48) return false; // { [ < H
  return h.every((b) => b >= 0x20 && b < 0x7f);
}

/**
 * Incremental frame reader: feed chunks, get the body once complete. Throws
 * RackpilotError for a bad length (zero, over the cap, or unframed text).
 */
export class FrameReader {
  private header = Buffer.alloc(0);
  private need = -1;
  private chunks: Buffer[] = [];
  private got = 0;

  constructor(
    private readonly max: number,
    private readonly where: string,
  ) {}

  /** Bytes received so far (header included). */
  get received(): number {
    return this.header.length + this.got;
  }

  /** Length announced by the header, or -1 while it is incomplete. */
  get announced(): number {
    return this.need;
  }

  /** Returns the frame body once complete (extra bytes after it are ignored). */
  push(chunk: Buffer): Buffer | undefined {
    let rest = chunk;
    if (this.need < 0) {
      const take = Math.min(HEADER - this.header.length, rest.length);
      this.header = Buffer.concat([this.header, rest.subarray(0, take)]);
      rest = rest.subarray(take);
      if (this.header.length < HEADER) return undefined;
      const n = this.header.readUInt32LE(0);
      if (looksLikeText(this.header)) {
        throw new RackpilotError(
          'MALFORMED_RESPONSE',
          `${this.where}: reply is not length-prefixed (starts with ${JSON.stringify(this.header.toString('latin1'))}); is this the API v3 port?`,
        );
      }
      if (n === 0) throw new RackpilotError('MALFORMED_RESPONSE', `${this.where}: reply frame announces length 0`);
      if (n > this.max) {
        throw new RackpilotError('RESPONSE_TOO_LARGE', `${this.where}: reply frame announces ${n} bytes, over the ${this.max}-byte cap; refusing to read it`, {
          limit: this.max,
          announced: n,
        });
      }
      this.need = n;
    }
    if (rest.length > 0) {
      const take = Math.min(this.need - this.got, rest.length);
      this.chunks.push(rest.subarray(0, take));
      this.got += take;
    }
    return this.got >= this.need ? Buffer.concat(this.chunks, this.need) : undefined;
  }
}

/** Parses a frame body as JSON (MALFORMED_RESPONSE otherwise). */
export function parseFrame(body: Buffer, where: string): unknown {
  const text = body.toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    const snippet = text.length > 80 ? `${text.slice(0, 80)}…` : text;
    throw new RackpilotError('MALFORMED_RESPONSE', `${where}: reply frame is not JSON (${(err as Error).message}): ${JSON.stringify(snippet)}`, {
      bytes: body.length,
    });
  }
}

/**
 * One request on its own connection, in two phases so that a prepared frame
 * can go out with nothing else on the path (see ArmedAction): the
 * constructor connects and queues the bytes (Node sends them once connected)
 * and only records what happens; `result()` applies the deadlines, counted
 * from the start, and the abort signal. The reply frame is parsed as it
 * completes.
 */
export class LpjsonExchange {
  /** performance.now() when the request was handed to the OS. */
  readonly sentAt = performance.now();
  /** performance.now() when the exchange ended (reply complete, failed or cancelled). */
  endedAt: number | undefined;
  private readonly where: string;
  private readonly socket: net.Socket;
  private readonly reader: FrameReader;
  private connectedAt: number | undefined;
  private outcome: { err: RackpilotError | null; value: unknown } | undefined;
  private notify: (() => void) | undefined;

  constructor(
    private readonly ep: LpjsonEndpoint,
    frame: Buffer,
  ) {
    this.where = `${ep.host}:${ep.port}`;
    this.reader = new FrameReader(ep.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES, this.where);
    const socket = net.createConnection({ host: ep.host, port: ep.port });
    this.socket = socket;
    socket.setNoDelay(true);
    socket.write(frame);
    // every event of the socket comes later: its listeners can wait for the end of a batch of sends
    afterSends(() => {
      socket.once('connect', () => {
        this.connectedAt = performance.now();
        this.notify?.();
      });
      socket.on('data', (chunk: Buffer) => this.onData(chunk));
      socket.once('end', () => this.onEnd());
      socket.on('error', (err: NodeJS.ErrnoException) => this.onError(err));
    });
  }

  private finish(err: RackpilotError | null, value?: unknown): void {
    if (this.outcome) return;
    this.endedAt = performance.now();
    this.outcome = { err, value };
    this.socket.destroy();
    this.notify?.();
  }

  private onData(chunk: Buffer): void {
    if (this.outcome) return;
    let body: Buffer | undefined;
    try {
      body = this.reader.push(chunk);
    } catch (err) {
      this.finish(err as RackpilotError);
      return;
    }
    if (body === undefined) return;
    try {
      this.finish(null, parseFrame(body, this.where));
    } catch (err) {
      this.finish(err as RackpilotError);
    }
  }

  private onEnd(): void {
    const { host, port } = this.ep;
    const reader = this.reader;
    if (reader.received === 0) {
      this.finish(new RackpilotError('CONNECTION_CLOSED', `${this.where}: the miner closed the connection without a reply; retry`, { host, port }));
      return;
    }
    const what = reader.announced < 0 ? `${reader.received} of 4 header bytes` : `${reader.received - HEADER} of ${reader.announced} body bytes`;
    this.finish(new RackpilotError('MALFORMED_RESPONSE', `${this.where}: reply frame is truncated (${what}, then the connection closed)`, { bytes: reader.received }));
  }

  private onError(err: NodeJS.ErrnoException): void {
    const { host, port } = this.ep;
    // a reset before 'connect' is seen still means the miner was reached (it accepted and reset)
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

  /** The parsed reply frame; the connect and read deadlines count from the start. */
  result(signal?: AbortSignal): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => this.cancel();
      const check = (): void => {
        const o = this.outcome;
        if (o) {
          clearTimeout(timer);
          this.notify = undefined;
          signal?.removeEventListener('abort', onAbort);
          if (o.err) reject(o.err);
          else resolve(o.value);
          return;
        }
        // (re)arms the deadline of the phase the exchange is in
        clearTimeout(timer);
        const { host, port } = this.ep;
        if (this.connectedAt === undefined) {
          timer = setTimeout(
            () =>
              this.finish(
                new RackpilotError('CONNECT_TIMEOUT', `${this.where}: no TCP connection within ${this.ep.connectTimeoutMs} ms (is the miner powered and on this network?)`, { host, port }),
              ),
            Math.max(0, this.sentAt + this.ep.connectTimeoutMs - performance.now()),
          );
        } else {
          timer = setTimeout(() => {
            const r = this.reader;
            const what = r.announced < 0 ? 'no complete length header' : `${r.received - HEADER} of ${r.announced} body bytes`;
            this.finish(
              new RackpilotError('READ_TIMEOUT', `${this.where}: connected but the reply frame did not complete within ${this.ep.readTimeoutMs} ms (${what})`, {
                host,
                port,
                bytes: r.received,
              }),
            );
          }, Math.max(0, this.connectedAt + this.ep.readTimeoutMs - performance.now()));
        }
      };
      if (signal?.aborted) this.cancel();
      else signal?.addEventListener('abort', onAbort, { once: true });
      this.notify = check;
      check();
    });
  }
}

/** Starts one request whose frame was encoded beforehand (`encodeFrame`); `result()` gives the parsed reply. */
export function startLpjson(ep: LpjsonEndpoint, frame: Buffer): LpjsonExchange {
  return new LpjsonExchange(ep, frame);
}

/** Sends one JSON frame and resolves to the parsed reply frame. */
export function lpjsonExchange(ep: LpjsonEndpoint, request: unknown, signal?: AbortSignal): Promise<unknown> {
  if (signal?.aborted) return Promise.reject(new RackpilotError('CANCELLED', `${ep.host}:${ep.port}: request cancelled`));
  return startLpjson(ep, encodeFrame(request)).result(signal);
}
