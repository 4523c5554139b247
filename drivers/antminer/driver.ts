/**
 * Bitmain stock Antminer driver. Telemetry: `summary` + `stats` over the
 * cgminer-family TCP API (stock builds reject joined commands; the client
 * falls back to parallel calls and remembers). Actions: the web CGI
 * (HTTP Digest): the cached config is echoed to set_miner_conf.cgi with
 * BOTH mode keys (`bitmain-work-mode` and `miner-mode`) set; the CGI may
 * take ~20 s to answer and then restarts bmminer, so the answer is not
 * awaited beyond `ackWaitMs`: read-back decides (not hashing and power at
 * most sleepPowerMaxW).
 */
import type { ActionOptions, ActionResult, ArmedAction, Capabilities, DeviceDriver, DeviceState, DriverContext, Profile, Reading } from '../contract.js';
import { CgminerClient, cgminerEndpoint, type CgminerReply } from '../lib/cgminer/client.js';
import { maxOf, mean, num, sectionItems } from '../lib/cgminer/fields.js';
import { actAndConfirm } from '../lib/confirm.js';
import { sleep, withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { httpEndpoint, type FiredRequest } from '../lib/http.js';
import { ReadingTracker, type Sample } from '../lib/reading.js';
import { AntminerCgi, type ArmedSetConf } from './cgi.js';
import { ANTMINER_WORK_MODES, type AntminerConfig } from './schema.js';

const TELEMETRY = ['summary', 'stats'] as const;
type ModeName = keyof typeof ANTMINER_WORK_MODES;

/** Sets a mode key keeping the type the firmware used for it (string "1" or number 1). */
function withMode(conf: Record<string, unknown>, mode: number): Record<string, unknown> {
  const wm = conf['bitmain-work-mode'];
  const mm = conf['miner-mode'];
  return {
    ...conf,
    'bitmain-work-mode': typeof wm === 'number' ? mode : String(mode),
    'miner-mode': typeof mm === 'string' ? String(mode) : mode,
  };
}

function modeOf(conf: Record<string, unknown> | undefined): number | null {
  if (!conf) return null;
  for (const k of ['miner-mode', 'bitmain-work-mode']) {
    const v = conf[k];
    const n = typeof v === 'number' ? v : typeof v === 'string' && v !== '' ? Number(v) : NaN;
    if (Number.isInteger(n)) return n;
  }
  return null;
}

/** Hottest value of "62-64-66-68" style chip temperature strings or numbers. */
function tempValues(v: unknown): number[] {
  if (typeof v === 'number' && Number.isFinite(v)) return [v];
  if (typeof v === 'string') return v.split(/[-\s,]+/).map(Number).filter((n) => Number.isFinite(n) && n > 0);
  return [];
}

export class AntminerDriver implements DeviceDriver {
  readonly kind = 'asic' as const;
  readonly driverId = 'antminer';
  readonly capabilities: Capabilities;
  readonly id: string;
  private readonly client: CgminerClient;
  private readonly cgi: AntminerCgi;
  private readonly tracker = new ReadingTracker();
  private conf: { value: Record<string, unknown>; at: number } | undefined;
  private refreshing: Promise<void> | undefined;
  /** The sleep POST armed from the cached config `base` (re-armed when the cache or the digest challenge changes, or once fired). */
  private armed: { base: Record<string, unknown>; next: Record<string, unknown>; shot: ArmedSetConf } | undefined;

  constructor(
    private readonly cfg: AntminerConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    // No watt target on stock firmware: only work modes (normal/sleep/low/high).
    this.capabilities = { curtail: true, restore: true, powerTarget: null, profiles: cfg.profiles.length > 0, switchOutlet: false };
    this.client = new CgminerClient(cgminerEndpoint(cfg));
    this.cgi = new AntminerCgi({
      deviceId: cfg.id,
      username: cfg.username,
      password: cfg.password,
      ...httpEndpoint(cfg, cfg.webPort),
      ...(cfg.keepWarm ? { keepWarm: {} } : {}),
    });
  }

  /** Warms the digest nonce and the config cache; a miner that is down now is not an error. */
  async start(): Promise<void> {
    await this.refreshConf();
  }

  stop(): Promise<void> {
    this.cgi.close();
    return Promise.resolve();
  }

  /** Refreshes the cached config (never throws; failures are logged at debug). */
  private refreshConf(): Promise<void> {
    this.refreshing ??= withDeadline(`${this.id} get_miner_conf`, this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs, (s) => this.cgi.getConf(s))
      .then((value) => {
        this.conf = { value, at: this.ctx.now() };
      })
      .catch((err: unknown) => {
        this.ctx.logger.debug({ err: toRackpilotError(err).toJSON() }, 'config refresh failed');
      })
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    if (!this.conf || this.ctx.now() - this.conf.at > this.cfg.cgi.confMaxAgeMs) void this.refreshConf();
    try {
      const replies = await withDeadline(`${this.id} read`, opts.deadlineMs, (signal) => this.client.multi(TELEMETRY, signal), opts.signal);
      return this.tracker.ok(this.toSample(replies));
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  private toSample(r: Record<string, CgminerReply>): Sample {
    const summary = sectionItems(r.summary, 'SUMMARY')[0];
    const stats = sectionItems(r.stats, 'STATS');
    const detail = stats.find((s) => 'GHS 5s' in s || 'fan1' in s || 'chain_power' in s) ?? stats[1];
    const ghs = num(summary, 'GHS 5s', 'GHS av') ?? num(detail, 'GHS 5s', 'GHS av');
    const hashrateThs = ghs === undefined ? null : Math.round(ghs) / 1000;
    const powerW = num(detail, 'chain_power', 'power', 'Power') ?? null;
    const chip: number[] = [];
    const board: number[] = [];
    const fans: number[] = [];
    for (const [k, v] of Object.entries(detail ?? {})) {
      if (/^temp(2_|_chip)\d+$/.test(k)) chip.push(...tempValues(v));
      else if (/^temp\d+$/.test(k)) board.push(...tempValues(v));
      else if (/^fan\d+$/.test(k) && typeof v === 'number' && v > 0) fans.push(v);
    }
    const fanRpm = mean(fans);
    const ideal = num(detail, 'total_rateideal');
    const mode = modeOf(this.conf?.value);
    return {
      ts: this.ctx.now(),
      state: this.stateOf(hashrateThs, powerW),
      powerW,
      fields: {
        hashrateThs,
        nominalHashrateThs: ideal === undefined ? null : Math.round(ideal) / 1000,
        temperatureC: maxOf(chip.length > 0 ? chip : board) ?? null,
        fanRpm: fanRpm === undefined ? null : Math.round(fanRpm),
        /** From the cached web config, refreshed every cgi.confMaxAgeMs and after each write. */
        workMode: mode === null ? null : (Object.keys(ANTMINER_WORK_MODES).find((k) => ANTMINER_WORK_MODES[k as ModeName] === mode) ?? String(mode)),
      },
    };
  }

  private stateOf(hashrateThs: number | null, powerW: number | null): DeviceState {
    if (hashrateThs !== null && hashrateThs > 0) return 'running';
    if (hashrateThs === null) return 'unknown';
    if (powerW === null) return this.cfg.allowCurtailWithoutPower ? 'curtailed' : 'unknown';
    return powerW <= this.cfg.sleepPowerMaxW ? 'curtailed' : 'transitioning';
  }

  curtail(opts: ActionOptions): Promise<ActionResult> {
    return this.setMode(ANTMINER_WORK_MODES.sleep, 'curtail (sleep mode)', 'state "curtailed"', (r) => r.state === 'curtailed', opts);
  }

  /**
   * The sleep POST (the cached config with both mode keys set) encoded with
   * the digest challenge held now; fire() writes it on the warm web
   * connection. Undefined until both the config cache and a challenge are
   * there (start()/read() get them). Once fired, the POST runs to its answer
   * or `setConfTimeoutMs` like the plain one, whatever the action's deadline.
   */
  armCurtail(): ArmedAction | undefined {
    const base = this.conf?.value;
    if (!base) return undefined;
    let a = this.armed;
    if (!a || a.base !== base || !a.shot.usable) {
      const next = withMode(base, ANTMINER_WORK_MODES.sleep);
      const shot = this.cgi.armSetConf(next, this.cfg.cgi.setConfTimeoutMs);
      this.armed = a = shot && { base, next, shot };
      if (!a) return undefined;
    }
    const { next, shot } = a;
    return {
      fire: () => {
        const fired = shot.fire();
        if (!fired) return undefined;
        return {
          complete: (opts) => {
            // the answer is awaited (deadline from the send) even when the action does not wait for it
            fired.result().catch(() => undefined);
            return this.setMode(ANTMINER_WORK_MODES.sleep, 'curtail (sleep mode)', 'state "curtailed"', (r) => r.state === 'curtailed', opts, false, { next, fired });
          },
        };
      },
    };
  }

  restore(opts: ActionOptions): Promise<ActionResult> {
    return this.setMode(ANTMINER_WORK_MODES.normal, 'restore (normal mode)', 'state "running"', (r) => r.state === 'running', opts);
  }

  listProfiles(): Promise<Profile[]> {
    return Promise.resolve(this.cfg.profiles.map((name) => ({ name })));
  }

  setProfile(name: string, opts: ActionOptions): Promise<ActionResult> {
    if (!(this.cfg.profiles as string[]).includes(name)) {
      return Promise.reject(new RackpilotError('UNSUPPORTED', `${this.id}: no profile "${name}" (offered: ${this.cfg.profiles.join(', ') || 'none'})`));
    }
    const mode = ANTMINER_WORK_MODES[name as ModeName];
    // Confirmed when the miner hashes again and the written config reads back with that mode.
    return this.setMode(mode, `profile ${name}`, `state "running" in work mode ${name}`, (r) => r.state === 'running' && r.fields.workMode === name, opts, true);
  }

  /**
   * Echoes the config with both mode keys set. The POST runs with its own long
   * deadline; the action goes on to read-back once it answered or after
   * `ackWaitMs`. A definite refusal (auth, access denied, non-M000) ends the
   * action with that error even while read-back is polling. `armed`: the
   * POST already on the wire (armCurtail) with the config it carries; its
   * answer stands for the first send's.
   */
  private setMode(
    mode: number,
    what: string,
    want: string,
    confirmed: (r: Reading) => boolean,
    opts: ActionOptions,
    readConf = false,
    armed?: { next: Record<string, unknown>; fired: FiredRequest },
  ): Promise<ActionResult> {
    let refusal: RackpilotError | undefined;
    const readDeadlineMs = this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs;
    /** Resolves with when the CGI answered, if it did within ackWaitMs. */
    const send = async (signal: AbortSignal, first?: typeof armed): Promise<number | undefined> => {
      const next = first ? first.next : withMode(this.conf?.value ?? (await this.cgi.getConf(signal)), mode);
      let answered: number | undefined;
      const post = this.cgi.setConf(next, this.cfg.cgi.setConfTimeoutMs, first?.fired).then(
        (at) => {
          answered = at;
          this.conf = { value: next, at: this.ctx.now() };
        },
        (err: unknown) => {
          answered = performance.now();
          const e = toRackpilotError(err, { device: this.id });
          // a transport error after the write may just be the restart: read-back decides
          if (e.code === 'AUTH_FAILED' || e.code === 'DEVICE_ERROR') refusal = e;
          else this.ctx.logger.debug({ err: e.toJSON() }, 'set_miner_conf answer lost; confirming by read-back');
        },
      );
      const waited = sleep(this.cfg.cgi.ackWaitMs, signal).catch(() => undefined);
      await Promise.race([post, waited]);
      if (refusal) throw refusal;
      if (answered === undefined) this.ctx.logger.debug({ ackWaitMs: this.cfg.cgi.ackWaitMs }, 'set_miner_conf still pending; confirming by read-back');
      return answered;
    };
    return actAndConfirm(
      {
        deviceId: this.id,
        what,
        want,
        send: async (signal) => {
          await send(signal);
        },
        ...(armed ? { inFlight: { sentAt: armed.fired.sentAt, wait: (signal: AbortSignal) => send(signal, armed) } } : {}),
        read: async (o) => {
          if (refusal) throw refusal;
          if (readConf) {
            try {
              this.conf = { value: await this.cgi.getConf(o.signal), at: this.ctx.now() };
            } catch (err) {
              this.ctx.logger.debug({ err: toRackpilotError(err).toJSON() }, 'config read-back failed');
            }
          }
          return this.read(o);
        },
        confirmed,
        readDeadlineMs,
        pollMs: this.cfg.confirmPollMs,
        now: this.ctx.now,
      },
      opts,
    );
  }
}
