/**
 * Braiins OS+ driver: gRPC API (h2c, port 50051) with a warm session token;
 * curtail = `ActionsService/PauseMining`, restore = `ResumeMining`, power
 * target = `PerformanceService/SetPowerTarget`, each confirmed by read-back.
 * Telemetry falls back to the legacy TCP API (4028) when gRPC is unreachable.
 * The curtail can be armed: PauseMining encoded ahead with the warm token,
 * fired as one HTTP/2 request on the device's session (h2.ts).
 */
import type {
  ActionOptions,
  ActionResult,
  ArmedAction,
  Capabilities,
  DeviceDriver,
  DeviceState,
  DriverContext,
  PowerTargetRange,
  Reading,
} from '../contract.js';
import { CgminerClient, cgminerEndpoint } from '../lib/cgminer/client.js';
import { actAndConfirm, type InFlightSend } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError, type ErrorCode } from '../lib/errors.js';
import { LazyTransport } from '../lib/lazy.js';
import { ReadingTracker } from '../lib/reading.js';
import type { BraiinsGrpc } from './grpc.js';
import type { PreparedCall } from './h2.js';
import type {
  GetConstraintsResponse,
  GetCoolingStateResponse,
  GetMinerDetailsResponse,
  GetMinerStatsResponse,
  GetTunerStateResponse,
  QuickRampingResponse,
  SetPowerTargetResponse,
} from './proto.js';
import type { BraiinsConfig } from './schema.js';
import { BraiinsSession } from './session.js';
import { LEGACY_COMMANDS, fromGrpc, fromLegacy, type Parsed } from './telemetry.js';

/** Failures that mean "gRPC cannot be reached", after which telemetry tries the legacy API. */
const TRANSPORT: ReadonlySet<ErrorCode> = new Set([
  'CONNECT_REFUSED',
  'CONNECT_TIMEOUT',
  'UNREACHABLE',
  'READ_TIMEOUT',
  'CONNECTION_CLOSED',
  'MALFORMED_RESPONSE',
]);

/** The device's gRPC connection, its login session and the proto constant writes need: the codec (proto-loader) loads with them. */
interface Wire {
  grpc: BraiinsGrpc;
  session: BraiinsSession;
  saveAndApply: string;
}

const ACTIONS = 'braiins.bos.v1.ActionsService';

type CallOpts = { deadlineMs: number; signal?: AbortSignal };

/** A failed start-up setup is retried from read() at most this often. */
const SETUP_RETRY_MS = 30_000;

export class BraiinsDriver implements DeviceDriver {
  readonly kind = 'asic' as const;
  readonly driverId = 'braiins';
  readonly id: string;
  /** Loaded by start() (or the first call before it), not with the registry. */
  private readonly wire: LazyTransport<Wire>;
  private readonly legacy: CgminerClient;
  private readonly tracker = new ReadingTracker();
  private range: PowerTargetRange | null;
  private setupDone = false;
  private setupRunning = false;
  private lastSetupAt = Number.NEGATIVE_INFINITY;
  /** PauseMining prepared with the token held when last armed (re-encoded when the token changes). */
  private preparedPause: PreparedCall | undefined;

  constructor(
    private readonly cfg: BraiinsConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    this.wire = new LazyTransport('gRPC client (h2.ts, proto-loader codec)', async () => {
      const [{ BraiinsGrpc }, { SAVE_AND_APPLY }] = await Promise.all([import('./grpc.js'), import('./proto.js')]);
      const grpc = new BraiinsGrpc({ host: cfg.host, port: cfg.port, maxResponseBytes: cfg.maxResponseBytes, label: `${cfg.id} (${cfg.host}:${cfg.port})` });
      return { grpc, session: new BraiinsSession(grpc, { username: cfg.username, password: cfg.password }, ctx.now), saveAndApply: SAVE_AND_APPLY };
    });
    this.legacy = new CgminerClient(cgminerEndpoint(cfg, cfg.apiPort));
    this.range = cfg.powerTarget ? { minW: cfg.powerTarget.minW, maxW: cfg.powerTarget.maxW, reboots: false } : null;
  }

  get capabilities(): Capabilities {
    return { curtail: true, restore: true, powerTarget: this.range, profiles: false, switchOutlet: false };
  }

  /** Logins performed so far (diagnostics). */
  get logins(): number {
    return this.wire.loaded?.session.logins ?? 0;
  }

  private get rpcMs(): number {
    return this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs;
  }

  /**
   * Logs in (so curtail never waits for a login), reads the power-target range
   * and applies `quickRamping`. A miner that is down now is not fatal: read()
   * retries this later, off the hot path.
   */
  async start(): Promise<void> {
    await this.setup();
  }

  private async setup(signal?: AbortSignal): Promise<void> {
    this.lastSetupAt = this.ctx.now();
    const o = { deadlineMs: this.rpcMs, ...(signal ? { signal } : {}) };
    const { session, saveAndApply } = await this.wire.get();
    if (!session.warm) await session.login(o);
    const c = await session.call<GetConstraintsResponse>('braiins.bos.v1.ConfigurationService', 'GetConstraints', {}, o);
    const pt = c.tuner_constraints?.power_target;
    const minW = pt?.min?.watt;
    const maxW = pt?.max?.watt;
    if (minW !== undefined && maxW !== undefined && maxW > 0 && minW <= maxW) this.range = { minW, maxW, reboots: false };
    const q = this.cfg.quickRamping;
    if (q) {
      const lim = c.hashboards_constraints?.quick_ramping_time_s;
      for (const [k, v] of [['upS', q.upS], ['downS', q.downS]] as const) {
        if (lim?.max !== undefined && lim.max > 0 && (v < (lim.min ?? 0) || v > lim.max)) {
          throw new RackpilotError(
            'CONFIG_INVALID',
            `${this.id}: quickRamping.${k} = ${v} s is outside the miner's range ${lim.min ?? 0}..${lim.max} s`,
            { device: this.id },
          );
        }
      }
      const res = await session.call<QuickRampingResponse>(
        'braiins.bos.v1.PerformanceService',
        'SetQuickRamping',
        { save_action: saveAndApply, up_s: q.upS, down_s: q.downS },
        o,
      );
      this.ctx.logger.info({ upS: res.up_s ?? null, downS: res.down_s ?? null }, 'quick ramping applied');
    }
    this.setupDone = true;
  }

  /** Retries a failed start-up setup in the background (never on the hot path, never throws). */
  private retrySetupLater(): void {
    if (this.setupDone || this.setupRunning || this.ctx.now() - this.lastSetupAt < SETUP_RETRY_MS) return;
    this.setupRunning = true;
    void withDeadline(`${this.id} setup`, 3 * this.rpcMs, (s) => this.setup(s))
      .catch((err: unknown) => this.ctx.logger.warn({ err: toRackpilotError(err).toJSON() }, 'setup retry failed'))
      .finally(() => {
        this.setupRunning = false;
      });
  }

  stop(): Promise<void> {
    this.wire.loaded?.grpc.close();
    return Promise.resolve();
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    const started = this.ctx.now();
    try {
      const parsed = await withDeadline(`${this.id} read`, opts.deadlineMs, (signal) => this.readAny(signal, opts.deadlineMs, started), opts.signal);
      if (parsed.fields.source === 'grpc') this.retrySetupLater();
      return this.tracker.ok({ ts: this.ctx.now(), ...parsed });
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  private async readAny(signal: AbortSignal, deadlineMs: number, started: number): Promise<Parsed> {
    if (!this.cfg.apiFallback) return this.readGrpc(signal, this.rpcMs);
    // leave the legacy fallback at least half of the read's time
    try {
      return await this.readGrpc(signal, Math.max(20, Math.min(this.rpcMs, Math.floor(deadlineMs / 2))));
    } catch (err) {
      const e = toRackpilotError(err, { device: this.id });
      if (!TRANSPORT.has(e.code) || signal.aborted) throw e;
      const left = deadlineMs - (this.ctx.now() - started);
      try {
        const replies = await withDeadline(`${this.id} legacy API read`, Math.max(1, left), (s) => this.legacy.multi(LEGACY_COMMANDS, s), signal);
        return fromLegacy(replies, this.cfg.sleepPowerMaxW);
      } catch (legacyErr) {
        const l = toRackpilotError(legacyErr);
        throw new RackpilotError(e.code, `${e.message}; legacy API fallback (port ${this.cfg.apiPort}) failed too: ${l.message}`, e.context, {
          cause: e,
        });
      }
    }
  }

  private async readGrpc(signal: AbortSignal, rpcMs: number): Promise<Parsed> {
    const o = { deadlineMs: rpcMs, signal };
    const s = (this.wire.loaded ?? (await this.wire.get())).session;
    const [details, stats, cooling, tuner] = await Promise.all([
      s.call<GetMinerDetailsResponse>('braiins.bos.v1.MinerService', 'GetMinerDetails', {}, o),
      s.call<GetMinerStatsResponse>('braiins.bos.v1.MinerService', 'GetMinerStats', {}, o),
      s.call<GetCoolingStateResponse>('braiins.bos.v1.CoolingService', 'GetCoolingState', {}, o),
      s.call<GetTunerStateResponse>('braiins.bos.v1.PerformanceService', 'GetTunerState', {}, o).catch((err: unknown) => {
        // the tuner may be disabled or absent; its state is optional, a transport failure is not
        const e = toRackpilotError(err);
        if (TRANSPORT.has(e.code) || e.code === 'AUTH_FAILED' || e.code === 'CANCELLED') throw e;
        return undefined;
      }),
    ]);
    return fromGrpc({ details, stats, cooling, tuner }, this.cfg.sleepPowerMaxW);
  }

  curtail(opts: ActionOptions): Promise<ActionResult> {
    return this.act('PauseMining', 'curtailed', opts);
  }

  restore(opts: ActionOptions): Promise<ActionResult> {
    return this.act('ResumeMining', 'running', opts);
  }

  /**
   * PauseMining prepared with the warm token, to go out as one HTTP/2 request
   * on the device's HTTP/2 session (h2.ts), the one its polls use. Undefined
   * until there is a warm token (start() or a read logs in) and that session
   * is up.
   * fire() returns undefined once the token or the session it was armed with
   * is gone. The answer is checked as the plain call's: a refused token gets
   * one new login and the plain call; a lost connection, actAndConfirm's
   * plain retries.
   */
  armCurtail(): ArmedAction | undefined {
    const w = this.wire.loaded;
    const token = w?.session.armable();
    if (!w || token === undefined) return undefined;
    const { grpc, session } = w;
    const h2 = grpc.h2.session();
    if (!h2) return undefined;
    if (this.preparedPause?.token !== token) {
      this.preparedPause = grpc.h2.prepare(ACTIONS, 'PauseMining', {}, token, grpc.where(ACTIONS, 'PauseMining'));
    }
    const call = this.preparedPause;
    return {
      fire: () => {
        if (!session.holds(token)) return undefined;
        const sent = grpc.h2.send(h2, call);
        if (!sent) return undefined;
        return {
          // an answer nobody waited for (the action ended first) is reset, not left open
          complete: (opts) =>
            this.act('PauseMining', 'curtailed', opts, {
              sentAt: sent.sentAt,
              wait: async (signal) => {
                const first = { token, sentAt: sent.sentAt, reply: (o: CallOpts) => sent.result(o.deadlineMs, o.signal) };
                await session.call(ACTIONS, 'PauseMining', {}, { deadlineMs: this.rpcMs, signal }, first);
                // when the prepared call's own answer came in; a retry's is taken as now
                return sent.answeredOkAt;
              },
            }).finally(() => sent.cancel()),
        };
      },
    };
  }

  /** Sends the action with the warm token (or awaits the one in flight), then polls read-back until the wanted state or the deadline. */
  private act(method: 'PauseMining' | 'ResumeMining', want: DeviceState, opts: ActionOptions, inFlight?: InFlightSend): Promise<ActionResult> {
    return actAndConfirm(
      {
        deviceId: this.id,
        what: method,
        want: `state "${want}"`,
        ...(inFlight ? { inFlight } : {}),
        send: async (signal) => {
          const { session } = await this.wire.get();
          await session.call(ACTIONS, method, {}, { deadlineMs: this.rpcMs, signal });
        },
        read: (o) => this.read(o),
        confirmed: (r) => r.state === want && r.fields.source === 'grpc',
        readDeadlineMs: this.rpcMs,
        pollMs: this.cfg.confirmPollMs,
        now: this.ctx.now,
      },
      opts,
    );
  }

  /**
   * Sets the tuner's power target (saved and applied; no reboot), checked
   * against the miner's range before any I/O, confirmed when the tuner
   * reports the new target.
   */
  setPowerTarget(watts: number, opts: ActionOptions): Promise<ActionResult> {
    const range = this.range;
    if (!Number.isInteger(watts) || watts <= 0) {
      return Promise.reject(new RackpilotError('UNSUPPORTED', `${this.id}: power target must be a positive whole number of watts, got ${watts}`, { device: this.id }));
    }
    if (!range) {
      return Promise.reject(
        new RackpilotError(
          'UNSUPPORTED',
          `${this.id}: the power-target range is not known yet (the miner has not reported its constraints; set powerTarget.minW/maxW in config or retry once it is reachable)`,
          { device: this.id },
        ),
      );
    }
    if (watts < range.minW || watts > range.maxW) {
      return Promise.reject(
        new RackpilotError('UNSUPPORTED', `${this.id}: power target ${watts} W is outside the miner's range ${range.minW}..${range.maxW} W; nothing was sent`, {
          device: this.id,
          minW: range.minW,
          maxW: range.maxW,
        }),
      );
    }
    return actAndConfirm(
      {
        deviceId: this.id,
        what: `SetPowerTarget ${watts} W`,
        want: `power target ${watts} W`,
        send: async (signal) => {
          const { session, saveAndApply } = await this.wire.get();
          await session.call<SetPowerTargetResponse>(
            'braiins.bos.v1.PerformanceService',
            'SetPowerTarget',
            { save_action: saveAndApply, power_target: { watt: watts } },
            { deadlineMs: this.rpcMs, signal },
          );
        },
        read: (o) => this.read(o),
        confirmed: (r) => r.fields.powerTargetW === watts,
        readDeadlineMs: this.rpcMs,
        pollMs: this.cfg.confirmPollMs,
        now: this.ctx.now,
      },
      opts,
    );
  }
}
