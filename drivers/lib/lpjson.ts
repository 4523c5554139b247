/**
 * Length-prefixed JSON over TCP (Whatsminer API v3, port 4433): every frame,
 * both ways, is a 4-byte little-endian unsigned length followed by that many
 * bytes of UTF-8 JSON. One request per connection: connect (deadline), write
 * one frame, read one frame (deadline), close. The length header is checked
 * against the size cap BEFORE any body byte is buffered. The request can be
 * encoded beforehand and started on its own (`encodeFrame`, `startLpjson`).
 */
import { RackpilotError } from './errors.js';
import { TcpExchange } from './tcp-exchange.js';

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

/** One request on its own connection (see TcpExchange): the reply is one length-prefixed JSON frame, parsed as it completes. */
export class LpjsonExchange extends TcpExchange<unknown> {
  private readonly reader: FrameReader;

  constructor(ep: LpjsonEndpoint, frame: Buffer) {
    super(ep, frame);
    this.reader = new FrameReader(ep.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES, this.where);
  }

  protected onData(chunk: Buffer): void {
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

  protected onEnd(): void {
    const { host, port } = this.ep;
    const reader = this.reader;
    if (reader.received === 0) {
      this.finish(new RackpilotError('CONNECTION_CLOSED', `${this.where}: the miner closed the connection without a reply; retry`, { host, port }));
      return;
    }
    const what = reader.announced < 0 ? `${reader.received} of 4 header bytes` : `${reader.received - HEADER} of ${reader.announced} body bytes`;
    this.finish(new RackpilotError('MALFORMED_RESPONSE', `${this.where}: reply frame is truncated (${what}, then the connection closed)`, { bytes: reader.received }));
  }

  protected readTimeout(): RackpilotError {
    const { host, port, readTimeoutMs } = this.ep;
    const r = this.reader;
    const what = r.announced < 0 ? 'no complete length header' : `${r.received - HEADER} of ${r.announced} body bytes`;
    return new RackpilotError('READ_TIMEOUT', `${this.where}: connected but the reply frame did not complete within ${readTimeoutMs} ms (${what})`, {
      host,
      port,
      bytes: r.received,
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
