/**
 * Keep-warm for the shared HttpClient: the agent touches a miner's web port
 * mostly for actions, and web servers drop kept-alive connections after a
 * few idle seconds (5 s is the default of lighttpd, Apache and Node), so
 * without this an action would find its connection gone and pay a fresh TCP
 * handshake (or, racing the server's close, an ECONNRESET and a retry).
 *
 * How it works, with no guess about the device:
 *  - the device's idle limit is learned: from a `Keep-Alive: timeout=N`
 *    answer header (Node's agent itself drops the socket 1 s before N), or
 *    from how long a pooled connection had been idle when it closed (the
 *    device's FIN, or our own idle timeout `idleSocketMs`, whichever is
 *    first). Until one is known our own idle timeout stands for it;
 *  - whenever the client has been idle for 70 % of that limit with a
 *    connection pooled, one ping goes over it (the agent reuses the most
 *    recently used one), which restarts the device's idle timer;
 *  - when the last pooled connection is gone anyway (a device restart, a
 *    limit learned too late, a server that closes after N requests), one
 *    ping opens a new one, no sooner than minIntervalMs after the last ping
 *    (or after the fired request that took the connection: a curtailment
 *    wave's answers come first).
 *    A ping that fails, or whose connection the device does not keep, ends
 *    the pinging until the driver's next request pools a connection again:
 *    a device that is down or never keeps connections is not pinged.
 * Cost: one ping (by default `GET /`, the web UI's index page) per device
 * every 0.7 x its idle limit (3.5 s against a 5 s limit, 42 s while only our
 * own 60 s idle timeout is known), and only while nothing else used the
 * port in that time; never more often than `minIntervalMs`, and none at all
 * for a device whose limit is shorter than minIntervalMs / 0.7 (it cannot be
 * kept warm without hammering it).
 */
import type net from 'node:net';
import { z } from 'zod';

export interface KeepWarmOptions {
  /**
   * The request that keeps the connection in use; any complete answer counts
   * (its status does not matter). Default: `GET /` through the client.
   */
  ping?: (signal: AbortSignal) => Promise<unknown>;
  /** Never ping more often than this (default KEEP_WARM_MIN_INTERVAL_MS). */
  minIntervalMs?: number;
}

export interface KeepWarmStats {
  /** The idle limit the pings are timed against (learned or our own idle timeout). */
  idleLimitMs: number;
  /** Whether that limit was learned from the device. */
  learned: boolean;
  pings: number;
  pingFailures: number;
  /** Pings sent because the last pooled connection had closed. */
  reopens: number;
  /** Set when the device's limit is too short to keep a connection warm. */
  disabled?: string;
}

/**
 * `keepWarm` of an HTTP-speaking device block: keep one connection to the
 * device's web port open between actions with a small request (`GET /`)
 * each time the port has been idle for 0.7 x the device's idle limit
 * (learned from the device: 3.5 s against the common 5 s), so a curtail
 * never waits for a TCP handshake. false: connect when needed.
 */
export const keepWarmSchema = z.boolean().default(true);

export const KEEP_WARM_MIN_INTERVAL_MS = 2_000;
/** Pings go out at this fraction of the idle limit. */
const PING_AT = 0.7;

export class KeepWarm {
  private readonly minIntervalMs: number;
  private limitMs: number;
  private learned = false;
  /** Pooled (idle) sockets and since when. */
  private readonly idle = new Map<net.Socket, number>();
  private readonly hooked = new WeakSet<net.Socket>();
  private inFlight = 0;
  /** The device has kept a connection for us (so reopening one is worth it). */
  private keeps = false;
  private timer: NodeJS.Timeout | undefined;
  private pinging: AbortController | undefined;
  /** When the last ping, or the last fired request (end(ok, true)), went out: a reopen waits minIntervalMs past it. */
  private lastPingAt = -Infinity;
  private closed = false;
  private readonly s = { pings: 0, pingFailures: 0, reopens: 0 };

  constructor(
    private readonly ping: (signal: AbortSignal) => Promise<unknown>,
    /** Deadline of one ping. */
    private readonly deadlineMs: number,
    /** Our own idle timeout: the limit until the device's is known, and a cap on it. */
    private readonly ownIdleMs: number,
    o: KeepWarmOptions = {},
  ) {
    this.minIntervalMs = o.minIntervalMs ?? KEEP_WARM_MIN_INTERVAL_MS;
    this.limitMs = ownIdleMs;
  }

  get stats(): KeepWarmStats {
    const disabled = this.every() === undefined ? `the device drops idle connections after ${Math.round(this.limitMs)} ms, too soon to keep one warm` : undefined;
    return { idleLimitMs: Math.round(this.limitMs), learned: this.learned, ...this.s, ...(disabled ? { disabled } : {}) };
  }

  /** A request starts (before it has a socket). */
  begin(): void {
    this.inFlight++;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * A request is over; `ok`: it was answered. `shot`: it was a fired request
   * (HttpClient.prepare), which takes its connection for good. Its
   * replacement then waits minIntervalMs like a ping would: shots come in
   * curtailment waves, where a new connection and a `GET /` to every device
   * would compete with the other devices' answers (in this process and in
   * the rack's network), and the wave's read-backs pool a connection anyway.
   */
  end(ok: boolean, shot = false): void {
    if (shot) this.lastPingAt = performance.now();
    this.inFlight--;
    if (this.closed || this.inFlight > 0) return;
    const every = this.every();
    if (every === undefined) return;
    if (this.idle.size > 0) this.arm(every);
    else if (ok && this.keeps) this.reopen();
  }

  /** A request got `s` (a pooled socket, or a new one). */
  taken(s: net.Socket): void {
    this.idle.delete(s);
    if (this.hooked.has(s)) return;
    this.hooked.add(s);
    s.once('close', () => this.closedSocket(s));
  }

  /** The agent pooled `s` after an answer (call after the agent's own 'free' handling). */
  pooled(s: net.Socket): void {
    if (s.destroyed) return;
    this.idle.set(s, performance.now());
    this.keeps = true;
  }

  /** A `Keep-Alive` answer header: `timeout=N` (s); Node's agent drops the socket at N - 1 s. */
  hint(header: string | string[] | undefined): void {
    const h = Array.isArray(header) ? header.join(',') : header;
    const n = h === undefined ? undefined : /(?:^|[\s,])timeout=(\d+)/i.exec(h)?.[1];
    if (n !== undefined) this.learn(Number(n) * 1000 - 1000);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pinging?.abort();
    this.idle.clear();
  }

  /** The latest observation wins (a limit can go up again after a spurious early close). */
  private learn(ms: number): void {
    this.limitMs = Math.min(this.ownIdleMs, Math.max(0, ms));
    this.learned = this.limitMs < this.ownIdleMs;
  }

  /** Ping interval for the current limit; undefined when the device cannot be kept warm. */
  private every(): number | undefined {
    const every = this.limitMs * PING_AT;
    return every >= this.minIntervalMs ? every : undefined;
  }

  private closedSocket(s: net.Socket): void {
    const since = this.idle.get(s);
    if (since === undefined) return; // closed during or right after a request: not an idle close
    this.idle.delete(s);
    if (this.closed) return;
    // closed while pooled: a connection does not survive being idle longer than this
    this.learn(performance.now() - since);
    if (this.idle.size === 0 && this.inFlight === 0 && this.every() !== undefined) this.reopen();
  }

  private reopen(): void {
    this.s.reopens++;
    this.arm(Math.max(0, this.lastPingAt + this.minIntervalMs - performance.now()));
  }

  private arm(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.fire();
    }, ms);
    this.timer.unref();
  }

  private async fire(): Promise<void> {
    if (this.closed || this.inFlight > 0 || this.pinging) return;
    const ctl = new AbortController();
    this.pinging = ctl;
    const deadline = setTimeout(() => ctl.abort(), this.deadlineMs);
    deadline.unref();
    this.lastPingAt = performance.now();
    this.s.pings++;
    let ok = true;
    try {
      await this.ping(ctl.signal);
    } catch {
      // a device that is down is the poller's business: no more pings until a request pools a connection
      ok = false;
      this.s.pingFailures++;
    } finally {
      clearTimeout(deadline);
      this.pinging = undefined;
    }
    if (this.idle.size === 0 && this.inFlight === 0) {
      // failed, or answered on a connection the device did not keep: stop until a request pools one
      if (ok) this.keeps = false;
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }
}
