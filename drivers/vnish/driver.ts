/**
 * Vnish (AnthillOS) driver: telemetry from `GET /api/v1/summary`; curtail =
 * `/mining/stop` (or `/mining/pause`), restore = `/mining/start` (or
 * `/mining/resume`); power target = `/mining/throttle {"percent"}`, each
 * confirmed by read-back. The bearer token is obtained off the hot path
 * (start()/read()) and reused.
 */
import type { ActionOptions, ActionResult, ArmedAction, Capabilities, DeviceDriver, DeviceState, DriverContext, Reading } from '../contract.js';
import { actAndConfirm, type InFlightSend } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { HttpClient, httpEndpoint, type FiredRequest, type PreparedRequest } from '../lib/http.js';
import { ReadingTracker, type Sample } from '../lib/reading.js';
import { isObj, maxOf, num } from '../lib/json.js';
import { VnishApi } from './api.js';
import type { VnishConfig } from './schema.js';

/** Throttle limits of `/mining/throttle` (percent of full power). */
export const THROTTLE_MIN_PERCENT = 20;
export const THROTTLE_MAX_PERCENT = 100;
/** After a failed unlock, read() tries again no sooner than this. */
const UNLOCK_RETRY_MS = 60_000;

const STOPPED_STATES = new Set(['stopped', 'paused', 'shutting-down']);
const STARTING_STATES = new Set(['starting', 'initializing', 'restarting', 'auto-tuning', 'tuning']);

export class VnishDriver implements DeviceDriver {
  readonly kind = 'asic' as const;
  readonly driverId = 'vnish';
  readonly capabilities: Capabilities;
  readonly id: string;
  private readonly http: HttpClient;
  private readonly api: VnishApi;
  private readonly tracker = new ReadingTracker();
  private lastUnlockFailure = -Infinity;
  /** The curtail POST encoded with the token it was armed with (re-encoded when the token or path changes). */
  private armed: { token: string; path: string; prepared: PreparedRequest } | undefined;

  constructor(
    private readonly cfg: VnishConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    this.http = new HttpClient({ ...httpEndpoint(cfg), ...(cfg.keepWarm ? { keepWarm: {} } : {}) });
    this.api = new VnishApi(this.http, cfg.id, cfg.password);
    const full = cfg.fullPowerW;
    this.capabilities = {
      curtail: true,
      restore: true,
      powerTarget: full === undefined ? null : { minW: Math.ceil((full * THROTTLE_MIN_PERCENT) / 100), maxW: full, reboots: false },
      profiles: false,
      switchOutlet: false,
    };
  }

  private get ioDeadlineMs(): number {
    return this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs;
  }

  /** Unlocks once so the first curtail carries a warm token; a miner that is down now is not an error. */
  async start(): Promise<void> {
    await this.warmToken();
  }

  async stop(): Promise<void> {
    this.http.close();
    return Promise.resolve();
  }

  private async warmToken(signal?: AbortSignal): Promise<void> {
    if (this.api.hasToken || this.ctx.now() - this.lastUnlockFailure < UNLOCK_RETRY_MS) return;
    try {
      await withDeadline(`${this.id} unlock`, this.ioDeadlineMs, (s) => this.api.unlock(s), signal);
    } catch (err) {
      this.lastUnlockFailure = this.ctx.now();
      this.ctx.logger.debug({ err: toRackpilotError(err).toJSON() }, 'unlock failed; the next write will try again');
    }
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const summary = await withDeadline(`${this.id} read`, opts.deadlineMs, (s) => this.api.summary(s), opts.signal);
      const reading = this.tracker.ok(this.toSample(summary));
      // keep the token warm for the hot path, off it
      if (!this.api.hasToken) await this.warmToken(opts.signal);
      return reading;
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  private toSample(body: unknown): Sample {
    const miner = isObj(body) && isObj(body.miner) ? body.miner : undefined;
    if (!miner) {
      throw new RackpilotError('MALFORMED_RESPONSE', `${this.id}: GET /api/v1/summary at ${this.http.where} has no "miner" object`, { device: this.id });
    }
    const status = isObj(miner.miner_status) ? miner.miner_status : {};
    const minerState = typeof status.miner_state === 'string' ? status.miner_state : null;
    const hashrateThs = num(miner.instant_hashrate) ?? num(miner.average_hashrate) ?? null;
    const power = num(miner.power_consumption) ?? num(miner.power_usage);
    const powerW = power === undefined ? null : Math.round(power);
    const chains = Array.isArray(miner.chains) ? miner.chains.filter(isObj) : [];
    const chipMax = num(isObj(miner.chip_temp) ? miner.chip_temp.max : undefined) ?? maxOf(chains.map((c) => num(isObj(c.chip_temp) ? c.chip_temp.max : undefined)));
    const pcbMax = num(isObj(miner.pcb_temp) ? miner.pcb_temp.max : undefined) ?? maxOf(chains.map((c) => num(isObj(c.pcb_temp) ? c.pcb_temp.max : undefined)));
    const cooling = isObj(miner.cooling) ? miner.cooling : {};
    const fans = (Array.isArray(cooling.fans) ? cooling.fans.filter(isObj) : []).map((f) => num(f.rpm)).filter((v): v is number => v !== undefined);
    const throttle = num(status.throttled) ?? num(miner.throttled);
    return {
      ts: this.ctx.now(),
      state: this.stateOf(minerState, hashrateThs, powerW),
      powerW,
      fields: {
        hashrateThs,
        temperatureC: chipMax ?? null,
        pcbTemperatureC: pcbMax ?? null,
        fanRpm: fans.length ? Math.round(fans.reduce((a, b) => a + b, 0) / fans.length) : null,
        minerState,
        throttlePercent: throttle ?? null,
        minerType: typeof miner.miner_type === 'string' ? miner.miner_type : null,
      },
    };
  }

  private stateOf(minerState: string | null, hashrateThs: number | null, powerW: number | null): DeviceState {
    const hashing = hashrateThs !== null && hashrateThs > 0;
    if (minerState !== null && STOPPED_STATES.has(minerState)) {
      return !hashing && powerW !== null && powerW <= this.cfg.sleepPowerMaxW ? 'curtailed' : 'transitioning';
    }
    if (minerState === 'mining') return hashing ? 'running' : 'transitioning';
    if (minerState !== null && STARTING_STATES.has(minerState)) return 'transitioning';
    if (minerState === 'failure') return 'unknown';
    return hashing ? 'running' : 'unknown';
  }

  private get curtailPath(): string {
    return this.cfg.curtailMethod === 'pause' ? '/mining/pause' : '/mining/stop';
  }

  curtail(opts: ActionOptions): Promise<ActionResult> {
    return this.act(this.curtailPath, undefined, 'state "curtailed"', (r) => r.state === 'curtailed', opts);
  }

  /**
   * The curtail POST encoded with the bearer token held now; fire() writes it
   * on the warm connection. Undefined before an unlock gave a token (read()
   * gets one). A token replaced since is no longer fired (the plain path
   * runs); one the device dropped answers 401, which gets the plain path's
   * unlock and one retry.
   */
  armCurtail(): ArmedAction | undefined {
    const path = this.curtailPath;
    let a = this.armed;
    if (!a || a.path !== path || !this.api.holds(a.token)) {
      const p = this.api.prepareWrite(path, undefined);
      this.armed = a = p && { ...p, path };
      if (!a) return undefined;
    }
    const { token, prepared } = a;
    return {
      fire: () => {
        if (!this.api.holds(token)) return undefined;
        const fired = prepared.fire();
        if (!fired) return undefined;
        return {
          complete: (opts) => this.act(path, undefined, 'state "curtailed"', (r) => r.state === 'curtailed', opts, fired).finally(() => fired.cancel()),
        };
      },
    };
  }

  restore(opts: ActionOptions): Promise<ActionResult> {
    const path = this.cfg.curtailMethod === 'pause' ? '/mining/resume' : '/mining/start';
    return this.act(path, undefined, 'state "running"', (r) => r.state === 'running', opts);
  }

  /** Watts -> throttle percent of `fullPowerW`, rounded, within 20..100. */
  percentFor(watts: number): number {
    const range = this.capabilities.powerTarget;
    if (!range || this.cfg.fullPowerW === undefined) {
      throw new RackpilotError('UNSUPPORTED', `${this.id}: Vnish throttles in percent of full power; set "fullPowerW" in the config to use a watt target`, { device: this.id });
    }
    if (!Number.isFinite(watts) || watts < range.minW || watts > range.maxW) {
      throw new RackpilotError('UNSUPPORTED', `${this.id}: power target ${watts} W is outside ${range.minW}..${range.maxW} W (throttle 20..100 % of ${this.cfg.fullPowerW} W)`, { device: this.id });
    }
    return Math.min(THROTTLE_MAX_PERCENT, Math.max(THROTTLE_MIN_PERCENT, Math.round((watts / this.cfg.fullPowerW) * 100)));
  }

  async setPowerTarget(watts: number, opts: ActionOptions): Promise<ActionResult> {
    const percent = this.percentFor(watts);
    return this.act('/mining/throttle', { percent }, `throttle ${percent} %`, (r) => r.fields.throttlePercent === percent, opts);
  }

  /** `fired`: the POST already on the wire (an armed curtail); its answer stands for the first send. */
  private act(path: string, body: object | undefined, want: string, confirmed: (r: Reading) => boolean, opts: ActionOptions, fired?: FiredRequest): Promise<ActionResult> {
    const inFlight: InFlightSend | undefined = fired && { sentAt: fired.sentAt, wait: (signal) => this.api.write(path, body, signal, fired) };
    return actAndConfirm(
      {
        deviceId: this.id,
        what: `POST ${path}`,
        want,
        ...(inFlight ? { inFlight } : {}),
        send: async (signal) => {
          await this.api.write(path, body, signal);
        },
        read: (o) => this.read(o),
        confirmed,
        readDeadlineMs: this.ioDeadlineMs,
        pollMs: this.cfg.confirmPollMs,
        now: this.ctx.now,
      },
      opts,
    );
  }
}
