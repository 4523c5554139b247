/**
 * Auradine driver: telemetry from the web API (`/mode`, `/psu`, `/fan`) plus
 * hashrate from the gcminer TCP API `summary`; curtail = `POST /mode
 * {"sleep":"on"}`, restore = `{"sleep":"off"}`; power target = `POST /mode
 * {"mode":"custom","tune":"power","power":W}`, each confirmed by read-back.
 * The token is obtained in start()/read() and reused on the hot path.
 */
import type { ActionOptions, ActionResult, ArmedAction, Capabilities, DeviceDriver, DeviceState, DriverContext, Reading } from '../contract.js';
import { CgminerClient, cgminerEndpoint, type CgminerReply } from '../lib/cgminer/client.js';
import { num as cgNum, sectionItems } from '../lib/cgminer/fields.js';
import { actAndConfirm, type InFlightSend } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { HttpClient, httpEndpoint, type FiredRequest, type PreparedRequest } from '../lib/http.js';
import { maxOf, meanOf, num, objs, str } from '../lib/json.js';
import { ReadingTracker, type Sample } from '../lib/reading.js';
import { AuradineApi } from './api.js';
import type { AuradineConfig } from './schema.js';

const SLEEP_ON = { sleep: 'on' } as const;

export class AuradineDriver implements DeviceDriver {
  readonly kind = 'asic' as const;
  readonly driverId = 'auradine';
  readonly capabilities: Capabilities;
  readonly id: string;
  private readonly http: HttpClient;
  private readonly api: AuradineApi;
  private readonly cg: CgminerClient;
  private readonly tracker = new ReadingTracker();
  /** The curtail POST encoded with the token it was armed with (re-encoded when the token changes). */
  private armed: { token: string; prepared: PreparedRequest } | undefined;

  constructor(
    private readonly cfg: AuradineConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    this.http = new HttpClient({ ...httpEndpoint(cfg), ...(cfg.keepWarm ? { keepWarm: {} } : {}) });
    this.api = new AuradineApi(this.http, cfg.id, cfg.username, cfg.password);
    this.cg = new CgminerClient(cgminerEndpoint(cfg, cfg.apiPort));
    this.capabilities = {
      curtail: true,
      restore: true,
      powerTarget: cfg.powerTarget ? { minW: cfg.powerTarget.minW, maxW: cfg.powerTarget.maxW, reboots: false } : null,
      profiles: false,
      switchOutlet: false,
    };
  }

  private get ioDeadlineMs(): number {
    return this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs;
  }

  /** Gets a token so the first curtail carries it; a miner that is down or refuses is not an error here. */
  async start(): Promise<void> {
    try {
      await withDeadline(`${this.id} token`, this.ioDeadlineMs, (s) => this.api.login(s));
    } catch (err) {
      this.ctx.logger.debug({ err: toRackpilotError(err).toJSON() }, 'token request failed; the next request will try again');
    }
  }

  stop(): Promise<void> {
    this.http.close();
    return Promise.resolve();
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const sample = await withDeadline(
        `${this.id} read`,
        opts.deadlineMs,
        async (s) => {
          // web parts one after another (the first may fetch the token), the TCP API alongside
          const api = this.cg.multi(['summary', 'devs'], s).then(
            (r) => ({ ok: true as const, r }),
            (err: unknown) => ({ ok: false as const, err: toRackpilotError(err) }),
          );
          const mode = await this.api.call('/mode', undefined, s);
          const [psu, fan] = await Promise.all([this.api.call('/psu', undefined, s), this.api.call('/fan', undefined, s)]);
          return this.toSample(mode, psu, fan, await api);
        },
        opts.signal,
      );
      return this.tracker.ok(sample);
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  private toSample(
    mode: Record<string, unknown>,
    psu: Record<string, unknown>,
    fan: Record<string, unknown>,
    api: { ok: true; r: Record<string, CgminerReply> } | { ok: false; err: RackpilotError },
  ): Sample {
    const m = objs(mode.Mode)[0];
    if (!m) throw new RackpilotError('MALFORMED_RESPONSE', `${this.id}: GET /mode at ${this.http.where} has no Mode[0]`, { device: this.id });
    const sleep = str(m.Sleep) ?? null;
    const p = objs(psu.PSU)[0];
    const power = num(p?.PowerIn);
    const powerW = power === undefined ? null : Math.round(power);
    const rpm = meanOf(objs(fan.Fan).map((f) => num(f.Speed)));
    let hashrateThs: number | null = null;
    let temperatureC: number | null = null;
    if (api.ok) {
      const s = sectionItems(api.r.summary, 'SUMMARY')[0];
      const mhs = cgNum(s, 'MHS 5s', 'MHS 1m', 'MHS av');
      hashrateThs = mhs === undefined ? null : Math.round((mhs / 1e6) * 100) / 100;
      temperatureC = maxOf(sectionItems(api.r.devs, 'DEVS').map((d) => cgNum(d, 'Temperature'))) ?? null;
    }
    return {
      ts: this.ctx.now(),
      state: this.stateOf(sleep, hashrateThs, powerW),
      powerW,
      fields: {
        hashrateThs,
        temperatureC,
        fanRpm: rpm === undefined ? null : Math.round(rpm),
        sleep,
        mode: str(m.Mode) ?? null,
        modePowerW: num(m.Power) ?? null,
        psuMaxW: num(p?.PoutMax) ?? null,
        apiError: api.ok ? null : api.err.code,
      },
    };
  }

  /** Hashrate may be unknown (TCP API down); then power alone decides, against sleepPowerMaxW. */
  private stateOf(sleep: string | null, hashrateThs: number | null, powerW: number | null): DeviceState {
    const lowPower = powerW !== null && powerW <= this.cfg.sleepPowerMaxW;
    const hashing = hashrateThs === null ? powerW !== null && !lowPower : hashrateThs > 0;
    if (sleep === 'on') return !hashing && lowPower ? 'curtailed' : 'transitioning';
    if (sleep === 'off') return hashing ? 'running' : 'transitioning';
    return hashing ? 'running' : 'unknown';
  }

  curtail(opts: ActionOptions): Promise<ActionResult> {
    return this.act(SLEEP_ON, 'sleep on', 'state "curtailed"', (r) => r.state === 'curtailed', opts);
  }

  /**
   * `POST /mode {"sleep":"on"}` encoded with the token held now; fire()
   * writes it on the warm connection. Undefined before a login gave a token
   * (start()/read() get one). A token replaced since is no longer fired (the
   * plain path runs); one the device dropped is refused, which gets the
   * plain path's new login and one retry.
   */
  armCurtail(): ArmedAction | undefined {
    let a = this.armed;
    if (!a || !this.api.holds(a.token)) {
      this.armed = a = this.api.prepareCall('/mode', SLEEP_ON);
      if (!a) return undefined;
    }
    const { token, prepared } = a;
    return {
      fire: () => {
        if (!this.api.holds(token)) return undefined;
        const fired = prepared.fire();
        if (!fired) return undefined;
        return {
          complete: (opts) => this.act(SLEEP_ON, 'sleep on', 'state "curtailed"', (r) => r.state === 'curtailed', opts, fired).finally(() => fired.cancel()),
        };
      },
    };
  }

  restore(opts: ActionOptions): Promise<ActionResult> {
    return this.act({ sleep: 'off' }, 'sleep off', 'state "running"', (r) => r.state === 'running', opts);
  }

  async setPowerTarget(watts: number, opts: ActionOptions): Promise<ActionResult> {
    const range = this.capabilities.powerTarget;
    if (!range) {
      throw new RackpilotError('UNSUPPORTED', `${this.id}: set powerTarget {minW, maxW} (the model's power-mode range) to use a watt target`, { device: this.id });
    }
    const w = Math.round(watts);
    if (!Number.isFinite(watts) || w < range.minW || w > range.maxW) {
      throw new RackpilotError('UNSUPPORTED', `${this.id}: power target ${watts} W is outside ${range.minW}..${range.maxW} W`, { device: this.id });
    }
    return this.act({ mode: 'custom', tune: 'power', power: w }, `custom power ${w} W`, `mode custom with power ${w} W`, (r) => r.fields.modePowerW === w, opts);
  }

  /** `fired`: the POST already on the wire (an armed curtail); its answer stands for the first send. */
  private act(
    body: Record<string, unknown>,
    what: string,
    want: string,
    confirmed: (r: Reading) => boolean,
    opts: ActionOptions,
    fired?: FiredRequest,
  ): Promise<ActionResult> {
    const inFlight: InFlightSend | undefined = fired && {
      sentAt: fired.sentAt,
      wait: async (signal) => (await this.api.answer('/mode', body, signal, fired)).receivedAt,
    };
    return actAndConfirm(
      {
        deviceId: this.id,
        what: `POST /mode ${what}`,
        want,
        ...(inFlight ? { inFlight } : {}),
        send: async (signal) => {
          await this.api.call('/mode', body, signal);
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
