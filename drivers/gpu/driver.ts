/**
 * GPU driver: one device = one GPU server (all its GPUs or the `gpus` list),
 * reached through a GpuBackend: NVML on this machine (`mode: local`) or a
 * `rackpilot gpu-node` (`mode: node`). GPUs carry AI load, so curtail CAPS:
 * every GPU's power limit goes to the floor (never below its minimum
 * constraint, never above its current limit), with optional locked clocks;
 * the limit in force before is remembered in a state file first, and restore
 * puts it back. A failed restore is retried, then reported loudly
 * (`restorePending: true` in every reading, an error log, a thrown error).
 */
import type { ActionOptions, ActionResult, Capabilities, DeviceDriver, DriverContext, FieldValue, Reading } from '../contract.js';
import { actAndConfirm } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { ReadingTracker, type Sample } from '../lib/reading.js';
import type { GpuBackend, GpuInfo, GpuPowerState } from './backend.js';
import { NodeGpuBackend } from './node-client.js';
import type { GpuConfig } from './schema.js';
import { GpuStateStore } from './state-store.js';

/** Limits read back within this many mW count as equal (NVML reports whole mW; some boards round to 1 W). */
const LIMIT_TOLERANCE_MW = 1000;

export type BackendFactory = (cfg: GpuConfig) => Promise<GpuBackend>;

/** The backend for a config: the koffi binding (loaded only in local mode) or the gpu-node client. */
export const defaultBackendFactory: BackendFactory = async (cfg) => {
  if (cfg.mode === 'node') {
    return new NodeGpuBackend({
      host: cfg.host ?? '',
      port: cfg.port,
      key: cfg.key ?? '',
      connectTimeoutMs: cfg.timeouts.connectMs,
      readTimeoutMs: cfg.timeouts.readMs,
      maxResponseBytes: cfg.maxResponseBytes,
    });
  }
  const { LocalGpuBackend } = await import('./local.js');
  return new LocalGpuBackend(cfg.libraryPath === undefined ? {} : { libraryPath: cfg.libraryPath });
};

interface Gpu extends GpuInfo {
  /** Constraints from the last read (mW). */
  minMw: number;
  maxMw: number;
  defaultMw: number;
}

export class GpuDriver implements DeviceDriver {
  readonly kind = 'gpu' as const;
  readonly driverId = 'gpu';
  readonly id: string;
  private readonly tracker = new ReadingTracker();
  private readonly store: GpuStateStore;
  private backend: GpuBackend | undefined;
  private gpus: Gpu[] | undefined;
  private opening: Promise<Gpu[]> | undefined;
  private lastRestoreError: string | null = null;

  constructor(
    private readonly cfg: GpuConfig,
    private readonly ctx: DriverContext,
    private readonly backendFactory: BackendFactory = defaultBackendFactory,
  ) {
    this.id = cfg.id;
    this.store = new GpuStateStore(cfg.stateDir, cfg.id);
  }

  /** Power target range = the sum of the GPUs' constraints (known once the GPUs were listed). */
  get capabilities(): Capabilities {
    const g = this.gpus;
    const powerTarget = g && g.length > 0 ? { minW: Math.ceil(sum(g.map((x) => x.minMw)) / 1000), maxW: Math.floor(sum(g.map((x) => x.maxMw)) / 1000), reboots: false } : null;
    return { curtail: true, restore: true, powerTarget, profiles: false, switchOutlet: false };
  }

  /** The GPUs this device stands for (after start). */
  get gpuList(): readonly GpuInfo[] {
    return this.gpus ?? [];
  }

  /** Opens the backend, lists and selects the GPUs, loads the remembered limits. Throws when it cannot (the agent retries via read()). */
  async start(): Promise<void> {
    await this.store.load();
    if (this.store.capped().length > 0) {
      this.ctx.logger.warn({ gpus: this.store.capped() }, 'GPUs were capped when the agent last stopped; restore returns them to their remembered limits');
    }
    await this.ensureGpus();
  }

  async stop(): Promise<void> {
    const b = this.backend;
    this.backend = undefined;
    this.gpus = undefined;
    await b?.close().catch((err: unknown) => this.ctx.logger.debug({ err: toRackpilotError(err).toJSON() }, 'backend close failed'));
  }

  private ensureGpus(): Promise<Gpu[]> {
    if (this.gpus) return Promise.resolve(this.gpus);
    this.opening ??= this.open().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async open(): Promise<Gpu[]> {
    await this.store.load();
    const backend = this.backend ?? (await this.backendFactory(this.cfg));
    this.backend = backend;
    await backend.open();
    const all = await backend.list();
    const picked: GpuInfo[] = [];
    for (const ref of this.cfg.gpus ?? all.map((g) => g.uuid)) {
      const g = all.find((x) => (typeof ref === 'number' ? x.index === ref : x.uuid === ref));
      if (!g) {
        throw new RackpilotError('CONFIG_INVALID', `${this.id}: no GPU ${String(ref)} on this server (it has ${all.map((x) => `${x.index}=${x.uuid}`).join(', ') || 'none'})`, { device: this.id });
      }
      picked.push(g);
    }
    const gpus: Gpu[] = [];
    for (const g of picked) {
      const s = await backend.read(g.uuid);
      gpus.push({ ...g, minMw: s.minLimitMw, maxMw: s.maxLimitMw, defaultMw: s.defaultLimitMw });
    }
    this.gpus = gpus;
    return gpus;
  }

  private async readAll(): Promise<{ gpus: Gpu[]; states: GpuPowerState[] }> {
    const gpus = await this.ensureGpus();
    const backend = this.backend;
    if (!backend) throw new RackpilotError('NOT_STARTED', `${this.id}: not started`);
    const states = await Promise.all(gpus.map((g) => backend.read(g.uuid)));
    states.forEach((s, i) => {
      const g = gpus[i];
      if (g) Object.assign(g, { minMw: s.minLimitMw, maxMw: s.maxLimitMw, defaultMw: s.defaultLimitMw });
    });
    return { gpus, states };
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const { gpus, states } = await withDeadline(`${this.id} read`, opts.deadlineMs, () => this.readAll(), opts.signal);
      return this.tracker.ok(this.toSample(gpus, states));
    } catch (err) {
      const r = this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
      // a pending restore stays visible even when the server does not answer
      return { ...r, fields: { ...r.fields, restorePending: this.store.restorePending, capped: this.store.capped().length > 0 } };
    }
  }

  private toSample(gpus: Gpu[], states: GpuPowerState[]): Sample {
    const capped = gpus.map((g, i) => {
      const e = this.store.get(g.uuid);
      const s = states[i];
      return e && s ? s.enforcedLimitMw <= e.capMw + LIMIT_TOLERANCE_MW : undefined;
    });
    const anyCap = capped.some((c) => c !== undefined);
    const state = !anyCap ? 'running' : capped.every((c) => c === true) ? 'curtailed' : 'transitioning';
    const fields = gpuFields(states);
    fields.capped = anyCap;
    fields.restorePending = this.store.restorePending;
    fields.restoreError = this.store.restorePending ? this.lastRestoreError : null;
    return { ts: this.ctx.now(), state, powerW: fields.powerW as number, fields };
  }

  /** The cap (mW) for one GPU: the floor, within its constraints, never above the limit in force. */
  private capFor(g: Gpu, s: GpuPowerState): number {
    const floor = this.cfg.floorW !== undefined ? this.cfg.floorW * 1000 : Math.round((s.defaultLimitMw * (this.cfg.floorPct ?? 50)) / 100);
    return Math.max(s.minLimitMw, Math.min(floor, s.limitMw, s.maxLimitMw));
  }

  private common(what: string, want: string) {
    return {
      deviceId: this.id,
      what,
      want,
      read: (o: { deadlineMs: number; signal: AbortSignal }) => this.read(o),
      readDeadlineMs: this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs,
      pollMs: this.cfg.confirmPollMs,
      now: this.ctx.now,
    };
  }

  /** Caps every GPU to its floor; confirmed when each enforced limit reads back at or below its cap. */
  async curtail(opts: ActionOptions): Promise<ActionResult> {
    const targets = new Map<string, number>();
    return actAndConfirm(
      {
        ...this.common('curtail (power cap)', 'every enforced limit at or below its cap'),
        send: async (signal) => {
          const gpus = await withDeadline(`${this.id} open`, this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs, () => this.ensureGpus(), signal);
          const backend = this.mustBackend();
          // a GPU that cannot be read (lost) must not keep the others from being capped
          const states = await Promise.allSettled(gpus.map((g) => backend.read(g.uuid)));
          // remember first (persisted), then cap: a crash in between still restores the right value
          for (const [i, g] of gpus.entries()) {
            const s = states[i];
            if (s?.status !== 'fulfilled') continue;
            const cap = this.capFor(g, s.value);
            targets.set(g.uuid, cap);
            await this.store.remember(g.uuid, s.value.limitMw, cap, this.ctx.now());
          }
          const capping = gpus.filter((g) => targets.has(g.uuid));
          const unread = states.find((r): r is PromiseRejectedResult => r.status === 'rejected');
          await settleAll(
            capping.map(async (g) => {
              await backend.setPowerLimit(g.uuid, targets.get(g.uuid) ?? g.minMw);
              const lock = this.cfg.lockClocksMhz;
              if (lock) {
                try {
                  await backend.setLockedClocks(g.uuid, lock.min, lock.max);
                } catch (err) {
                  // the cap is what sheds power; a clock lock the GPU refuses is worth a warning, not a failed curtail
                  this.ctx.logger.warn({ gpu: g.uuid, err: toRackpilotError(err).toJSON() }, 'locking clocks failed; the power cap stands');
                }
              }
            }),
          );
          if (unread) throw toRackpilotError(unread.reason, { device: this.id });
        },
        confirmed: (r) => this.gpusMatch(r, (uuid, i) => num(r.fields[`gpu${i}EnforcedLimitW`]) * 1000 <= (targets.get(uuid) ?? -1) + LIMIT_TOLERANCE_MW / 2),
      },
      opts,
    );
  }

  /**
   * Returns every capped GPU to its remembered pre-curtail limit. Tries up to
   * `restoreAttempts` times within the deadline; when all fail the GPUs stay
   * marked `restorePending` (persisted, in every reading) and the error is
   * logged and thrown.
   */
  async restore(opts: ActionOptions): Promise<ActionResult> {
    const started = this.ctx.now();
    const attempts = this.cfg.restoreAttempts;
    let last: RackpilotError | undefined;
    for (let i = 0; i < attempts; i++) {
      const left = opts.deadlineMs - (this.ctx.now() - started);
      if (left <= 0 || opts.signal?.aborted) break;
      try {
        const r = await this.restoreOnce({ ...opts, deadlineMs: Math.max(1, Math.floor(left / (attempts - i))) });
        if (this.store.capped().length > 0) await this.store.forget(this.store.capped());
        this.lastRestoreError = null;
        // the confirming reading was taken while the caps were still remembered
        const reading: Reading = { ...r.reading, state: 'running', fields: { ...r.reading.fields, capped: false, restorePending: false, restoreError: null } };
        return { ...r, reading, tookMs: this.ctx.now() - started };
      } catch (err) {
        last = toRackpilotError(err, { device: this.id });
        if (last.code === 'CANCELLED') break;
      }
    }
    const e = last ?? new RackpilotError('DEADLINE_EXCEEDED', `${this.id}: restore got no time within ${opts.deadlineMs} ms`);
    const pending = this.store.capped();
    this.lastRestoreError = e.message;
    try {
      await this.store.markRestorePending(pending, true);
    } catch (err) {
      this.ctx.logger.error({ err: toRackpilotError(err).toJSON() }, 'cannot persist restorePending');
    }
    this.ctx.logger.error({ gpus: pending, err: e.toJSON() }, 'GPU restore FAILED: GPUs remain capped below their normal limit');
    throw new RackpilotError(e.code, `${this.id}: restore failed after ${attempts} attempt(s); ${pending.length} GPU(s) still capped (restorePending): ${e.message}`, {
      device: this.id,
      restorePending: true,
    });
  }

  private restoreOnce(opts: ActionOptions): Promise<ActionResult> {
    const want = new Map<string, number>();
    return actAndConfirm(
      {
        ...this.common('restore (power limit)', 'the pre-curtail limit on every GPU'),
        send: async (signal) => {
          const gpus = await withDeadline(`${this.id} open`, this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs, () => this.ensureGpus(), signal);
          const backend = this.mustBackend();
          for (const g of gpus) {
            const e = this.store.get(g.uuid);
            if (e) want.set(g.uuid, Math.max(g.minMw, Math.min(e.preCurtailLimitMw, g.maxMw)));
          }
          await settleAll(
            gpus.map(async (g) => {
              const mw = want.get(g.uuid);
              if (mw === undefined) return;
              await backend.setPowerLimit(g.uuid, mw);
              if (this.cfg.lockClocksMhz) {
                await backend.resetLockedClocks(g.uuid).catch((err: unknown) => this.ctx.logger.warn({ gpu: g.uuid, err: toRackpilotError(err).toJSON() }, 'resetting locked clocks failed'));
              }
            }),
          );
        },
        confirmed: (r) =>
          this.gpusMatch(r, (uuid, i) => {
            const mw = want.get(uuid);
            return mw === undefined || Math.abs(num(r.fields[`gpu${i}PowerLimitW`]) * 1000 - mw) <= LIMIT_TOLERANCE_MW / 2;
          }),
      },
      opts,
    );
  }

  /**
   * Sets a total power target in watts: split evenly across the GPUs, each
   * share clamped to its own constraints; the total must lie within
   * capabilities.powerTarget. Confirmed when every limit reads back.
   */
  async setPowerTarget(watts: number, opts: ActionOptions): Promise<ActionResult> {
    const gpus = await withDeadline(`${this.id} open`, opts.deadlineMs, () => this.ensureGpus(), opts.signal);
    const range = this.capabilities.powerTarget;
    if (!range || !Number.isFinite(watts) || watts < range.minW || watts > range.maxW) {
      throw new RackpilotError('CONFIG_INVALID', `${this.id}: power target ${watts} W is outside ${range ? `${range.minW}..${range.maxW}` : 'the (unknown)'} W the GPUs allow`, { device: this.id });
    }
    const share = (watts * 1000) / gpus.length;
    const want = new Map(gpus.map((g) => [g.uuid, Math.round(Math.max(g.minMw, Math.min(share, g.maxMw)))]));
    return actAndConfirm(
      {
        ...this.common(`set power target ${watts} W`, 'the new limit on every GPU'),
        send: async () => {
          const backend = this.mustBackend();
          await settleAll(gpus.map((g) => backend.setPowerLimit(g.uuid, want.get(g.uuid) ?? g.maxMw)));
        },
        confirmed: (r) => this.gpusMatch(r, (uuid, i) => Math.abs(num(r.fields[`gpu${i}PowerLimitW`]) * 1000 - (want.get(uuid) ?? -1e9)) <= LIMIT_TOLERANCE_MW / 2),
      },
      opts,
    );
  }

  private gpusMatch(r: Reading, ok: (uuid: string, index: number) => boolean): boolean {
    const gpus = this.gpus;
    return !!gpus && gpus.every((g, i) => ok(g.uuid, i));
  }

  private mustBackend(): GpuBackend {
    if (!this.backend) throw new RackpilotError('NOT_STARTED', `${this.id}: the GPU backend is not open`);
    return this.backend;
  }
}

const w = (mw: number): number => Math.round(mw) / 1000;

/**
 * Flat reading fields: gpuN* per GPU (N = position in this device's GPU list),
 * and totals (powerW, powerLimitW, enforcedLimitW, energyJ), the hottest
 * temperatureC and the mean utilizationPct.
 */
export function gpuFields(states: readonly GpuPowerState[]): Record<string, FieldValue> {
  const f: Record<string, FieldValue> = { gpuCount: states.length };
  const temps: number[] = [];
  const utils: number[] = [];
  states.forEach((s, i) => {
    f[`gpu${i}PowerW`] = w(s.powerMw);
    f[`gpu${i}PowerLimitW`] = w(s.limitMw);
    f[`gpu${i}EnforcedLimitW`] = w(s.enforcedLimitMw);
    f[`gpu${i}TemperatureC`] = s.temperatureC;
    f[`gpu${i}UtilizationPct`] = s.utilizationPct;
    f[`gpu${i}EnergyJ`] = w(s.energyMj);
    if (s.temperatureC !== null) temps.push(s.temperatureC);
    if (s.utilizationPct !== null) utils.push(s.utilizationPct);
  });
  f.powerW = w(sum(states.map((s) => s.powerMw)));
  f.powerLimitW = w(sum(states.map((s) => s.limitMw)));
  f.enforcedLimitW = w(sum(states.map((s) => s.enforcedLimitMw)));
  f.energyJ = w(sum(states.map((s) => s.energyMj)));
  f.temperatureC = temps.length > 0 ? Math.max(...temps) : null;
  f.utilizationPct = utils.length > 0 ? Math.round((sum(utils) / utils.length) * 10) / 10 : null;
  return f;
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

function num(v: unknown): number {
  return typeof v === 'number' ? v : NaN;
}

/** Runs every GPU's write; throws the first failure after all settled (so one lost GPU does not stop the others). */
async function settleAll(ps: Promise<unknown>[]): Promise<void> {
  const rs = await Promise.allSettled(ps);
  const bad = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) throw toRackpilotError(bad.reason);
}
