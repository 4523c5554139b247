/**
 * cgminer-family TCP API client (port 4028): one request per connection, the
 * reply is read to EOF and ends in a NUL byte. Every call has a connect
 * deadline and a read deadline, and replies are capped in size.
 */
import { RackpilotError } from '../errors.js';
import { TcpExchange } from '../tcp-exchange.js';
import type { DeviceEndpointConfig } from '../transports.js';
import { parseTolerantJson } from './tolerant-json.js';

export interface CgminerEndpoint {
  host: string;
  port: number;
  connectTimeoutMs: number;
  /** Deadline from the request being written to the peer closing the connection. */
  readTimeoutMs: number;
  /** Replies larger than this are cut off and reported (default 1 MiB). */
  maxResponseBytes?: number;
}

export const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;

/** A device block's cgminer API endpoint: its host, `port` (or another port of it, e.g. `apiPort`), timeouts and reply cap. */
export function cgminerEndpoint(cfg: DeviceEndpointConfig, port = cfg.port): CgminerEndpoint {
  return { host: cfg.host, port, connectTimeoutMs: cfg.timeouts.connectMs, readTimeoutMs: cfg.timeouts.readMs, maxResponseBytes: cfg.maxResponseBytes };
}

export interface CgminerStatus {
  STATUS: string;
  Code?: number;
  Msg?: string;
  When?: number;
  Description?: string;
}

export type CgminerReply = Record<string, unknown> & { STATUS?: CgminerStatus[] | CgminerStatus };

/** One cgminer request on its own connection (see TcpExchange): the reply is read to EOF, trailing NULs stripped. */
export class CgminerExchange extends TcpExchange<string> {
  private readonly chunks: Buffer[] = [];
  private size = 0;

  constructor(
    private readonly cep: CgminerEndpoint,
    request: string | Buffer,
  ) {
    super(cep, request);
  }

  protected onData(chunk: Buffer): void {
    const max = this.cep.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.size += chunk.length;
    if (this.size > max) {
      this.finish(
        new RackpilotError('RESPONSE_TOO_LARGE', `${this.where}: reply exceeds ${max} bytes; refusing to buffer more`, {
          host: this.cep.host,
          port: this.cep.port,
          limit: max,
        }),
      );
      return;
    }
    this.chunks.push(chunk);
  }

  protected onEnd(): void {
    const text = Buffer.concat(this.chunks).toString('utf8');
    let end = text.length;
    while (end > 0 && (text.charCodeAt(end - 1) === 0 || /\s/.test(text[end - 1] ?? ''))) end--;
    this.finish(null, text.slice(0, end));
  }

  protected readTimeout(): RackpilotError {
    const { host, port, readTimeoutMs } = this.cep;
    return new RackpilotError('READ_TIMEOUT', `${this.where}: connected but the reply did not complete within ${readTimeoutMs} ms (${this.size} bytes received)`, {
      host,
      port,
      bytes: this.size,
    });
  }
}

/** Starts one request (see CgminerExchange); `result()` gives its reply. */
export function startExchange(ep: CgminerEndpoint, request: string | Buffer): CgminerExchange {
  return new CgminerExchange(ep, request);
}

/** Sends raw bytes and returns the raw reply with trailing NULs stripped. */
export function cgminerExchange(ep: CgminerEndpoint, request: string | Buffer, signal?: AbortSignal): Promise<string> {
  if (signal?.aborted) return Promise.reject(new RackpilotError('CANCELLED', `${ep.host}:${ep.port}: request cancelled`));
  return startExchange(ep, request).result(signal);
}

function statusOf(reply: CgminerReply): CgminerStatus | undefined {
  const s = reply.STATUS;
  if (Array.isArray(s)) return s[0];
  if (s && typeof s === 'object') return s;
  return undefined;
}

/**
 * Throws DEVICE_ERROR (or AUTH_FAILED for code 45) when the reply's STATUS is
 * E (error) or F (fatal). `where` names the device and command.
 */
export function checkStatus(reply: CgminerReply, where: string): CgminerStatus {
  const st = statusOf(reply);
  if (!st || typeof st.STATUS !== 'string') {
    throw new RackpilotError('MALFORMED_RESPONSE', `${where}: reply has no STATUS section`);
  }
  if (st.STATUS === 'E' || st.STATUS === 'F') {
    const msg = st.Msg ?? 'no message';
    if (st.Code === 45) {
      throw new RackpilotError('AUTH_FAILED', `${where}: access denied by the miner (code 45: ${msg})`, { code: 45 });
    }
    throw new RackpilotError('DEVICE_ERROR', `${where}: miner answered error ${st.Code ?? '?'}: ${msg}`, {
      deviceCode: st.Code ?? null,
    });
  }
  return st;
}

export class CgminerClient {
  constructor(private readonly ep: CgminerEndpoint) {}

  get where(): string {
    return `${this.ep.host}:${this.ep.port}`;
  }

  /** The request bytes of one command (for a prepared send, see `start`). */
  encode(command: string, parameter?: string): Buffer {
    return Buffer.from(JSON.stringify(parameter === undefined ? { command } : { command, parameter }));
  }

  /** Starts a request encoded beforehand (`encode`); `result()` of the exchange gives the raw text for `parse`. */
  start(request: Buffer): CgminerExchange {
    return startExchange(this.ep, request);
  }

  /** The parsed reply of `command` from its raw text (no STATUS check). */
  parse(text: string, command: string): CgminerReply {
    const where = `${this.where} ${command}`;
    if (text.length === 0) {
      throw new RackpilotError('CONNECTION_CLOSED', `${where}: the miner closed the connection without a reply`);
    }
    const parsed = parseTolerantJson(text, where);
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new RackpilotError('MALFORMED_RESPONSE', `${where}: reply is not a JSON object`);
    }
    return parsed as CgminerReply;
  }

  /** Sends one command and returns the parsed reply (no STATUS check). */
  async raw(command: string, parameter?: string, signal?: AbortSignal): Promise<CgminerReply> {
    const req = parameter === undefined ? { command } : { command, parameter };
    return this.parse(await cgminerExchange(this.ep, JSON.stringify(req), signal), command);
  }

  /** Sends one command and throws on an error STATUS. */
  async command(command: string, parameter?: string, signal?: AbortSignal): Promise<CgminerReply> {
    const reply = await this.raw(command, parameter, signal);
    checkStatus(reply, `${this.where} ${command}`);
    return reply;
  }

  /**
   * Report commands joined with `+` in one request; the reply is keyed by
   * command, each an array holding one single-command reply. Firmwares that
   * reject joining get parallel single calls instead (and remember it).
   */
  private joinRejected = false;

  async multi(commands: readonly string[], signal?: AbortSignal): Promise<Record<string, CgminerReply>> {
    if (!this.joinRejected && commands.length > 1) {
      const reply = await this.raw(commands.join('+'), undefined, signal);
      const out: Record<string, CgminerReply> = {};
      let complete = true;
      for (const c of commands) {
        const part = reply[c];
        const first: unknown = Array.isArray(part) ? part[0] : undefined;
        if (first && typeof first === 'object') out[c] = first as CgminerReply;
        else complete = false;
      }
      if (complete) {
        for (const c of commands) checkStatus(out[c] as CgminerReply, `${this.where} ${c}`);
        return out;
      }
      this.joinRejected = true;
    }
    const replies = await Promise.all(commands.map((c) => this.command(c, undefined, signal)));
    return Object.fromEntries(commands.map((c, i) => [c, replies[i] as CgminerReply]));
  }
}
