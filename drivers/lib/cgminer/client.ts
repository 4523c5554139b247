/**
 * cgminer-family TCP API client (port 4028): one request per connection, the
 * reply is read to EOF and ends in a NUL byte. Every call has a connect
 * deadline and a read deadline, and replies are capped in size.
 */
import net from 'node:net';
import { RackpilotError } from '../errors.js';
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

/** Sends raw bytes and returns the raw reply with trailing NULs stripped. */
export function cgminerExchange(ep: CgminerEndpoint, request: string, signal?: AbortSignal): Promise<string> {
  const where = `${ep.host}:${ep.port}`;
  const max = ep.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  return new Promise<string>((resolve, reject) => {
    if (signal?.aborted) {
      reject(new RackpilotError('CANCELLED', `${where}: request cancelled`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    let connected = false;
    const socket = net.createConnection({ host: ep.host, port: ep.port });
    socket.setNoDelay(true);

    const finish = (err: RackpilotError | null, value?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      clearTimeout(readTimer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if (err) reject(err);
      else resolve(value ?? '');
    };
    const onAbort = (): void => finish(new RackpilotError('CANCELLED', `${where}: request cancelled`));
    signal?.addEventListener('abort', onAbort, { once: true });

    const connectTimer = setTimeout(() => {
      finish(
        new RackpilotError(
          'CONNECT_TIMEOUT',
          `${where}: no TCP connection within ${ep.connectTimeoutMs} ms (is the miner powered and on this network?)`,
          { host: ep.host, port: ep.port },
        ),
      );
    }, ep.connectTimeoutMs);
    let readTimer: NodeJS.Timeout | undefined;

    socket.once('connect', () => {
      connected = true;
      clearTimeout(connectTimer);
      readTimer = setTimeout(() => {
        finish(
          new RackpilotError(
            'READ_TIMEOUT',
            `${where}: connected but the reply did not complete within ${ep.readTimeoutMs} ms (${size} bytes received)`,
            { host: ep.host, port: ep.port, bytes: size },
          ),
        );
      }, ep.readTimeoutMs);
      socket.write(request);
    });
    socket.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        finish(
          new RackpilotError('RESPONSE_TOO_LARGE', `${where}: reply exceeds ${max} bytes; refusing to buffer more`, {
            host: ep.host,
            port: ep.port,
            limit: max,
          }),
        );
        return;
      }
      chunks.push(chunk);
    });
    socket.once('end', () => {
      let text = Buffer.concat(chunks).toString('utf8');
      let end = text.length;
      while (end > 0 && (text.charCodeAt(end - 1) === 0 || /\s/.test(text[end - 1] ?? ''))) end--;
      text = text.slice(0, end);
      finish(null, text);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      // A reset can surface before 'connect' is seen when the peer accepts and
      // resets at once: the miner was reached, so it is a closed connection.
      const reset = err.code === 'ECONNRESET' || err.code === 'EPIPE';
      if (!connected && !reset) {
        const refused = err.code === 'ECONNREFUSED';
        finish(
          new RackpilotError(
            refused ? 'CONNECT_REFUSED' : 'UNREACHABLE',
            refused
              ? `${where}: connection refused (is the API enabled on port ${ep.port}?)`
              : `${where}: cannot connect (${err.code ?? err.message})`,
            { host: ep.host, port: ep.port },
          ),
        );
      } else {
        finish(
          new RackpilotError('CONNECTION_CLOSED', `${where}: the miner closed the connection before the reply completed (${err.code ?? err.message}); retry`, {
            host: ep.host,
            port: ep.port,
          }),
        );
      }
    });
  });
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

  /** Sends one command and returns the parsed reply (no STATUS check). */
  async raw(command: string, parameter?: string, signal?: AbortSignal): Promise<CgminerReply> {
    const req = parameter === undefined ? { command } : { command, parameter };
    const text = await cgminerExchange(this.ep, JSON.stringify(req), signal);
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
