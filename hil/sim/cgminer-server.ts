/**
 * Device side of the cgminer-family TCP API, for simulators: listens on an
 * ephemeral loopback port, reads one request per connection (JSON or
 * `cmd|param` text), answers JSON + NUL and closes, like the firmware does.
 * Faults are switchable at run time to exercise the client's defences.
 */
import net from 'node:net';
import type { Writable } from 'node:stream';
import { SimListener } from './listen.js';

export type Fault =
  | { kind: 'none' }
  /** Accept the connection, never answer, never close. */
  | { kind: 'silent' }
  /** Answer correctly after `delayMs`. */
  | { kind: 'slow'; delayMs: number }
  /** Answer bytes that are not JSON. */
  | { kind: 'garbage' }
  /** Send the first part of the reply, then close. */
  | { kind: 'truncate' }
  /** Send `bytes` bytes of padding without ever ending (size cap test). */
  | { kind: 'flood'; bytes: number }
  /** Close right after accepting, without reading. */
  | { kind: 'reset' };

export interface CgminerRequest {
  command: string;
  parameter: string | undefined;
}

/** Returns the JSON reply (object, or raw text for malformed-JSON personalities). */
export type CgminerHandler = (req: CgminerRequest) => unknown;

export interface CgminerServerOptions {
  host?: string;
  port?: number;
  handler: CgminerHandler;
  /**
   * Split `a+b` joined report commands and answer each (default true). False
   * hands the joined command to the handler as is, like stock Antminer builds
   * that reject joining.
   */
  splitJoined?: boolean;
  /**
   * Optional: sees each request's raw text first; a non-undefined result is
   * the reply (for personalities whose requests are not cgminer commands, e.g.
   * Whatsminer's encrypted `{"enc":1,"data":..}` writes).
   */
  raw?: (text: string) => unknown;
}

/**
 * The `flood` fault: writes `bytes` of padding in 64 KiB chunks, honouring
 * back-pressure, then calls `done` (an HTTP answer ends there; a raw TCP
 * peer just stops, never ending the reply).
 */
export function flood(out: Writable, bytes: number, done?: () => void): void {
  const chunk = Buffer.alloc(64 * 1024, 0x41);
  let sent = 0;
  const pump = (): void => {
    while (sent < bytes && !out.destroyed) {
      sent += chunk.length;
      if (!out.write(chunk)) {
        out.once('drain', pump);
        return;
      }
    }
    done?.();
  };
  pump();
}

export function statusSection(status: 'S' | 'I' | 'W' | 'E' | 'F', code: number, msg: string, description = 'sim') {
  return [{ STATUS: status, When: Math.floor(Date.now() / 1000), Code: code, Msg: msg, Description: description }];
}

export function parseRequest(text: string): CgminerRequest | undefined {
  const t = text.trim();
  if (t.startsWith('{')) {
    try {
      const j = JSON.parse(t) as { command?: unknown; parameter?: unknown };
      if (typeof j.command !== 'string') return undefined;
      return {
        command: j.command,
        parameter: j.parameter === undefined ? undefined : typeof j.parameter === 'string' ? j.parameter : JSON.stringify(j.parameter),
      };
    } catch {
      return undefined;
    }
  }
  if (t.length === 0) return undefined;
  const bar = t.indexOf('|');
  return bar < 0 ? { command: t, parameter: undefined } : { command: t.slice(0, bar), parameter: t.slice(bar + 1) };
}

export class CgminerServer {
  private readonly listener: SimListener;
  fault: Fault = { kind: 'none' };
  requests = 0;

  constructor(private readonly opts: CgminerServerOptions) {
    this.listener = new SimListener(net.createServer((s) => this.onConnection(s)));
  }

  listen(): Promise<{ host: string; port: number }> {
    return this.listener.listen(this.opts.host ?? '127.0.0.1', this.opts.port ?? 0);
  }

  get port(): number {
    return this.listener.port;
  }

  close(): Promise<void> {
    return this.listener.close();
  }

  private onConnection(s: net.Socket): void {
    this.listener.track(s);
    s.on('error', () => s.destroy());
    const fault = this.fault;
    if (fault.kind === 'reset') {
      s.resetAndDestroy();
      return;
    }
    let buf = '';
    let done = false;
    const onData = (chunk: Buffer): void => {
      if (done) return;
      buf += chunk.toString('utf8');
      // The firmware does one recv; a JSON request may still arrive in pieces on slow links.
      if (buf.trimStart().startsWith('{')) {
        try {
          JSON.parse(buf);
        } catch {
          if (buf.length < 8192) return;
        }
      }
      done = true;
      this.requests++;
      this.answer(s, buf, fault);
    };
    s.on('data', onData);
  }

  private answer(s: net.Socket, text: string, fault: Fault): void {
    switch (fault.kind) {
      case 'silent':
        return;
      case 'garbage':
        s.end(Buffer.concat([Buffer.from('\x07\xffnot json at all {{{ ]]', 'latin1'), Buffer.from([0])]));
        return;
      case 'flood':
        flood(s, fault.bytes);
        return;
      case 'reset':
      case 'none':
      case 'slow':
      case 'truncate':
        break;
    }
    const req = parseRequest(text);
    const pre = this.opts.raw?.(text);
    let body: string;
    if (pre !== undefined) {
      body = typeof pre === 'string' ? pre : JSON.stringify(pre);
    } else if (!req) {
      body = JSON.stringify({ STATUS: statusSection('E', 23, 'Invalid JSON') });
    } else {
      const replies = req.command.includes('+') && this.opts.splitJoined !== false
        ? Object.fromEntries(
            req.command.split('+').map((c) => [c, [this.opts.handler({ command: c, parameter: req.parameter })]]),
          )
        : this.opts.handler(req);
      body = typeof replies === 'string' ? replies : JSON.stringify(replies);
    }
    const bytes = Buffer.concat([Buffer.from(body, 'utf8'), Buffer.from([0])]);
    if (fault.kind === 'truncate') {
      s.end(bytes.subarray(0, Math.max(1, Math.floor(bytes.length / 2))));
      return;
    }
    if (fault.kind === 'slow') {
      const t = setTimeout(() => {
        if (!s.destroyed) s.end(bytes);
      }, fault.delayMs);
      s.once('close', () => clearTimeout(t));
      return;
    }
    s.end(bytes);
  }
}
