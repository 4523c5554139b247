/**
 * The floor of the signal-to-dispatch benchmark: the least any software can
 * take to send the agent's commands to the rack. What each device's
 * connections carried from the signal until that device acknowledged
 * (captured by the wire probe during a warm-up trial) is replayed raw to the
 * same simulators with nothing else running:
 *  - a fresh TCP connection where the agent opened one (the cgminer API: one
 *    command per connection, read to EOF), written once connected;
 *  - a connection opened beforehand and kept warm where the agent reused one
 *    (HTTP keep-alive);
 *  - an HTTP/2 session opened beforehand for gRPC, the same headers and body.
 * A device's exchanges run one after the other, each once the previous was
 * answered; the answer is complete at EOF, at the end of the HTTP response,
 * at the end of a length-prefixed frame, or when as many bytes as the agent
 * got have arrived (whichever applies to what the agent saw).
 */
import http2 from 'node:http2';
import net from 'node:net';
import { hrNow } from './stats.js';
import type { Trace } from './wire-probe.js';

export interface FloorExchange {
  kind: 'fresh' | 'warm' | 'h2';
  dest: string;
  host: string;
  port: number;
  /** TCP: the bytes the agent wrote. */
  bytes: Buffer;
  /** HTTP/2: the request's headers and body. */
  headers?: http2.OutgoingHttpHeaders;
  until: 'eof' | 'http' | 'frame' | 'count' | 'h2';
  /** `count`: bytes the agent received. */
  expectBytes: number;
  /** Outcome of the agent's answer (HTTP status, cgminer STATUS, code, grpc-status), to check the replay's against. */
  signature: string | undefined;
}

/** Per device (by id), its exchanges in order. */
export type FloorPlan = Map<string, FloorExchange[]>;

export interface FloorTrial {
  /** Per device: when its first exchange was issued and when its last answer arrived (hr ms). */
  sent: Map<string, number>;
  answered: Map<string, number>;
  t0: number;
  /** Devices whose replay failed (error or timeout), with why. */
  failed: Map<string, string>;
  /** Devices whose answer's outcome differed from the agent's. */
  mismatched: string[];
}

const HTTP_REQUEST = /^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) \S+ HTTP\/1\.[01]\r\n/;

function splitDest(dest: string): { host: string; port: number } {
  const i = dest.lastIndexOf(':');
  return { host: dest.slice(0, i), port: Number(dest.slice(i + 1)) };
}

/** The outcome an answer carries, for comparing the replay's with the agent's (undefined: none found, e.g. encrypted). */
export function signatureOf(reply: Buffer): string | undefined {
  const text = reply.subarray(0, 8192).toString('latin1');
  const parts: string[] = [];
  const h = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  if (h?.[1]) parts.push(`http ${h[1]}`);
  const st = /"STATUS"\s*:\s*(?:\[\s*\{\s*"STATUS"\s*:\s*)?"(\w)"/.exec(text);
  if (st?.[1]) parts.push(`STATUS ${st[1]}`);
  else {
    const code = /"code"\s*:\s*"?(-?\w+)"?/.exec(text);
    if (code?.[1]) parts.push(`code ${code[1]}`);
  }
  return parts.length > 0 ? parts.join(', ') : undefined;
}

/**
 * Turns a capture into the floor's plan: for each device, what its
 * connections carried up to its acknowledgement (`ackAt`, hr ms).
 * Destinations that belong to no device (the MQTT broker) are left out.
 */
export function planFromCapture(traces: readonly Trace[], ackAt: ReadonlyMap<string, number>, deviceOf: ReadonlyMap<string, string>): { plan: FloorPlan; problems: string[] } {
  const items: { device: string; at: number; ex: FloorExchange }[] = [];
  const problems: string[] = [];
  for (const t of traces) {
    const device = deviceOf.get(t.dest);
    if (device === undefined) continue;
    const cut = ackAt.get(device);
    if (cut === undefined) {
      problems.push(`${device}: no acknowledgement in the capture trial`);
      continue;
    }
    const { host, port } = splitDest(t.dest);
    if (t.type === 'h2') {
      if (t.at > cut) continue;
      const signature = t.grpcStatus === undefined ? undefined : `grpc-status ${t.grpcStatus}`;
      items.push({ device, at: t.at, ex: { kind: 'h2', dest: t.dest, host, port, bytes: Buffer.concat(t.body), headers: t.headers, until: 'h2', expectBytes: 0, signature } });
      continue;
    }
    const writes = t.writes.filter((w) => w.at <= cut);
    if (writes.length === 0) continue;
    // an exchange: the writes up to the first byte of an answer; its answer: the reads until the next exchange or the ack
    const groups: { at: number; bytes: Buffer[]; last: number }[] = [];
    for (const w of writes) {
      const g = groups.at(-1);
      if (g && !t.reads.some((r) => r.at > g.last && r.at < w.at)) {
        g.bytes.push(w.bytes);
        g.last = w.at;
      } else groups.push({ at: w.at, bytes: [w.bytes], last: w.at });
    }
    groups.forEach((g, i) => {
      const nextAt = groups[i + 1]?.at ?? cut;
      const reply = Buffer.concat(t.reads.filter((r) => r.at > g.last && r.at <= nextAt).map((r) => r.bytes));
      const bytes = Buffer.concat(g.bytes);
      const eof = t.endAt !== undefined && t.endAt > g.last && t.endAt <= nextAt;
      const head = bytes.subarray(0, 64).toString('latin1');
      const until: FloorExchange['until'] = eof
        ? 'eof'
        : HTTP_REQUEST.test(head)
          ? 'http'
          : bytes.length >= 4 && bytes.readUInt32LE(0) === bytes.length - 4
            ? 'frame'
            : 'count';
      const kind = t.fresh && i === 0 ? 'fresh' : 'warm';
      // later exchanges on a connection the agent opened during the trial go over that same (now warm) connection
      items.push({ device, at: g.at, ex: { kind, dest: t.dest, host, port, bytes, until, expectBytes: reply.length, signature: signatureOf(reply) } });
    });
  }
  items.sort((a, b) => a.at - b.at);
  const plan: FloorPlan = new Map();
  for (const it of items) {
    const list = plan.get(it.device) ?? [];
    list.push(it.ex);
    plan.set(it.device, list);
  }
  for (const d of ackAt.keys()) if (!plan.has(d)) problems.push(`${d}: acknowledged but nothing was captured on its connections`);
  return { plan, problems };
}

/** Whether `buf` holds a complete HTTP/1.1 response. */
function httpComplete(buf: Buffer): boolean {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const head = buf.subarray(0, end).toString('latin1');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
  if (status === 204 || status === 304 || (status >= 100 && status < 200)) return true;
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (cl?.[1] !== undefined) return buf.length - (end + 4) >= Number(cl[1]);
  if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) return buf.length >= end + 9 && buf.subarray(buf.length - 5).toString('latin1') === '0\r\n\r\n';
  return false; // read to EOF
}

function complete(ex: FloorExchange, buf: Buffer): boolean {
  switch (ex.until) {
    case 'http':
      return httpComplete(buf);
    case 'frame':
      return buf.length >= 4 && buf.length >= 4 + buf.readUInt32LE(0);
    case 'count':
      return buf.length >= ex.expectBytes;
    case 'eof':
    case 'h2':
      return false;
  }
}

interface Warm {
  socket: net.Socket;
  /** The exchange waiting for an answer on it, if any. */
  onData?: (b: Buffer) => void;
  onEnd?: () => void;
}

export class Floor {
  private readonly warm = new Map<string, Warm>();
  private readonly sessions = new Map<string, http2.ClientHttp2Session>();
  /** Fresh connections answered in the trial running, closed when it ends. */
  private readonly answeredSockets: net.Socket[] = [];

  constructor(readonly plan: FloorPlan) {}

  /** (Re)opens the warm connections and HTTP/2 sessions the plan needs (untimed, before each trial). */
  async prepare(): Promise<void> {
    const opening: Promise<void>[] = [];
    for (const [device, list] of this.plan) {
      for (const ex of list) {
        const key = `${device} ${ex.dest}`;
        if (ex.kind === 'warm' && !this.warmAlive(key)) opening.push(this.openWarm(key, ex));
        if (ex.kind === 'h2' && !this.sessionAlive(ex.dest)) opening.push(this.openSession(ex));
      }
    }
    await Promise.all(opening);
  }

  private warmAlive(key: string): boolean {
    const w = this.warm.get(key);
    return w !== undefined && !w.socket.destroyed && w.socket.readyState === 'open';
  }

  private sessionAlive(dest: string): boolean {
    const s = this.sessions.get(dest);
    return s !== undefined && !s.closed && !s.destroyed;
  }

  private openWarm(key: string, ex: FloorExchange): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: ex.host, port: ex.port });
      socket.setNoDelay(true);
      const w: Warm = { socket };
      socket.on('data', (b: Buffer) => w.onData?.(b));
      socket.on('end', () => w.onEnd?.());
      socket.on('close', () => w.onEnd?.());
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        socket.on('error', () => undefined);
        this.warm.set(key, w);
        resolve();
      });
    });
  }

  private openSession(ex: FloorExchange): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = http2.connect(`http://${ex.host}:${ex.port}`);
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        s.on('error', () => undefined);
        this.sessions.set(ex.dest, s);
        resolve();
      });
    });
  }

  /** One exchange; resolves with the answer's signature when it is complete. */
  private exchange(device: string, ex: FloorExchange): Promise<string | undefined> {
    switch (ex.kind) {
      case 'h2':
        return this.h2(ex);
      case 'fresh':
        return this.fresh(ex);
      case 'warm':
        return this.onWarm(`${device} ${ex.dest}`, ex);
    }
  }

  private fresh(ex: FloorExchange): Promise<string | undefined> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      // half-open allowed, closed after the trial: the agent closes its answered connections once its wave's
      // answers are in (drivers/lib/socket-reaper.ts), so the floor does not pay for closes in its window either
      const socket = net.connect({ host: ex.host, port: ex.port, allowHalfOpen: true });
      socket.setNoDelay(true);
      let answered = false;
      const done = (): void => {
        if (answered) return;
        answered = true;
        this.answeredSockets.push(socket);
        resolve(signatureOf(Buffer.concat(chunks)));
      };
      socket.once('connect', () => socket.write(ex.bytes));
      socket.on('data', (b: Buffer) => {
        chunks.push(b);
        size += b.length;
        if (ex.until !== 'eof' && complete(ex, size === b.length ? b : Buffer.concat(chunks))) done();
      });
      socket.once('end', done);
      socket.once('error', (err) => {
        socket.destroy();
        reject(err);
      });
    });
  }

  private onWarm(key: string, ex: FloorExchange): Promise<string | undefined> {
    const w = this.warm.get(key);
    if (!w || w.socket.destroyed) return Promise.reject(new Error(`warm connection to ${ex.dest} is not open`));
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      const finish = (ok: boolean): void => {
        w.onData = undefined;
        w.onEnd = undefined;
        if (ok) resolve(signatureOf(Buffer.concat(chunks)));
        else reject(new Error(`${ex.dest} closed the warm connection before answering`));
      };
      w.onData = (b) => {
        chunks.push(b);
        if (complete(ex, Buffer.concat(chunks))) finish(true);
      };
      w.onEnd = () => finish(chunks.length > 0);
      w.socket.write(ex.bytes);
    });
  }

  private h2(ex: FloorExchange): Promise<string | undefined> {
    const s = this.sessions.get(ex.dest);
    if (!s || s.destroyed) return Promise.reject(new Error(`HTTP/2 session to ${ex.dest} is not open`));
    return new Promise((resolve, reject) => {
      const stream = s.request(ex.headers ?? {});
      let status: string | undefined;
      let settled = false;
      const note = (h: http2.IncomingHttpHeaders): void => {
        const g = h['grpc-status'];
        if (g !== undefined) status = `grpc-status ${String(g)}`;
      };
      const done = (): void => {
        if (settled) return;
        settled = true;
        resolve(status);
      };
      stream.on('response', note);
      stream.on('trailers', (h: http2.IncomingHttpHeaders) => {
        note(h);
        done();
      });
      stream.on('end', done);
      stream.on('data', () => undefined);
      stream.once('error', (err: Error) => {
        if (!settled) {
          settled = true;
          reject(err);
        }
      });
      stream.end(ex.bytes);
    });
  }

  /** Replays every device's exchanges at once; each device's in order. */
  async trial(timeoutMs = 10_000): Promise<FloorTrial> {
    const sent = new Map<string, number>();
    const answered = new Map<string, number>();
    const failed = new Map<string, string>();
    const mismatched: string[] = [];
    const run = async (device: string, list: readonly FloorExchange[]): Promise<void> => {
      let i = 0;
      for (const ex of list) {
        if (i++ === 0) sent.set(device, hrNow());
        const sig = await this.exchange(device, ex);
        if (ex.signature !== undefined && sig !== ex.signature && !mismatched.includes(device)) mismatched.push(device);
      }
      answered.set(device, hrNow());
    };
    const t0 = hrNow();
    const all = [...this.plan].map(([device, list]) =>
      run(device, list).catch((err: unknown) => {
        failed.set(device, err instanceof Error ? err.message : String(err));
      }),
    );
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
    await Promise.race([Promise.all(all), timeout]);
    clearTimeout(timer);
    for (const d of this.plan.keys()) if (!answered.has(d) && !failed.has(d)) failed.set(d, `no answer within ${timeoutMs} ms`);
    for (const socket of this.answeredSockets.splice(0)) socket.destroy();
    return { sent, answered, t0, failed, mismatched };
  }

  /** How the plan replays, e.g. `fresh/eof 57, warm/http 28, h2 29`. */
  describe(): string {
    const counts = new Map<string, number>();
    for (const list of this.plan.values()) {
      for (const ex of list) {
        const k = ex.kind === 'h2' ? 'h2' : `${ex.kind}/${ex.until}`;
        counts.set(k, (counts.get(k) ?? 0) + 1);
      }
    }
    return [...counts].map(([k, n]) => `${k} ${n}`).join(', ');
  }

  async close(): Promise<void> {
    for (const socket of this.answeredSockets.splice(0)) socket.destroy();
    for (const w of this.warm.values()) w.socket.destroy();
    this.warm.clear();
    await Promise.all(
      [...this.sessions.values()].map(
        (s) =>
          new Promise<void>((r) => {
            if (s.closed || s.destroyed) r();
            else s.close(() => r());
            setTimeout(() => {
              s.destroy();
              r();
            }, 1000).unref();
          }),
      ),
    );
    this.sessions.clear();
  }
}
