/**
 * Whatsminer (btminer) API v2 driver: plaintext telemetry from `summary` and
 * `status`; curtail = encrypted `power_off` (respbefore), restore =
 * `power_on`, power target = `set_power_pct` (percent of the power limit),
 * each confirmed by read-back. `adjust_power_limit` is never sent: it reboots
 * the miner. The curtail can be armed: sealed ahead with the token held.
 */
import type { ActionOptions, ActionResult, ArmedAction, Capabilities, DeviceDriver, DeviceState, DriverContext, Reading } from '../contract.js';
import { CgminerClient, cgminerEndpoint, checkStatus, type CgminerReply } from '../lib/cgminer/client.js';
import { mean, num, sectionItems, type Obj } from '../lib/cgminer/fields.js';
import { actAndConfirm, type InFlightSend } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { ReadingTracker, type Sample } from '../lib/reading.js';
import type { V2Token } from './crypto.js';
import type { WhatsminerV2Config } from './schema.js';
import { asFlat, checkFlat, V2TokenCache, type FlatReply, type SentWrite } from './token.js';

/** The curtail: power_off, answered before the miner acts (respbefore). */
const CURTAIL_ARGS: Record<string, string> = { respbefore: 'true' };

export class WhatsminerV2Driver implements DeviceDriver {
  readonly kind = 'asic' as const;
  readonly driverId = 'whatsminer-v2';
  readonly id: string;
  private readonly client: CgminerClient;
  private readonly tokens: V2TokenCache;
  private readonly tracker = new ReadingTracker();
  private learnedLimitW: number | undefined;
  /** The curtail sealed with a token (AES-ECB is deterministic: one encryption per token, however often it is armed). */
  private sealedCurtail: { t: V2Token; bytes: Buffer } | undefined;

  constructor(
    private readonly cfg: WhatsminerV2Config,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    const ep = cgminerEndpoint(cfg);
    this.client = new CgminerClient(ep);
    this.tokens = new V2TokenCache(this.client, ep, cfg.id, cfg.password, ctx.now, cfg.tokenRefreshMs);
  }

  /** Writes need the password; a power target also needs the power limit (config or first read). */
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

  private get ioMs(): number {
    return this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs;
  }

  /** Warms the write token off the hot path; a miner that is down now is simply unreachable (never throws). */
  async start(): Promise<void> {
    if (this.cfg.password === undefined) return;
    await this.warmToken();
  }

  stop(): Promise<void> {
    this.tokens.invalidate();
    return Promise.resolve();
  }

  private async warmToken(signal?: AbortSignal): Promise<void> {
    try {
      await withDeadline(`${this.id} get_token`, this.ioMs, (s) => this.tokens.get(s), signal);
    } catch (err) {
      this.ctx.logger.debug({ err: toRackpilotError(err).toJSON() }, 'token refresh failed');
    }
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const [summary, status] = await withDeadline(
        `${this.id} read`,
        opts.deadlineMs,
        (signal) => {
          // keep the write token warm here, off the curtail path; its failure never fails a read
          if (this.cfg.password !== undefined && !this.tokens.warm) void this.warmToken(signal);
          return Promise.all([this.client.raw('summary', undefined, signal), this.client.raw('status', undefined, signal)]);
        },
        opts.signal,
      );
      return this.tracker.ok(this.toSample(summary, status));
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  private toSample(summaryReply: CgminerReply, statusReply: CgminerReply): Sample {
    const where = `${this.id} (${this.client.where})`;
    checkStatus(summaryReply, `${where} summary`);
    const s = sectionItems(summaryReply, 'SUMMARY')[0];
    if (!s) throw new RackpilotError('MALFORMED_RESPONSE', `${where} summary: reply has no SUMMARY section`, { device: this.id });
    const st = checkFlat(asFlat(statusReply, `${where} status`), `${where} status`, this.id);
    const msg: Obj | undefined = st.Msg && typeof st.Msg === 'object' ? (st.Msg as Obj) : undefined;
    const mhs = num(s, 'MHS 1m', 'MHS 5s', 'MHS av');
    const hashrateThs = mhs === undefined ? null : Math.round(mhs / 1e4) / 100;
    const powerW = num(s, 'Power') ?? null;
    const limit = num(s, 'Power Limit');
    if (limit !== undefined && limit > 0) this.learnedLimitW = limit;
    const off = msg?.mineroff ?? msg?.btmineroff;
    const mineroff = off === 'true' || off === true ? true : off === 'false' || off === false ? false : null;
    const fan = mean([num(s, 'Fan Speed In'), num(s, 'Fan Speed Out')]);
    const fw = msg?.FirmwareVersion ?? msg?.['Firmware Version'];
    return {
      ts: this.ctx.now(),
      state: this.stateOf(mineroff, hashrateThs, powerW),
      powerW,
      fields: {
        hashrateThs,
        temperatureC: num(s, 'Temperature') ?? null,
        fanRpm: fan === undefined ? null : Math.round(fan),
        powerLimitW: limit ?? null,
        chipTempMaxC: num(s, 'Chip Temp Max') ?? null,
        envTempC: num(s, 'Env Temp') ?? null,
        powerMode: typeof s['Power Mode'] === 'string' ? s['Power Mode'] : null,
        mineroff,
        firmware: typeof fw === 'string' ? fw.replace(/'/g, '') : null,
      },
    };
  }

  private stateOf(mineroff: boolean | null, hashrateThs: number | null, powerW: number | null): DeviceState {
    const hashing = hashrateThs !== null && hashrateThs > 0;
    if (mineroff === true) return !hashing && powerW !== null && powerW <= this.cfg.sleepPowerMaxW ? 'curtailed' : 'transitioning';
    if (mineroff === false) return hashing ? 'running' : 'transitioning';
    return hashing ? 'running' : 'unknown';
  }

  private requireWrites(what: string): void {
    if (this.cfg.password === undefined) {
      throw new RackpilotError('UNSUPPORTED', `${this.id}: ${what} needs the miner's admin password; set "password" in its config`, { device: this.id });
    }
  }

  curtail(opts: ActionOptions): Promise<ActionResult> {
    this.requireWrites('curtail');
    return this.act('power_off', CURTAIL_ARGS, 'state "curtailed"', (r) => r.state === 'curtailed', opts);
  }

  /**
   * `power_off` sealed with the token held while it is warm; fire() opens
   * the connection and queues the bytes, nothing else. The sealed request
   * carries no time of its own: it is good for as long as its token (30 min
   * on the miner; renewed by read() after `tokenRefreshMs`). A token the
   * miner refuses gets the plain path's fresh token and one retry.
   */
  armCurtail(): ArmedAction | undefined {
    if (this.cfg.password === undefined) return undefined;
    const t = this.tokens.usable();
    if (t === undefined) return undefined;
    if (this.sealedCurtail?.t !== t) this.sealedCurtail = { t, bytes: this.tokens.seal(t, 'power_off', CURTAIL_ARGS) };
    const bytes = this.sealedCurtail.bytes;
    return {
      fire: () => {
        if (!this.tokens.holds(t)) return undefined;
        const ex = this.client.start(bytes);
        let answer: FlatReply | undefined;
        const sent: SentWrite = { token: t, reply: async (signal) => (answer = this.tokens.reply(t, await ex.result(signal), 'power_off')) };
        return {
          // an exchange nobody waited for (the action ended before its wait) is dropped, not left open
          complete: (opts) =>
            this.act('power_off', CURTAIL_ARGS, 'state "curtailed"', (r) => r.state === 'curtailed', opts, {
              sentAt: ex.sentAt,
              wait: async (signal) => {
                const reply = await this.tokens.write('power_off', CURTAIL_ARGS, signal, sent);
                // acknowledged by the prepared send itself, not by a retry with a fresh token
                return reply === answer ? ex.endedAt : undefined;
              },
            }).finally(() => ex.cancel()),
        };
      },
    };
  }

  restore(opts: ActionOptions): Promise<ActionResult> {
    this.requireWrites('restore');
    return this.act('power_on', {}, 'state "running"', (r) => r.state === 'running', opts);
  }

  /**
   * Watts -> percent of the power limit, rounded to a whole percent (the API's unit),
   * sent with `set_power_pct` (temporary, no reboot). Confirmed when read-back power is
   * within the tolerance of percent x limit.
   */
  setPowerTarget(watts: number, opts: ActionOptions): Promise<ActionResult> {
    this.requireWrites('a power target');
    const range = this.capabilities.powerTarget;
    const limit = this.cfg.fullPowerW ?? this.learnedLimitW;
    if (!range || limit === undefined) {
      return Promise.reject(
        new RackpilotError('UNSUPPORTED', `${this.id}: power limit unknown; set "fullPowerW" in its config or let one read succeed first`, { device: this.id }),
      );
    }
    if (!Number.isFinite(watts) || watts < range.minW || watts > range.maxW) {
      return Promise.reject(new RackpilotError('UNSUPPORTED', `${this.id}: power target ${watts} W is outside ${range.minW}..${range.maxW} W`, { device: this.id }));
    }
    const percent = Math.min(100, Math.max(this.cfg.minPowerPercent, Math.round((watts / limit) * 100)));
    const expectW = (limit * percent) / 100;
    const tol = Math.max(50, expectW * this.cfg.powerTargetTolerance);
    return this.act(
      'set_power_pct',
      { percent: String(percent) },
      `${Math.round(expectW)} W (${percent} % of ${limit} W) within ${Math.round(tol)} W`,
      (r) => r.state === 'running' && r.powerW !== null && Math.abs(r.powerW - expectW) <= tol,
      opts,
    );
  }

  private act(
    cmd: string,
    args: Record<string, string>,
    want: string,
    confirmed: (r: Reading) => boolean,
    opts: ActionOptions,
    inFlight?: InFlightSend,
  ): Promise<ActionResult> {
    return actAndConfirm(
      {
        deviceId: this.id,
        what: cmd,
        want,
        ...(inFlight ? { inFlight } : {}),
        send: async (signal) => {
          await this.tokens.write(cmd, args, signal);
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

