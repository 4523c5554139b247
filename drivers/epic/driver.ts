/**
 * ePIC PowerPlay / UMC driver: telemetry from `GET /summary` (HTTP, port
 * 4028); curtail = `POST /miner {"param":"Stop"}`, restore = `{"param":
 * "Autostart"}`; power target = the Power tuning algorithm of
 * `POST /perpetualtune/algo` with a watt target. Each action is confirmed by
 * read-back. No login: the password rides in each POST body, and the
 * keep-alive connection is the warm path.
 */
import type { ActionOptions, ActionResult, ArmedAction, Capabilities, DeviceDriver, DeviceState, DriverContext, Reading } from '../contract.js';
import { actAndConfirm, type InFlightSend } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { HttpClient, httpEndpoint, type PreparedRequest } from '../lib/http.js';
import { isObj, maxOf, meanOf, num, obj, objs, str } from '../lib/json.js';
import { ReadingTracker, type Sample } from '../lib/reading.js';
import { EpicApi } from './api.js';
import type { EpicConfig } from './schema.js';

export class EpicDriver implements DeviceDriver {
  readonly kind = 'asic' as const;
  readonly driverId = 'epic';
  readonly capabilities: Capabilities;
  readonly id: string;
  private readonly http: HttpClient;
  private readonly api: EpicApi;
  private readonly tracker = new ReadingTracker();
  /** The curtail POST, encoded once (no session: the password rides in the body). */
  private armedStop: PreparedRequest | undefined;

  constructor(
    private readonly cfg: EpicConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    this.http = new HttpClient({ ...httpEndpoint(cfg), ...(cfg.keepWarm ? { keepWarm: {} } : {}) });
    this.api = new EpicApi(this.http, cfg.id, cfg.password);
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

  /** Nothing to open: no session; the first request opens the kept-alive connection. */
  start(): Promise<void> {
    return Promise.resolve();
  }

  stop(): Promise<void> {
    this.http.close();
    return Promise.resolve();
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const summary = await withDeadline(`${this.id} read`, opts.deadlineMs, (s) => this.api.get('/summary', s), opts.signal);
      return this.tracker.ok(this.toSample(summary));
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  private toSample(body: unknown): Sample {
    if (!isObj(body) || !isObj(body.Status)) {
      throw new RackpilotError('MALFORMED_RESPONSE', `${this.id}: GET /summary at ${this.http.where} has no "Status" object`, { device: this.id });
    }
    const opState = str(body.Status['Operating State']) ?? null;
    const boards = objs(body.HBs);
    // HBs[].Hashrate = [MH/s, % of ideal]
    const mhs = boards.map((b) => (Array.isArray(b.Hashrate) ? num(b.Hashrate[0]) : undefined)).filter((v): v is number => v !== undefined);
    const hashrateThs = mhs.length ? Math.round((mhs.reduce((a, b) => a + b, 0) / 1e6) * 100) / 100 : Array.isArray(body.HBs) && body.HBs.length === 0 ? 0 : null;
    const power = num(obj(body['Power Supply Stats'])['Input Power']);
    const powerW = power === undefined ? null : Math.round(power);
    const fans = Object.values(obj(body['Fans Rpm'])).map(num);
    const fanMean = meanOf(fans);
    const tune = obj(body.PerpetualTune);
    const algos = obj(tune.Algorithm);
    const algoName = Object.keys(algos)[0] ?? null;
    const target = algoName === null ? undefined : num(obj(algos[algoName]).Target);
    return {
      ts: this.ctx.now(),
      state: this.stateOf(opState, hashrateThs, powerW),
      powerW,
      fields: {
        hashrateThs,
        temperatureC: maxOf(boards.map((b) => num(b.Temperature))) ?? null,
        fanRpm: fanMean === undefined ? null : Math.round(fanMean),
        operatingState: opState,
        tuneRunning: typeof tune.Running === 'boolean' ? tune.Running : null,
        tuneAlgorithm: algoName,
        tuneTarget: target ?? null,
        software: str(body.Software) ?? null,
      },
    };
  }

  private stateOf(opState: string | null, hashrateThs: number | null, powerW: number | null): DeviceState {
    const hashing = hashrateThs !== null && hashrateThs > 0;
    if (opState === 'Idling') return !hashing && powerW !== null && powerW <= this.cfg.sleepPowerMaxW ? 'curtailed' : 'transitioning';
    if (opState === 'Mining') return hashing ? 'running' : 'transitioning';
    if (opState !== null) return hashing ? 'running' : 'transitioning';
    return hashing ? 'running' : 'unknown';
  }

  curtail(opts: ActionOptions): Promise<ActionResult> {
    return this.act('Stop', 'state "curtailed"', opts, (r) => r.state === 'curtailed', (s) => this.api.post('/miner', 'Stop', s));
  }

  /**
   * The curtail POST encoded once; fire() writes it on the warm connection
   * (or a new one). Always available: there is no session to wait for.
   */
  armCurtail(): ArmedAction | undefined {
    const p = (this.armedStop ??= this.api.preparePost('/miner', 'Stop'));
    return {
      fire: () => {
        const fired = p.fire();
        if (!fired) return undefined;
        const inFlight: InFlightSend = { sentAt: fired.sentAt, wait: (signal) => this.api.post('/miner', 'Stop', signal, fired) };
        return {
          complete: (opts) =>
            this.act('Stop', 'state "curtailed"', opts, (r) => r.state === 'curtailed', (s) => this.api.post('/miner', 'Stop', s), inFlight).finally(() => fired.cancel()),
        };
      },
    };
  }

  restore(opts: ActionOptions): Promise<ActionResult> {
    return this.act('Autostart', 'state "running"', opts, (r) => r.state === 'running', (s) => this.api.post('/miner', 'Autostart', s));
  }

  async setPowerTarget(watts: number, opts: ActionOptions): Promise<ActionResult> {
    const range = this.capabilities.powerTarget;
    if (!range) {
      throw new RackpilotError('UNSUPPORTED', `${this.id}: set powerTarget {minW, maxW} (from the miner's GET /capabilities) to use a watt target`, { device: this.id });
    }
    const w = Math.round(watts);
    if (!Number.isFinite(watts) || w < range.minW || w > range.maxW) {
      throw new RackpilotError('UNSUPPORTED', `${this.id}: power target ${watts} W is outside ${range.minW}..${range.maxW} W`, { device: this.id });
    }
    const algo = this.cfg.powerTuneAlgo;
    const step = this.cfg.throttleStepW;
    const param = { algo, target: w, min_throttle: Math.max(0, Math.min(this.cfg.minThrottleW, w - step)), throttle_step: step };
    return this.act(
      `perpetualtune/algo ${algo} ${w} W`,
      `tuner ${algo} with target ${w} W`,
      opts,
      (r) => r.fields.tuneAlgorithm === algo && r.fields.tuneTarget === w,
      async (s) => {
        await this.api.post('/perpetualtune', true, s);
        await this.api.post('/perpetualtune/algo', param, s);
      },
    );
  }

  private act(
    what: string,
    want: string,
    opts: ActionOptions,
    confirmed: (r: Reading) => boolean,
    send: (signal: AbortSignal) => Promise<unknown>,
    inFlight?: InFlightSend,
  ): Promise<ActionResult> {
    return actAndConfirm(
      {
        deviceId: this.id,
        what: `POST ${what}`,
        want,
        send: async (signal) => {
          await send(signal);
        },
        ...(inFlight ? { inFlight } : {}),
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
