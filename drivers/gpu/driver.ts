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
import { sleep, withDeadline } from '../lib/deadline.js';
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

interface Gpu extends Omit<GpuInfo, 'lost'> {
  /** Constraints from the last read (mW); 0 until the GPU was read once. */
  minMw: number;
  maxMw: number;
  defaultMw: number;
  /** The constraints were read at least once. */
  known: boolean;
  /** Why this GPU cannot be read now (lost), or null. */
  unreadable: string | null;
}

/** UUID stand-in for a lost GPU whose UUID could not be read. */
const UNKNOWN_UUID = 'unknown-gpu-index-';

/** Restore attempts back off from this, doubling, up to RESTORE_BACKOFF_MAX_MS. */
const RESTORE_BACKOFF_MS = 100;
const RESTORE_BACKOFF_MAX_MS = 2_000;

/** Codes retried on send besides transport failures: GPU writes are idempotent. */
const GPU_RETRY_ALSO = ['BUSY', 'READ_TIMEOUT'] as const;

interface ReadOutcome {
  gpus: Gpu[];
  states: (GpuPowerState | null)[];
  /** The first per-GPU failure, if any. */
  error: RackpilotError | undefined;
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
  /** Set when a restore found a GPU below its default limit with nothing remembered to return it to. */
  private restoreWarning: string | null = null;
  /** Actions in progress (a background restore only starts when none is). */
  private acting = 0;
  /** The background retry of a pending restore, when running. */
  private background: { ctl: AbortController; done: Promise<void> } | undefined;
  /** When a restore last failed or was retried in the background. */
  private lastPendingTry = 0;

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
    const g = this.gpus?.filter((x) => x.known);
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
    await this.stopBackground();
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

  /**
   * Lists and picks the GPUs. A GPU that cannot be opened or read (lost) is
   * kept, marked unreadable, so actions still reach the healthy ones and
   * report the lost one; only when no picked GPU answers does open fail.
   */
  private async open(): Promise<Gpu[]> {
    await this.store.load();
    const backend = this.backend ?? (await this.backendFactory(this.cfg));
    this.backend = backend;
    await backend.open();
    const listed = await backend.list();
    // a lost GPU whose UUID could not be read takes a remembered UUID no healthy GPU has (so restore still names it)
    const unmatched = this.store.capped().filter((u) => !listed.some((g) => g.uuid === u));
    const all = listed.map((g) => (g.lost !== undefined && !g.uuid ? { ...g, uuid: unmatched.shift() ?? `${UNKNOWN_UUID}${g.index}` } : g));
    const picked: GpuInfo[] = [];
    for (const ref of this.cfg.gpus ?? all.map((g) => g.uuid)) {
      let g = all.find((x) => (typeof ref === 'number' ? x.index === ref : x.uuid === ref));
      if (!g && typeof ref === 'string') {
        // a configured UUID may belong to a lost GPU whose UUID could not be read
        const anon = all.find((x) => x.uuid.startsWith(UNKNOWN_UUID) && !picked.includes(x));
        if (anon) g = { ...anon, uuid: ref };
      }
      if (!g) {
        throw new RackpilotError('CONFIG_INVALID', `${this.id}: no GPU ${String(ref)} on this server (it has ${all.map((x) => `${x.index}=${x.uuid}`).join(', ') || 'none'})`, { device: this.id });
      }
      picked.push(g);
    }
    const states = await Promise.allSettled(picked.map((g) => (g.lost !== undefined ? Promise.reject(lostError(g.uuid, g.index, g.lost)) : backend.read(g.uuid))));
    const firstBad = states.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (firstBad && states.every((r) => r.status === 'rejected')) throw toRackpilotError(firstBad.reason, { device: this.id });
    const gpus: Gpu[] = picked.map(({ lost: _lost, ...g }, i) => {
      const s = states[i];
      if (s?.status === 'fulfilled') return { ...g, minMw: s.value.minLimitMw, maxMw: s.value.maxLimitMw, defaultMw: s.value.defaultLimitMw, known: true, unreadable: null };
      const e = toRackpilotError(s?.reason, { device: this.id });
      this.ctx.logger.error({ gpu: g.uuid, index: g.index, err: e.toJSON() }, 'GPU cannot be read (lost?); acting on the other GPUs of this server');
      return { ...g, minMw: 0, maxMw: 0, defaultMw: 0, known: false, unreadable: e.message };
    });
    this.gpus = gpus;
    return gpus;
  }

  /** Reads every GPU; one that fails is reported in `error` and has a null state, the others are read all the same. */
  private async readAll(): Promise<ReadOutcome> {
    const gpus = await this.ensureGpus();
    const backend = this.backend;
    if (!backend) throw new RackpilotError('NOT_STARTED', `${this.id}: not started`);
    const results = await Promise.allSettled(gpus.map((g) => (g.uuid.startsWith(UNKNOWN_UUID) ? Promise.reject(lostError(g.uuid, g.index, g.unreadable ?? 'lost')) : backend.read(g.uuid))));
    let error: RackpilotError | undefined;
    const states = results.map((r, i) => {
      const g = gpus[i];
      if (r.status === 'fulfilled') {
        if (g) Object.assign(g, { minMw: r.value.minLimitMw, maxMw: r.value.maxLimitMw, defaultMw: r.value.defaultLimitMw, known: true, unreadable: null });
        return r.value;
      }
      const e = toRackpilotError(r.reason, { device: this.id });
      if (g) g.unreadable = e.message;
      error ??= e;
      return null;
    });
    if (error && states.every((s) => s === null)) throw error;
    return { gpus, states, error };
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const { gpus, states, error } = await withDeadline(`${this.id} read`, opts.deadlineMs, () => this.readAll(), opts.signal);
      const r = this.tracker.ok(this.toSample(gpus, states));
      if (!error) return r;
      // one GPU lost: the device reads stale with that error; the healthy GPUs' values are kept
      return this.failedReading(error);
    } catch (err) {
      return this.failedReading(toRackpilotError(err, { device: this.id }));
    } finally {
      this.retryPendingRestore();
    }
  }

  private failedReading(err: RackpilotError): Reading {
    const r = this.tracker.failed(err, this.ctx.now());
    // a pending restore stays visible even when the server does not answer
    return { ...r, fields: { ...r.fields, restorePending: this.store.restorePending, capped: this.store.capped().length > 0 } };
  }

  /** The read-back of an action: fresh as long as any GPU answered (the lost ones have null fields; confirmation looks at the GPUs acted on). */
  private async actionRead(opts: { deadlineMs: number; signal: AbortSignal }): Promise<Reading> {
    try {
      const { gpus, states } = await withDeadline(`${this.id} read`, opts.deadlineMs, () => this.readAll(), opts.signal);
      return this.tracker.ok(this.toSample(gpus, states));
    } catch (err) {
      return this.failedReading(toRackpilotError(err, { device: this.id }));
    }
  }

  private toSample(gpus: Gpu[], states: (GpuPowerState | null)[]): Sample {
    const capped = gpus.map((g, i) => {
      const e = this.store.get(g.uuid);
      const s = states[i];
      if (!e) return undefined;
      return s ? s.enforcedLimitMw <= e.capMw + LIMIT_TOLERANCE_MW : true;
    });
    const anyCap = capped.some((c) => c !== undefined);
    const state = !anyCap ? 'running' : capped.every((c) => c === true) ? 'curtailed' : 'transitioning';
    const fields = gpuFields(states);
    const lost = gpus.filter((g, i) => states[i] === null || states[i] === undefined);
    fields.lostGpus = lost.length > 0 ? lost.map((g) => `${g.index}=${g.uuid}`).join(', ') : null;
    fields.capped = anyCap;
    fields.restorePending = this.store.restorePending;
    fields.restoreError = this.store.restorePending ? this.lastRestoreError : null;
    fields.restoreWarning = this.restoreWarning;
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
      read: (o: { deadlineMs: number; signal: AbortSignal }) => this.actionRead(o),
      readDeadlineMs: this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs,
      pollMs: this.cfg.confirmPollMs,
      now: this.ctx.now,
      retryAlso: GPU_RETRY_ALSO,
    };
  }

  /** Runs a dispatcher action: a background restore retry gives way to it first. */
  private async acted<T>(fn: () => Promise<T>): Promise<T> {
    this.acting++;
    try {
      await this.stopBackground();
      return await fn();
    } finally {
      this.acting--;
    }
  }

  private async stopBackground(): Promise<void> {
    const bg = this.background;
    if (!bg) return;
    bg.ctl.abort();
    await bg.done;
  }

  /** While a restore is pending, retries it in the background every pendingRestoreRetryMs (when no action runs), until it succeeds. */
  private retryPendingRestore(): void {
    if (!this.store.restorePending || this.acting > 0 || this.background || !this.gpus) return;
    const now = this.ctx.now();
    if (now - this.lastPendingTry < this.cfg.pendingRestoreRetryMs) return;
    this.lastPendingTry = now;
    const ctl = new AbortController();
    const deadlineMs = this.cfg.restoreAttempts * (this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs + this.cfg.confirmPollMs * 5) + 2_000;
    this.ctx.logger.info({ gpus: this.store.capped() }, 'retrying the pending GPU restore');
    const done = this.restoreImpl({ deadlineMs, signal: ctl.signal }).then(
      () => this.ctx.logger.info('pending GPU restore succeeded: GPUs back to their remembered limits'),
      (err: unknown) => this.ctx.logger.debug({ err: toRackpilotError(err).toJSON() }, 'background restore retry did not succeed'),
    );
    this.background = {
      ctl,
      done: done.finally(() => {
        this.background = undefined;
      }),
    };
  }

  /** Caps every GPU to its floor; confirmed when each enforced limit reads back at or below its cap. A lost GPU does not keep the others from being capped; it is reported after. */
  curtail(opts: ActionOptions): Promise<ActionResult> {
    return this.acted(() => this.curtailImpl(opts));
  }

  private async curtailImpl(opts: ActionOptions): Promise<ActionResult> {
    const targets = new Map<string, number>();
    const failed = new Map<string, RackpilotError>();
    const res = await actAndConfirm(
      {
        ...this.common('curtail (power cap)', 'every enforced limit at or below its cap'),
        send: async (signal) => {
          const gpus = await withDeadline(`${this.id} open`, this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs, () => this.ensureGpus(), signal);
          const backend = this.mustBackend();
          targets.clear();
          failed.clear();
          // a GPU that cannot be read (lost) must not keep the others from being capped
          const states = await Promise.allSettled(gpus.map((g) => (g.uuid.startsWith(UNKNOWN_UUID) ? Promise.reject(lostError(g.uuid, g.index, g.unreadable ?? 'lost')) : backend.read(g.uuid))));
          // remember first (persisted), then cap: a crash in between still restores the right value
          for (const [i, g] of gpus.entries()) {
            const s = states[i];
            if (s?.status !== 'fulfilled') {
              failed.set(g.uuid, toRackpilotError(s?.reason, { device: this.id, gpu: g.uuid }));
              continue;
            }
            const cap = this.capFor(g, s.value);
            await this.store.remember(g.uuid, s.value.limitMw, cap, this.ctx.now());
            targets.set(g.uuid, cap);
          }
          if (!this.store.restorePending) this.lastRestoreError = null;
          this.restoreWarning = null;
          const capping = gpus.filter((g) => targets.has(g.uuid));
          const rs = await Promise.allSettled(
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
          rs.forEach((r, i) => {
            const g = capping[i];
            if (g && r.status === 'rejected') {
              failed.set(g.uuid, toRackpilotError(r.reason, { device: this.id, gpu: g.uuid }));
              targets.delete(g.uuid);
            }
          });
          // nothing capped: the whole write failed (retried when it is a transport failure)
          if (targets.size === 0 && failed.size > 0) throw [...failed.values()][0] ?? new RackpilotError('DEVICE_ERROR', `${this.id}: no GPU capped`);
        },
        confirmed: (r) => targets.size > 0 && this.gpusMatch(r, (uuid, i) => !targets.has(uuid) || num(r.fields[`gpu${i}EnforcedLimitW`]) * 1000 <= (targets.get(uuid) ?? -1) + LIMIT_TOLERANCE_MW / 2),
      },
      opts,
    );
    if (failed.size > 0) throw this.partialFailure('curtail', failed, targets.size, 'capped');
    return res;
  }

  /** The error of an action that reached some GPUs but not all: names the GPUs that failed. */
  private partialFailure(what: string, failed: Map<string, RackpilotError>, done: number, verb: string): RackpilotError {
    const first = [...failed.values()][0];
    const names = [...failed.entries()].map(([uuid, e]) => `GPU ${uuid}: ${e.message}`).join('; ');
    this.ctx.logger.error({ gpus: [...failed.keys()] }, `GPU ${what}: ${failed.size} GPU(s) failed; the ${done} other(s) were ${verb}`);
    return new RackpilotError(first?.code ?? 'DEVICE_ERROR', `${this.id}: ${what} ${verb} ${done} GPU(s) but failed on ${failed.size}: ${names}`, {
      device: this.id,
      failedGpus: [...failed.keys()].join(', '),
    });
  }

  /**
   * Returns every capped GPU to its remembered pre-curtail limit. Tries up to
   * `restoreAttempts` times within the deadline, backing off between tries;
   * when all fail the GPUs stay marked `restorePending` (persisted, in every
   * reading, retried in the background) and the error is logged and thrown.
   * A lost GPU does not keep the others from being restored. A restore
   * cancelled by the dispatcher is a cancel, not a failure.
   */
  restore(opts: ActionOptions): Promise<ActionResult> {
    return this.acted(() => this.restoreImpl(opts));
  }

  private async restoreImpl(opts: ActionOptions): Promise<ActionResult> {
    const started = this.ctx.now();
    const attempts = this.cfg.restoreAttempts;
    let last: RackpilotError | undefined;
    let result: ActionResult | undefined;
    let i = 0;
    for (; i < attempts; i++) {
      if (opts.signal?.aborted) throw this.restoreCancelled();
      if (i > 0) {
        const left = opts.deadlineMs - (this.ctx.now() - started);
        const wait = Math.min(RESTORE_BACKOFF_MS * 2 ** (i - 1), RESTORE_BACKOFF_MAX_MS, Math.floor(left / 2));
        if (wait <= 0) break;
        try {
          await sleep(wait, opts.signal);
        } catch {
          throw this.restoreCancelled();
        }
      }
      const left = opts.deadlineMs - (this.ctx.now() - started);
      if (left <= 0) break;
      try {
        const { res, failed, restored } = await this.restoreOnce({ ...opts, deadlineMs: Math.max(1, Math.floor(left / (attempts - i))) });
        if (restored.length > 0) await this.store.forget(restored);
        result = res;
        if (failed.size === 0) {
          this.lastRestoreError = null;
          this.checkUnremembered(res.reading);
          // the confirming reading was taken while the caps were still remembered
          const reading: Reading = {
            ...res.reading,
            state: 'running',
            fields: { ...res.reading.fields, capped: false, restorePending: false, restoreError: null, restoreWarning: this.restoreWarning },
          };
          return { ...res, reading, tookMs: this.ctx.now() - started };
        }
        last = this.partialFailure('restore', failed, restored.length, 'restored');
      } catch (err) {
        last = toRackpilotError(err, { device: this.id });
        if (last.code === 'CANCELLED' || opts.signal?.aborted) throw this.restoreCancelled();
      }
    }
    const e = last ?? new RackpilotError('DEADLINE_EXCEEDED', `${this.id}: restore got no time within ${opts.deadlineMs} ms`);
    const pending = this.store.capped();
    this.lastRestoreError = e.message;
    this.lastPendingTry = this.ctx.now();
    try {
      await this.store.markRestorePending(pending, true);
    } catch (err) {
      this.ctx.logger.error({ err: toRackpilotError(err).toJSON() }, 'cannot persist restorePending');
    }
    this.ctx.logger.error({ gpus: pending, err: e.toJSON() }, 'GPU restore FAILED: GPUs remain capped below their normal limit');
    throw new RackpilotError(e.code, `${this.id}: restore failed after ${Math.max(i, 1)} attempt(s); ${pending.length} GPU(s) still capped (restorePending): ${e.message}`, {
      device: this.id,
      restorePending: true,
      ...(result ? { restored: true } : {}),
      ...(e.context.failedGpus ? { failedGpus: e.context.failedGpus } : {}),
    });
  }

  private restoreCancelled(): RackpilotError {
    this.ctx.logger.info({ gpus: this.store.capped() }, 'GPU restore cancelled (a newer action took over)');
    return new RackpilotError('CANCELLED', `${this.id}: restore cancelled`, { device: this.id });
  }

  /** A GPU with nothing remembered that sits below its default limit after a restore: nothing returns it, so say so loudly. */
  private checkUnremembered(r: Reading): void {
    const low = (this.gpus ?? []).filter((g, i) => {
      if (!g.known || this.store.get(g.uuid)) return false;
      const limitMw = num(r.fields[`gpu${i}PowerLimitW`]) * 1000;
      return Number.isFinite(limitMw) && limitMw < g.defaultMw - LIMIT_TOLERANCE_MW;
    });
    if (low.length === 0) {
      this.restoreWarning = null;
      return;
    }
    const gpus = low.map((g) => g.uuid);
    this.restoreWarning = `${low.length} GPU(s) below their default power limit with no remembered pre-curtail limit (state file lost?): ${gpus.join(', ')}; check them and set the limit by hand (nvidia-smi -pl)`;
    this.ctx.logger.error({ gpus }, `GPU restore: ${this.restoreWarning}`);
  }

  private async restoreOnce(opts: ActionOptions): Promise<{ res: ActionResult; failed: Map<string, RackpilotError>; restored: string[] }> {
    const want = new Map<string, number>();
    const failed = new Map<string, RackpilotError>();
    const res = await actAndConfirm(
      {
        ...this.common('restore (power limit)', 'the pre-curtail limit on every GPU'),
        send: async (signal) => {
          const gpus = await withDeadline(`${this.id} open`, this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs, () => this.ensureGpus(), signal);
          const backend = this.mustBackend();
          want.clear();
          failed.clear();
          for (const g of gpus) {
            const e = this.store.get(g.uuid);
            if (!e) continue;
            // a GPU never read has no constraints yet: its remembered limit is sent as is
            want.set(g.uuid, g.known ? Math.max(g.minMw, Math.min(e.preCurtailLimitMw, g.maxMw)) : e.preCurtailLimitMw);
          }
          const targets = gpus.filter((g) => want.has(g.uuid));
          const rs = await Promise.allSettled(
            targets.map(async (g) => {
              const mw = want.get(g.uuid);
              if (mw === undefined) return;
              if (g.uuid.startsWith(UNKNOWN_UUID)) throw lostError(g.uuid, g.index, g.unreadable ?? 'lost');
              await backend.setPowerLimit(g.uuid, mw);
              if (this.cfg.lockClocksMhz) {
                await backend.resetLockedClocks(g.uuid).catch((err: unknown) => this.ctx.logger.warn({ gpu: g.uuid, err: toRackpilotError(err).toJSON() }, 'resetting locked clocks failed'));
              }
            }),
          );
          rs.forEach((r, i) => {
            const g = targets[i];
            if (g && r.status === 'rejected') {
              failed.set(g.uuid, toRackpilotError(r.reason, { device: this.id, gpu: g.uuid }));
              want.delete(g.uuid);
            }
          });
          // nothing restored: the whole write failed (retried when it is a transport failure)
          if (want.size === 0 && failed.size > 0) throw [...failed.values()][0] ?? new RackpilotError('DEVICE_ERROR', `${this.id}: no GPU restored`);
        },
        confirmed: (r) =>
          this.gpusMatch(r, (uuid, i) => {
            const mw = want.get(uuid);
            return mw === undefined || Math.abs(num(r.fields[`gpu${i}PowerLimitW`]) * 1000 - mw) <= LIMIT_TOLERANCE_MW / 2;
          }),
      },
      opts,
    );
    return { res, failed, restored: [...want.keys()] };
  }

  /**
   * Sets a total power target in watts: split evenly across the GPUs, each
   * share clamped to its own constraints; the total must lie within
   * capabilities.powerTarget. Confirmed when every limit reads back.
   */
  setPowerTarget(watts: number, opts: ActionOptions): Promise<ActionResult> {
    return this.acted(() => this.setPowerTargetImpl(watts, opts));
  }

  private async setPowerTargetImpl(watts: number, opts: ActionOptions): Promise<ActionResult> {
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
export function gpuFields(all: readonly (GpuPowerState | null)[]): Record<string, FieldValue> {
  const f: Record<string, FieldValue> = { gpuCount: all.length };
  const temps: number[] = [];
  const utils: number[] = [];
  all.forEach((s, i) => {
    if (!s) {
      // a GPU that could not be read (lost): its values are unknown, not zero
      for (const k of ['PowerW', 'PowerLimitW', 'EnforcedLimitW', 'TemperatureC', 'UtilizationPct', 'EnergyJ']) f[`gpu${i}${k}`] = null;
      return;
    }
    f[`gpu${i}PowerW`] = w(s.powerMw);
    f[`gpu${i}PowerLimitW`] = w(s.limitMw);
    f[`gpu${i}EnforcedLimitW`] = w(s.enforcedLimitMw);
    f[`gpu${i}TemperatureC`] = s.temperatureC;
    f[`gpu${i}UtilizationPct`] = s.utilizationPct;
    f[`gpu${i}EnergyJ`] = w(s.energyMj);
    if (s.temperatureC !== null) temps.push(s.temperatureC);
    if (s.utilizationPct !== null) utils.push(s.utilizationPct);
  });
  const states = all.filter((s): s is GpuPowerState => s !== null);
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

function lostError(uuid: string, index: number, why: string): RackpilotError {
  return new RackpilotError('UNREACHABLE', `GPU ${uuid.startsWith(UNKNOWN_UUID) ? `index ${index}` : uuid} cannot be reached (lost?): ${why}`, { gpu: uuid, index });
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
