/**
 * Whatsminer API v3 driver (firmware after 2024.11): length-prefixed JSON on
 * TCP 4433 (drivers/lib/lpjson.ts). Telemetry from `get.miner.status`
 * (summary); curtail = `set.miner.service` stop, restore = start, power
 * target = `set.miner.power_percent`, each confirmed by read-back. The salt
 * for the write token is fetched once (start()/read()) and reused, so the
 * hot path is one frame; `set.miner.power_limit` (restarts) is never sent.
 * The curtail can be armed: its frame encoded, token and all, ahead of time.
 */
import { createHash } from 'node:crypto';
import type { ActionOptions, ActionResult, ArmedAction, Capabilities, DeviceDriver, DeviceState, DriverContext, Reading } from '../contract.js';
import { maxOf, mean, num, type Obj } from '../lib/cgminer/fields.js';
import { actAndConfirm, type InFlightSend } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { encodeFrame, lpjsonExchange, startLpjson, type LpjsonEndpoint } from '../lib/lpjson.js';
import { ReadingTracker, type Sample } from '../lib/reading.js';
import type { WhatsminerV3Config } from './schema.js';

interface V3Reply {
  code: number;
  msg: unknown;
  desc?: unknown;
}

/**
 * An armed curtail's `ts` is the second it was armed in; fire() refuses one
 * older than this (the plain curtail then signs afresh). The miner's accepted
 * skew is not documented (api-facts.md): the engine re-arms every telemetry
 * cycle, so a fired `ts` is normally a few seconds old, and a miner that
 * refuses it (-4) gets the plain path's salt re-fetch and a freshly signed retry.
 */
export const ARMED_TS_MAX_AGE_S = 30;

/** A write answered by a frame already on the wire (an armed send): the salt it was signed with and its reply. */
interface SentWrite {
  salt: string;
  reply: (signal: AbortSignal) => Promise<V3Reply>;
}

/** token = first 8 characters of base64(sha256(cmd + password + salt + ts)). */
export function v3Token(cmd: string, password: string, salt: string, ts: number): string {
  return createHash('sha256').update(`${cmd}${password}${salt}${ts}`, 'utf8').digest('base64').slice(0, 8);
}

export class WhatsminerV3Driver implements DeviceDriver {
  readonly kind = 'asic' as const;
  readonly driverId = 'whatsminer-v3';
  readonly id: string;
  private readonly ep: LpjsonEndpoint;
  private readonly tracker = new ReadingTracker();
  private salt: string | undefined;
  private learnedLimitW: number | undefined;

  constructor(
    private readonly cfg: WhatsminerV3Config,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    this.ep = { host: cfg.host, port: cfg.port, connectTimeoutMs: cfg.timeouts.connectMs, readTimeoutMs: cfg.timeouts.readMs, maxFrameBytes: cfg.maxFrameBytes };
  }

  get capabilities(): Capabilities {
    const canWrite = this.cfg.password !== undefined;
    const limit = this.cfg.fullPowerW ?? this.learnedLimitW;
    return {
      curtail: canWrite,
      restore: canWrite,
      powerTarget: canWrite && limit !== undefined ? { minW: Math.ceil((limit * this.cfg.minPowerPercent) / 100), maxW: limit, reboots: false } : null,
      profiles: false,
      switchOutlet: false,
    };
  }

  private get where(): string {
    return `${this.id} (${this.cfg.host}:${this.cfg.port})`;
  }

  private get ioMs(): number {
    return this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs;
  }

  private call(request: Record<string, unknown>, signal?: AbortSignal): Promise<V3Reply> {
    return this.answer(String(request.cmd), lpjsonExchange(this.ep, request, signal));
  }

  /** The reply of `cmd` from its exchange, with the device named in every error. */
  private async answer(cmd: string, exchange: Promise<unknown>): Promise<V3Reply> {
    const where = `${this.where} ${cmd}`;
    let raw: unknown;
    try {
      raw = await exchange;
    } catch (err) {
      const e = toRackpilotError(err, { device: this.id });
      throw new RackpilotError(e.code, `${this.id}: ${e.message}`, { ...e.context, device: this.id }, { cause: e });
    }
    if (!raw || typeof raw !== 'object' || Array.isArray(raw) || typeof (raw as { code?: unknown }).code !== 'number') {
      throw new RackpilotError('MALFORMED_RESPONSE', `${where}: reply has no numeric "code"`, { device: this.id });
    }
    return raw as V3Reply;
  }

  private check(r: V3Reply, cmd: string): V3Reply {
    if (r.code === 0) return r;
    const msg = typeof r.msg === 'string' ? r.msg : JSON.stringify(r.msg);
    if (r.code === -4) {
      throw new RackpilotError(
        'AUTH_FAILED',
        `${this.where} ${cmd}: access denied by the miner (code -4: ${msg}). Check "username"/"password" in the config of ${this.id}, that API writes are enabled on the miner, and that this host's clock is right (tokens carry a timestamp)`,
        { device: this.id, deviceCode: -4 },
      );
    }
    throw new RackpilotError('DEVICE_ERROR', `${this.where} ${cmd}: miner answered error ${r.code}: ${msg}`, { device: this.id, deviceCode: r.code });
  }

  private async fetchSalt(signal?: AbortSignal): Promise<string> {
    const r = this.check(await this.call({ cmd: 'get.device.info', param: 'salt' }, signal), 'get.device.info');
    const salt = r.msg && typeof r.msg === 'object' ? (r.msg as Obj).salt : undefined;
    if (typeof salt !== 'string' || salt.length === 0) throw new RackpilotError('MALFORMED_RESPONSE', `${this.where} get.device.info: reply has no msg.salt`, { device: this.id });
    this.salt = salt;
    return salt;
  }

  private async warmSalt(signal?: AbortSignal): Promise<void> {
    if (this.salt !== undefined || this.cfg.password === undefined) return;
    try {
      await withDeadline(`${this.id} get salt`, this.ioMs, (s) => this.fetchSalt(s), signal);
    } catch (err) {
      this.ctx.logger.debug({ err: toRackpilotError(err).toJSON() }, 'salt fetch failed');
    }
  }

  async start(): Promise<void> {
    await this.warmSalt();
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const r = await withDeadline(
        `${this.id} read`,
        opts.deadlineMs,
        (signal) => {
          void this.warmSalt(signal);
          return this.call({ cmd: 'get.miner.status', param: 'summary' }, signal);
        },
        opts.signal,
      );
      return this.tracker.ok(this.toSample(this.check(r, 'get.miner.status')));
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  private toSample(r: V3Reply): Sample {
    const m = r.msg && typeof r.msg === 'object' ? (r.msg as Obj) : undefined;
    const s = m?.summary && typeof m.summary === 'object' && !Array.isArray(m.summary) ? (m.summary as Obj) : undefined;
    if (!s) throw new RackpilotError('MALFORMED_RESPONSE', `${this.where} get.miner.status: reply has no msg.summary object`, { device: this.id });
    const hash = num(s, 'hash-realtime', 'hash-1min', 'hash-average');
    const hashrateThs = hash === undefined ? null : Math.round(hash * 100) / 100;
    const powerW = num(s, 'power-realtime', 'power-5min') ?? null;
    const limit = num(s, 'power-limit');
    if (limit !== undefined && limit > 0) this.learnedLimitW = limit;
    const boards = Array.isArray(s['board-temperature']) ? (s['board-temperature'] as unknown[]).map((v) => (typeof v === 'number' ? v : undefined)) : [];
    const fan = mean([num(s, 'fan-speed-in'), num(s, 'fan-speed-out')]);
    return {
      ts: this.ctx.now(),
      state: this.stateOf(hashrateThs, powerW),
      powerW,
      fields: {
        hashrateThs,
        temperatureC: maxOf(boards) ?? num(s, 'chip-temp-max') ?? null,
        fanRpm: fan === undefined ? null : Math.round(fan),
        powerLimitW: limit ?? null,
        chipTempMaxC: num(s, 'chip-temp-max') ?? null,
        envTempC: num(s, 'environment-temperature') ?? null,
      },
    };
  }

  /** The summary has no documented "service stopped" flag: state comes from hashrate and power. */
  private stateOf(hashrateThs: number | null, powerW: number | null): DeviceState {
    if (hashrateThs !== null && hashrateThs > 0) return 'running';
    if (powerW !== null && powerW <= this.cfg.sleepPowerMaxW) return 'curtailed';
    return hashrateThs === null ? 'unknown' : 'transitioning';
  }

  /** A signed write request (the token covers cmd, salt and ts). */
  private writeRequest(cmd: string, param: unknown, password: string, salt: string, ts: number): Record<string, unknown> {
    return { cmd, param, ts, account: this.cfg.username, token: v3Token(cmd, password, salt, ts) };
  }

  /**
   * Sends a write; on access denied with a cached salt, fetches the salt again
   * and retries once. `sent`: the write already on the wire (an armed one),
   * signed with `sent.salt`; its reply is checked the same way.
   */
  private async write(cmd: string, param: unknown, signal: AbortSignal, sent?: SentWrite): Promise<V3Reply> {
    const password = this.cfg.password;
    if (password === undefined) throw new RackpilotError('UNSUPPORTED', `${this.id}: writes need "password" in its config`, { device: this.id });
    for (let attempt = 0; ; attempt++) {
      let r: V3Reply;
      let salt: string;
      let cached: boolean;
      if (attempt === 0 && sent) {
        ({ salt } = sent);
        cached = true;
        r = await sent.reply(signal);
      } else {
        cached = this.salt !== undefined;
        salt = this.salt ?? (await this.fetchSalt(signal));
        r = await this.call(this.writeRequest(cmd, param, password, salt, Math.floor(this.ctx.now() / 1000)), signal);
      }
      if (r.code === -4 && cached && attempt === 0) {
        if (this.salt === salt) this.salt = undefined;
        continue;
      }
      return this.check(r, cmd);
    }
  }

  private requireWrites(what: string): void {
    if (this.cfg.password === undefined) {
      throw new RackpilotError('UNSUPPORTED', `${this.id}: ${what} needs the API account's password; set "password" in its config`, { device: this.id });
    }
  }

  curtail(opts: ActionOptions): Promise<ActionResult> {
    this.requireWrites('curtail');
    return this.act('set.miner.service', 'stop', 'state "curtailed"', (r) => r.state === 'curtailed', opts);
  }

  /**
   * `set.miner.service stop`, signed with the salt held and this second's
   * `ts`, encoded as a frame now; fire() opens the connection and queues the
   * frame, nothing else. Undefined without a password or a salt yet.
   */
  armCurtail(): ArmedAction | undefined {
    const password = this.cfg.password;
    const salt = this.salt;
    if (password === undefined || salt === undefined) return undefined;
    const ts = Math.floor(this.ctx.now() / 1000);
    const frame = encodeFrame(this.writeRequest('set.miner.service', 'stop', password, salt, ts));
    const staleAfterMs = (ts + ARMED_TS_MAX_AGE_S) * 1000;
    return {
      fire: () => {
        if (this.salt !== salt || this.ctx.now() >= staleAfterMs) return undefined;
        const ex = startLpjson(this.ep, frame);
        let answer: V3Reply | undefined;
        const sent: SentWrite = { salt, reply: async (signal) => (answer = await this.answer('set.miner.service', ex.result(signal))) };
        return {
          // an exchange nobody waited for (the action ended before its wait) is dropped, not left open
          complete: (opts) =>
            this.act('set.miner.service', 'stop', 'state "curtailed"', (r) => r.state === 'curtailed', opts, {
              sentAt: ex.sentAt,
              wait: async (signal) => {
                const r = await this.write('set.miner.service', 'stop', signal, sent);
                // acknowledged by the armed frame itself, not by a retry signed afresh
                return r === answer ? ex.endedAt : undefined;
              },
            }).finally(() => ex.cancel()),
        };
      },
    };
  }

  restore(opts: ActionOptions): Promise<ActionResult> {
    this.requireWrites('restore');
    return this.act('set.miner.service', 'start', 'state "running"', (r) => r.state === 'running', opts);
  }

  setPowerTarget(watts: number, opts: ActionOptions): Promise<ActionResult> {
    this.requireWrites('a power target');
    const range = this.capabilities.powerTarget;
    const limit = this.cfg.fullPowerW ?? this.learnedLimitW;
    if (!range || limit === undefined) {
      return Promise.reject(new RackpilotError('UNSUPPORTED', `${this.id}: power limit unknown; set "fullPowerW" in its config or let one read succeed first`, { device: this.id }));
    }
    if (!Number.isFinite(watts) || watts < range.minW || watts > range.maxW) {
      return Promise.reject(new RackpilotError('UNSUPPORTED', `${this.id}: power target ${watts} W is outside ${range.minW}..${range.maxW} W`, { device: this.id }));
    }
    const percent = Math.min(100, Math.max(this.cfg.minPowerPercent, Math.round((watts / limit) * 100)));
    const expectW = (limit * percent) / 100;
    const tol = Math.max(50, expectW * this.cfg.powerTargetTolerance);
    return this.act(
      'set.miner.power_percent',
      { percent: String(percent), mode: 'normal' },
      `${Math.round(expectW)} W (${percent} % of ${limit} W) within ${Math.round(tol)} W`,
      (r) => r.state === 'running' && r.powerW !== null && Math.abs(r.powerW - expectW) <= tol,
      opts,
    );
  }

  private act(cmd: string, param: unknown, want: string, confirmed: (r: Reading) => boolean, opts: ActionOptions, inFlight?: InFlightSend): Promise<ActionResult> {
    const label = typeof param === 'string' ? `${cmd} ${param}` : cmd;
    return actAndConfirm(
      {
        deviceId: this.id,
        what: label,
        want,
        ...(inFlight ? { inFlight } : {}),
        send: async (signal) => {
          await this.write(cmd, param, signal);
        },
        read: (o) => this.read(o),
        confirmed,
        readDeadlineMs: this.ioMs,
        pollMs: this.cfg.confirmPollMs,
        now: this.ctx.now,
      },
      opts,
    );
  }
}
