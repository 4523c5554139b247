/**
 * The curtailment engine: demands in, device actions out.
 *
 *  - Demands (signals, commands, schedules, loss of central control, the
 *    fail-safe after a corrupt state file) combine into one target; the most
 *    restrictive wins. A new or stricter target sheds what is not shed yet;
 *    nothing comes back while any demand is active.
 *  - For every signal the plan is prepared ahead (each telemetry cycle and on
 *    every demand change), so an edge dispatches with no planning on its path.
 *  - Shedding runs every device in parallel with its own deadline and the
 *    escalation ladder of executor.ts.
 *  - When the last demand clears: hold-off (the longest of the cleared
 *    demands'), then a staggered ramp (ramp.ts) that a new demand stops at once.
 *  - Every transition is persisted (state-store.ts) before it is reported; at
 *    start the persisted curtailment is re-asserted before anything else, so a
 *    restart, a crash or a broker outage never restores load by itself.
 *  - Every activation is recorded in the evidence log with hr-clock timings.
 */
import type { Logger } from 'pino';
import type { DeviceDriver, Reading } from '../../drivers/contract.js';
import { sleep } from '../../drivers/lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../../drivers/lib/errors.js';
import type { EventType, RackState } from '../../protocol/messages.js';
import type { SignalCondition, SignalStatus } from '../signals.js';
import { hrNow } from './clock.js';
import type { EngineConfig } from './config.js';
import { DemandSet, nextChange, targetsEqual } from './demands.js';
import type { ActivationRecord, EvidenceLog } from './evidence.js';
import { PduReads, restoreDevice, shedDevice, type DeviceHandle, type ExecOptions, type ShedOutcome } from './executor.js';
import { plan } from './planner.js';
import { rampSteps } from './ramp.js';
import type { EngineStateStore, PersistedState, ShedRecord } from './state-store.js';
import type { Demand, PlanDevice, Target } from './types.js';

export type EnginePhase = PersistedState['phase'];

export interface EngineEvent {
  type: EventType;
  commandId: string | null;
  device?: string;
  durationMs?: number;
  error?: { code: string; message: string };
  demand?: DemandView;
  step?: string;
  activation?: string;
  holdOffUntil?: string;
  timings?: ActivationSummary;
}

export interface DemandView {
  key: string;
  source: Demand['source'];
  kind: Demand['kind'];
  maxW?: number;
  devices?: string[];
  since: string;
  startsAt?: string;
  until?: string;
  holdOffMs: number;
  commandId?: string | null;
}

export interface ActivationSummary {
  signalAt: string;
  decisionMs: number;
  lastDispatchMs: number;
  lastAckMs: number | null;
  lastConfirmMs: number | null;
  devices: number;
  failed: number;
  powerBeforeW: number | null;
  powerAfterW: number | null;
}

export interface WaveOutcome {
  ok: boolean;
  activation: string | null;
  durationMs: number;
  devices: ShedOutcome[];
  /** A restore stopped by a new demand. */
  preempted?: boolean;
}

export interface EngineOptions {
  devices: readonly DeviceDriver[];
  /** Each device's `feed` from config: the PDU outlets powering it. */
  feeds: ReadonlyMap<string, readonly { pdu: string; outlet: string }[]>;
  config: EngineConfig;
  signals: readonly SignalCondition[];
  deadlineMs: number;
  store: EngineStateStore;
  evidence: EvidenceLog;
  log: Logger;
  /** The latest reading of each device (the poller's map, updated by confirmations). */
  latest: ReadonlyMap<string, Reading>;
  emit: (e: EngineEvent) => void;
  onState: () => void;
  onReading: (device: string, r: Reading, requestedAt: number) => void;
  /** Activation records as they complete (benchmarks and tests). */
  onActivation?: (r: ActivationRecord) => void;
}

interface Wave {
  id: string;
  trigger: Demand;
  signalAt: number;
  decidedAt: number;
  devices: string[];
  done: Promise<WaveOutcome>;
}

interface Prepared {
  target: Target;
  handles: DeviceHandle[];
}

interface Ramp {
  ctl: AbortController;
  done: Promise<WaveOutcome>;
}

const FAIL_SAFE_KEY = 'fail-safe';
const RESTART_GRACE_MS = 10_000;

export class Engine {
  readonly demands = new DemandSet();
  /** Devices the engine holds down. */
  readonly shed = new Map<string, ShedRecord & { loadW: number; rank: number }>();
  /** Devices with a curtail in flight, by wave. */
  private readonly pending = new Map<string, Wave>();
  /** Devices whose last shed or restore failed (rack state partial). */
  private readonly failed = new Set<string>();
  private readonly handles = new Map<string, DeviceHandle>();
  private readonly planDevices: PlanDevice[];
  private readonly prepared = new Map<string, Prepared>();
  private readonly conditions = new Map<string, SignalCondition>();
  private readonly reads = new PduReads();
  /** Aborted at stop: in-flight actions give up. */
  private readonly life = new AbortController();
  private readonly shedOpts: ExecOptions;
  phase: EnginePhase = 'idle';
  since = Date.now();
  commandId: string | null = null;
  holdOffUntil: number | null = null;
  /** The longest hold-off of the demands cleared since load was last fully back. */
  private episodeHoldOffMs = 0;
  private holdTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private lostTimer: NodeJS.Timeout | undefined;
  private ramp: Ramp | undefined;
  private rampWaiters: ((o: WaveOutcome) => void)[] = [];
  private waves = 0;
  private startedAt = Date.now();
  /** Signal demands loaded from disk: cleared once their signal reads normal after the restart. */
  private readonly carried = new Set<string>();
  private persistQueued = false;
  private insufficient = false;
  private stopped = false;
  /** When the current wave's or ramp's trigger happened (device events' durationMs count from it). */
  private stepOrigin = hrNow();

  constructor(private readonly o: EngineOptions) {
    const byId = new Map(o.devices.map((d) => [d.id, d]));
    const prot = new Set(o.config.protected);
    const cut = new Set(o.config.hardCut);
    for (const d of o.devices) {
      const feed = o.feeds.get(d.id) ?? [];
      this.handles.set(d.id, {
        id: d.id,
        driver: d,
        hardCut: cut.has(d.id),
        feeds: feed.flatMap((f) => {
          const pdu = byId.get(f.pdu);
          return pdu ? [{ pdu, outlet: f.outlet, powerField: `outlet${f.outlet}PowerW` }] : [];
        }),
      });
    }
    this.planDevices = o.devices
      .filter((d) => d.kind === 'asic' || d.kind === 'gpu')
      .map((d) => ({ id: d.id, kind: d.kind, capabilities: d.capabilities, reading: undefined, protected: prot.has(d.id), priority: o.config.priority[d.id] ?? 0 }));
    for (const c of o.signals) this.conditions.set(c.id, c);
    this.shedOpts = {
      deadlineMs: o.deadlineMs,
      retries: o.config.retries,
      confirmByPower: o.config.confirmByPower,
      powerConfirmFraction: o.config.powerConfirmFraction,
      signal: this.life.signal,
      onStep: (device, s) => {
        const type = s.step === 'alarm' ? 'device.alarm' : !s.ok ? 'device.failed' : s.step === 'curtail' || s.step === 'restore' ? 'device.confirmed' : 'device.escalated';
        this.emit({ type, commandId: this.commandId, device, step: s.step, durationMs: Math.max(0, Math.round(s.at - this.stepOrigin)), ...(s.error ? { error: s.error } : {}) });
      },
      onReading: (device, r, at) => o.onReading(device, r, at),
      powerBeforeW: (device) => this.shed.get(device)?.loadW ?? o.latest.get(device)?.powerW ?? null,
      lastReading: (device) => o.latest.get(device),
    };
    this.prepare();
  }

  // ---------------------------------------------------------------- lifecycle

  /** Loads the persisted state and re-asserts an active curtailment. Call after the devices started, before anything else. */
  async start(): Promise<void> {
    this.startedAt = Date.now();
    const loaded = this.o.store.load();
    if (loaded.kind === 'corrupt') {
      this.o.log.error({ error: loaded.error, movedTo: loaded.movedTo }, 'curtailment state file is corrupt: shedding the rack until a restore command (fail-safe)');
      this.raise({ key: FAIL_SAFE_KEY, source: 'fail-safe', kind: 'shed', since: Date.now(), holdOffMs: this.o.config.commandHoldOffMs, commandId: null });
      return;
    }
    if (loaded.kind === 'none') return;
    const s = loaded.state;
    const now = Date.now();
    for (const d of s.demands) {
      if (d.until !== undefined && d.until <= now) continue;
      this.demands.add(d, now);
      if (d.source === 'signal') this.carried.add(d.key);
    }
    for (const [id, rec] of Object.entries(s.shed)) {
      if (this.handles.has(id)) this.shed.set(id, { ...rec, loadW: 0, rank: 0 });
    }
    if (this.shed.size === 0 && this.demands.size === 0) return;
    this.o.log.warn({ shed: this.shed.size, demands: this.demands.list().map((d) => d.key), phase: s.phase }, 're-asserting the curtailment in force before the restart');
    // re-assert: every device we held down is told again (it may have been woken while we were away)
    const again = [...this.shed.keys()];
    const reassert: Demand = { key: 'restart', source: 'fail-safe', kind: 'shed', devices: again, since: now, holdOffMs: 0, commandId: null };
    for (const id of again) this.shed.delete(id);
    const waves: Promise<WaveOutcome>[] = [];
    const w = this.dispatch(reassert, again.flatMap((id) => this.handles.get(id) ?? []), now);
    if (w) waves.push(w.done);
    const w2 = this.demands.size > 0 ? this.apply(this.demands.list()[0] as Demand) : null;
    if (w2) waves.push(w2.done);
    if (this.demands.size === 0) {
      // it was holding off or ramping: start the hold-off again, never shorter than what was left
      this.episodeHoldOffMs = Math.max(0, (s.holdOffUntil ?? now) - now);
      this.afterDemandsCleared();
    }
    await Promise.all(waves);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.holdTimer);
    clearTimeout(this.tickTimer);
    clearTimeout(this.lostTimer);
    this.ramp?.ctl.abort();
    this.life.abort();
    await Promise.allSettled([...new Set(this.pending.values())].map((w) => w.done));
    if (this.persistQueued) this.flushPersist();
  }

  // ---------------------------------------------------------------- inputs

  /** A signal condition changed (agent/signals.ts). The hot path: no planning, no await before the sends. */
  onSignal(type: 'signal.raised' | 'signal.cleared', id: string, measuredAt: number): Wave | null {
    const c = this.conditions.get(id);
    if (!c || c.demand === 'none') return null;
    const key = `signal:${id}`;
    if (type === 'signal.cleared') {
      this.clear(key, 'signal cleared');
      return null;
    }
    this.carried.delete(key);
    return this.raise({
      key,
      source: 'signal',
      kind: c.demand === 'budget' ? 'budget' : 'shed',
      ...(c.maxW !== undefined ? { maxW: c.maxW } : {}),
      since: measuredAt,
      holdOffMs: c.holdOffMs,
      commandId: null,
    });
  }

  /** Adds (or replaces) a demand and sheds what its target needs. Returns the wave it started, if any. */
  raise(d: Demand, deadlineMs?: number): Wave | null {
    if (this.stopped) return null;
    const prev = this.demands.get(d.key);
    this.demands.add(d, Date.now());
    if (this.ramp) this.stopRamp();
    if (this.holdOffUntil !== null) this.cancelHoldOff();
    const w = this.apply(d, deadlineMs);
    if (!prev) this.emit({ type: 'demand.added', commandId: d.commandId ?? null, demand: view(d) });
    this.scheduleTick();
    this.changed();
    return w;
  }

  /** Removes a demand; when none is left, load comes back after the hold-off. */
  clear(key: string, why: string): Demand | undefined {
    const d = this.demands.remove(key);
    if (!d) return undefined;
    this.carried.delete(key);
    this.episodeHoldOffMs = Math.max(this.episodeHoldOffMs, d.holdOffMs);
    this.o.log.info({ demand: key, why }, 'demand cleared');
    this.emit({ type: 'demand.cleared', commandId: d.commandId ?? null, demand: view(d) });
    if (this.activeCount() === 0) this.afterDemandsCleared();
    this.scheduleTick();
    this.prepare();
    this.changed();
    return d;
  }

  /** The MQTT connection to central control went up or down. */
  onCentral(connected: boolean): void {
    const c = this.o.config.centralLost;
    if (connected) {
      clearTimeout(this.lostTimer);
      this.lostTimer = undefined;
      this.clear('central-lost', 'central control reachable again');
      return;
    }
    if (c.demand === 'none' || this.lostTimer) return;
    this.lostTimer = setTimeout(() => {
      this.lostTimer = undefined;
      this.o.log.warn({ afterMs: c.afterMs, demand: c.demand }, 'central control unreachable: fallback demand');
      this.raise({ key: 'central-lost', source: 'central-lost', kind: c.demand === 'budget' ? 'budget' : 'shed', ...(c.maxW !== undefined ? { maxW: c.maxW } : {}), since: Date.now(), holdOffMs: c.holdOffMs, commandId: null });
    }, c.afterMs);
    this.lostTimer.unref();
  }

  /** Every telemetry cycle: keep prepared plans current, clear carried signal demands whose signal reads normal. */
  onTelemetry(readings: ReadonlyMap<string, Reading>, signals: readonly SignalStatus[]): void {
    for (const pd of this.planDevices) pd.reading = readings.get(pd.id);
    if (this.carried.size > 0 && Date.now() - this.startedAt >= RESTART_GRACE_MS) {
      for (const st of signals) {
        const key = `signal:${st.id}`;
        if (this.carried.has(key) && !st.raised && st.lastFreshAt !== null && st.lastFreshAt >= this.startedAt) {
          this.clear(key, 'signal reads normal after the restart');
        }
      }
    }
    this.prepare();
  }

  // ---------------------------------------------------------------- commands

  /** `restore`: clears central control's demands; resolves when load is back (or says what still holds it). */
  async restore(commandId: string | null): Promise<WaveOutcome> {
    for (const d of this.demands.list()) {
      if (d.source === 'command' || d.source === 'schedule' || d.source === 'fail-safe') this.clear(d.key, `restore command ${commandId ?? ''}`);
    }
    const left = this.demands.list();
    if (left.length > 0) {
      throw new RackpilotError('DEMANDS_ACTIVE', `load stays down: ${left.map((d) => `${d.key} (${d.source})`).join(', ')} still active; it comes back after they clear and their hold-off`);
    }
    this.commandId = commandId;
    if (this.ramp) return this.ramp.done;
    if (this.holdOffUntil === null && this.shed.size === 0 && this.failed.size === 0 && this.pending.size === 0) {
      return { ok: true, activation: null, durationMs: 0, devices: [] };
    }
    if (this.holdOffUntil === null && this.pending.size === 0) this.afterDemandsCleared();
    return new Promise((resolve) => this.rampWaiters.push(resolve));
  }

  /** Removes every budget demand from central control (or the one named). */
  clearBudget(id: string | undefined): number {
    let n = 0;
    for (const d of this.demands.list()) {
      if (d.key.startsWith('budget:') && (id === undefined || d.key === `budget:${id}`)) {
        this.clear(d.key, 'clear-budget command');
        n++;
      }
    }
    return n;
  }

  // ---------------------------------------------------------------- views

  get state(): RackState {
    if (this.pending.size > 0) return 'curtailing';
    if (this.ramp) return 'restoring';
    if (this.holdOffUntil !== null) return 'holdoff';
    if (this.activeCount() > 0 || this.shed.size > 0) return this.failed.size > 0 || this.insufficient ? 'partial' : 'curtailed';
    if (this.failed.size > 0) return 'partial';
    return 'running';
  }

  /** True once the engine acted or holds something: the rack state is its, not inferred from readings. */
  get engaged(): boolean {
    return this.waves > 0 || this.demands.size > 0 || this.shed.size > 0;
  }

  demandViews(): DemandView[] {
    return this.demands.list().map(view);
  }

  // ---------------------------------------------------------------- internals

  private activeCount(): number {
    return this.demands.size;
  }

  private emit(e: EngineEvent): void {
    try {
      this.o.emit(e);
    } catch (err) {
      this.o.log.error({ err }, 'engine event sink failed');
    }
  }

  private changed(): void {
    this.since = Date.now();
    this.persist();
    this.o.onState();
  }

  /** The plan for the current demands, taken from the prepared ones when it matches. */
  private apply(trigger: Demand, deadlineMs?: number): Wave | null {
    const now = Date.now();
    const target = this.demands.activeTarget(now);
    const prep = this.prepared.get(trigger.key);
    let handles: DeviceHandle[];
    if (prep && targetsEqual(prep.target, target)) {
      handles = prep.handles;
    } else {
      handles = this.planHandles(target, true);
    }
    return this.dispatch(trigger, handles, trigger.since, deadlineMs);
  }

  private planHandles(target: Target, report: boolean): DeviceHandle[] {
    const p = plan(target, this.planDevices, { meteredPowerW: this.meteredW(), alreadyShed: new Set(this.shed.keys()) });
    if (!report) return p.steps.flatMap((s) => this.handles.get(s.device) ?? []);
    if (!p.sufficient && target.maxW !== null && !this.insufficient) {
      this.emit({ type: 'budget.unreachable', commandId: this.commandId, error: { code: 'BUDGET_UNREACHABLE', message: `rack power ${p.powerW ?? 'unknown'} W cannot be brought to ${target.maxW} W by shedding everything allowed (expected ${p.expectedW ?? 'unknown'} W)` } });
    }
    this.insufficient = !p.sufficient && target.maxW !== null;
    return p.steps.flatMap((s) => this.handles.get(s.device) ?? []);
  }

  private meteredW(): number | null {
    let sum = 0;
    let any = false;
    for (const d of this.o.devices) {
      if (d.kind !== 'meter') continue;
      const r = this.o.latest.get(d.id);
      if (r?.freshness === 'fresh' && r.powerW !== null) {
        sum += r.powerW;
        any = true;
      }
    }
    return any ? sum : null;
  }

  /** Prepares, for each signal, the handles its raise would dispatch given the other demands. */
  private prepare(): void {
    const now = Date.now();
    for (const c of this.conditions.values()) {
      if (c.demand === 'none') continue;
      const key = `signal:${c.id}`;
      const probe = new DemandSet();
      for (const d of this.demands.list()) probe.add(d, now);
      probe.add({ key, source: 'signal', kind: c.demand === 'budget' ? 'budget' : 'shed', ...(c.maxW !== undefined ? { maxW: c.maxW } : {}), since: now, holdOffMs: c.holdOffMs }, now);
      const target = probe.activeTarget(now);
      this.prepared.set(key, { target, handles: this.planHandles(target, false) });
    }
  }

  /** Issues the sends for every handle not shed or in flight yet. */
  private dispatch(trigger: Demand, handles: readonly DeviceHandle[], signalAt: number, deadlineMs?: number): Wave | null {
    const todo: DeviceHandle[] = [];
    for (const h of handles) if (!this.shed.has(h.id) && !this.pending.has(h.id)) todo.push(h);
    if (todo.length === 0) return null;
    const decidedAt = hrNow();
    this.stepOrigin = signalAt;
    const opts = deadlineMs === undefined ? this.shedOpts : { ...this.shedOpts, deadlineMs };
    const jobs = todo.map((h) => shedDevice(h, opts, this.reads));
    // everything below runs after every send was issued
    const id = `act-${Math.floor(decidedAt)}-${++this.waves}`;
    const loads = new Map(todo.map((h, i) => [h.id, { loadW: this.o.latest.get(h.id)?.powerW ?? 0, rank: i }]));
    const wave: Wave = { id, trigger, signalAt, decidedAt, devices: todo.map((h) => h.id), done: undefined as unknown as Promise<WaveOutcome> };
    for (const h of todo) {
      this.pending.set(h.id, wave);
      this.failed.delete(h.id);
    }
    this.commandId = trigger.commandId ?? null;
    this.phase = 'curtailing';
    wave.done = Promise.all(jobs).then((outs) => this.settle(wave, outs, loads));
    this.o.evidence.begin({ id, trigger: triggerOf(trigger), signalAt, decidedAt, devices: [], powerBeforeW: null, powerAfterW: null });
    this.emit({ type: 'curtail.started', commandId: this.commandId, activation: id, durationMs: Math.max(0, Date.now() - trigger.since), demand: view(trigger) });
    this.changed();
    return wave;
  }

  private settle(wave: Wave, outs: ShedOutcome[], loads: Map<string, { loadW: number; rank: number }>): WaveOutcome {
    for (const out of outs) {
      if (this.pending.get(out.id) === wave) this.pending.delete(out.id);
      if (out.ok && out.via) {
        const l = loads.get(out.id);
        this.shed.set(out.id, { via: out.via, at: Date.now(), ...(out.cutOutlets ? { outlets: out.cutOutlets } : {}), ...(out.previous ? { previous: out.previous } : {}), loadW: l?.loadW ?? 0, rank: l?.rank ?? 0 });
      } else this.failed.add(out.id);
    }
    const completedAt = hrNow();
    const rec = this.o.evidence.complete(wave.id, outs, completedAt);
    const failed = outs.filter((x) => !x.ok).length;
    const ok = failed === 0;
    const summary = summarize(wave, outs, rec);
    this.emit({
      type: ok ? 'curtail.completed' : 'curtail.failed',
      commandId: wave.trigger.commandId ?? null,
      activation: wave.id,
      durationMs: Math.max(0, completedAt - wave.signalAt),
      timings: summary,
      ...(ok ? {} : { error: { code: 'NOT_CONFIRMED', message: `${failed} of ${outs.length} device(s) were not shed: ${outs.filter((x) => !x.ok).map((x) => `${x.id}: ${x.error?.code ?? 'FAILED'}`).join(', ')}` } }),
    });
    if (rec) this.o.onActivation?.(rec);
    if (this.pending.size === 0) {
      this.phase = this.activeCount() > 0 ? 'curtailed' : this.phase;
      if (this.activeCount() === 0 && !this.stopped) this.afterDemandsCleared();
    }
    this.changed();
    return { ok, activation: wave.id, durationMs: Math.max(0, completedAt - wave.signalAt), devices: outs };
  }

  private afterDemandsCleared(): void {
    if (this.pending.size > 0 || this.stopped) return;
    if (this.shed.size === 0 && this.failed.size === 0) {
      this.phase = 'idle';
      this.episodeHoldOffMs = 0;
      this.resolveRamp({ ok: true, activation: null, durationMs: 0, devices: [] });
      return;
    }
    const wait = this.episodeHoldOffMs;
    this.holdOffUntil = Date.now() + wait;
    this.phase = 'holdoff';
    clearTimeout(this.holdTimer);
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined;
      this.holdOffUntil = null;
      this.startRamp();
    }, wait);
    this.emit({ type: 'restore.scheduled', commandId: this.commandId, holdOffUntil: new Date(this.holdOffUntil).toISOString(), durationMs: wait });
  }

  private cancelHoldOff(): void {
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    this.holdOffUntil = null;
  }

  private startRamp(): void {
    const ctl = new AbortController();
    const done = this.runRamp(ctl.signal);
    this.ramp = { ctl, done };
    this.phase = 'restoring';
    this.changed();
    void done.then((o) => {
      if (this.ramp?.done === done) this.ramp = undefined;
      if (!o.preempted) this.resolveRamp(o);
      this.changed();
    });
  }

  private stopRamp(): void {
    const r = this.ramp;
    if (!r) return;
    this.ramp = undefined;
    r.ctl.abort();
    this.emit({ type: 'restore.stopped', commandId: this.commandId, error: { code: 'PREEMPTED', message: 'a new demand stopped the restore ramp' } });
    this.resolveRamp({ ok: false, activation: null, durationMs: 0, devices: [], preempted: true });
  }

  private resolveRamp(o: WaveOutcome): void {
    const w = this.rampWaiters;
    this.rampWaiters = [];
    for (const f of w) f(o);
  }

  private async runRamp(signal: AbortSignal): Promise<WaveOutcome> {
    const t0 = hrNow();
    this.stepOrigin = t0;
    const ids = new Set([...this.shed.keys(), ...this.failed]);
    const steps = rampSteps(
      [...ids].flatMap((id) => {
        const h = this.handles.get(id);
        const s = this.shed.get(id);
        return h ? [{ id, kind: h.driver.kind, cut: s?.via === 'cut', loadW: s?.loadW ?? 0, rank: s?.rank ?? 0, shedRank: s?.rank ?? 0 }] : [];
      }),
      this.o.config.restore,
    );
    this.emit({ type: 'restore.started', commandId: this.commandId, durationMs: 0 });
    const opts: ExecOptions = { ...this.shedOpts, signal: AbortSignal.any([signal, this.life.signal]) };
    const jobs: Promise<ShedOutcome>[] = [];
    for (let i = 0; i < steps.length; i++) {
      if (signal.aborted) break;
      const step = steps[i] ?? [];
      for (const id of step) {
        const h = this.handles.get(id);
        if (!h) continue;
        const rec = this.shed.get(id);
        // from here the device may be running again: a new demand must shed it afresh
        this.shed.delete(id);
        this.failed.delete(id);
        jobs.push(
          restoreDevice(h, rec, opts).then((out) => {
            if (!out.ok && !signal.aborted && rec) {
              this.shed.set(id, rec); // still held down as far as we know: the next restore retries it
              this.failed.add(id);
            }
            return out;
          }),
        );
      }
      this.emit({ type: 'restore.step', commandId: this.commandId, durationMs: Math.round(hrNow() - t0), step: `${i + 1}/${steps.length}` });
      this.persist();
      this.o.onState();
      if (i < steps.length - 1) await sleep(this.o.config.restore.stepIntervalMs, signal).catch(() => undefined);
    }
    const devices = await Promise.all(jobs);
    const durationMs = Math.round(hrNow() - t0);
    if (signal.aborted) return { ok: false, activation: null, durationMs, devices, preempted: true };
    const failed = devices.filter((d) => !d.ok);
    this.phase = failed.length === 0 ? 'idle' : 'curtailed';
    if (failed.length === 0) this.episodeHoldOffMs = 0;
    this.emit({
      type: failed.length === 0 ? 'restore.completed' : 'restore.failed',
      commandId: this.commandId,
      durationMs,
      ...(failed.length === 0 ? {} : { error: { code: 'NOT_CONFIRMED', message: `${failed.length} of ${devices.length} device(s) did not confirm restore: ${failed.map((d) => `${d.id}: ${d.error?.code ?? 'FAILED'}`).join(', ')}` } }),
    });
    return { ok: failed.length === 0, activation: null, durationMs, devices };
  }

  /** Timer for scheduled windows starting and demands running out. */
  private scheduleTick(): void {
    clearTimeout(this.tickTimer);
    const now = Date.now();
    const next = nextChange(this.demands.list(), now);
    if (next === null || this.stopped) return;
    this.tickTimer = setTimeout(() => this.tick(), Math.max(0, Math.min(next - now, 2 ** 31 - 1)));
    this.tickTimer.unref();
  }

  private tick(): void {
    const now = Date.now();
    for (const d of this.demands.list()) if (d.until !== undefined && d.until <= now) this.clear(d.key, 'ran out');
    for (const d of this.demands.list()) {
      if (d.startsAt !== undefined && d.startsAt <= now && d.startsAt > now - 60_000) this.apply(d);
    }
    this.scheduleTick();
    this.changed();
  }

  /** Persists after the current tick (after the sends), coalesced. */
  private persist(): void {
    if (this.persistQueued) return;
    this.persistQueued = true;
    setImmediate(() => this.flushPersist());
  }

  private flushPersist(): void {
    if (!this.persistQueued) return;
    this.persistQueued = false;
    const shed: Record<string, ShedRecord> = {};
    for (const [id, r] of this.shed) shed[id] = { via: r.via, at: r.at, ...(r.outlets ? { outlets: r.outlets } : {}), ...(r.previous ? { previous: r.previous } : {}) };
    // devices with a curtail in flight count as shed: after a crash they are re-asserted
    for (const id of this.pending.keys()) shed[id] ??= { via: 'curtail', at: Date.now() };
    try {
      this.o.store.save({ version: 1, savedAt: Date.now(), phase: this.phase, demands: this.demands.list().filter((d) => d.key !== 'restart'), shed, holdOffUntil: this.holdOffUntil });
    } catch (err) {
      this.o.log.error({ error: toRackpilotError(err).toJSON() }, 'could not persist the curtailment state');
    }
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

export function view(d: Demand): DemandView {
  return {
    key: d.key,
    source: d.source,
    kind: d.kind,
    ...(d.maxW !== undefined ? { maxW: d.maxW } : {}),
    ...(d.devices ? { devices: d.devices } : {}),
    since: iso(d.since),
    ...(d.startsAt !== undefined ? { startsAt: iso(d.startsAt) } : {}),
    ...(d.until !== undefined ? { until: iso(d.until) } : {}),
    holdOffMs: d.holdOffMs,
    ...(d.commandId !== undefined ? { commandId: d.commandId } : {}),
  };
}

function triggerOf(d: Demand): ActivationRecord['trigger'] {
  return {
    demand: d.key,
    source: d.source,
    kind: d.kind,
    ...(d.maxW !== undefined ? { maxW: d.maxW } : {}),
    ...(d.key.startsWith('signal:') ? { signal: d.key.slice(7) } : {}),
    commandId: d.commandId ?? null,
  };
}

function summarize(w: Wave, outs: readonly ShedOutcome[], rec: ActivationRecord | undefined): ActivationSummary {
  const max = (xs: (number | undefined)[]): number | null => {
    const v = xs.filter((x): x is number => x !== undefined);
    return v.length ? Math.max(...v) : null;
  };
  const r3 = (x: number): number => Math.round(x * 1000) / 1000;
  const lastAck = max(outs.map((x) => x.ackAt));
  const lastConfirm = max(outs.map((x) => x.confirmAt));
  return {
    signalAt: iso(w.signalAt),
    decisionMs: r3(Math.max(0, (outs[0]?.dispatchAt ?? w.decidedAt) - w.signalAt)),
    lastDispatchMs: r3(Math.max(0, (max(outs.map((x) => x.dispatchAt)) ?? w.decidedAt) - w.signalAt)),
    lastAckMs: lastAck === null ? null : r3(lastAck - w.signalAt),
    lastConfirmMs: lastConfirm === null ? null : r3(lastConfirm - w.signalAt),
    devices: outs.length,
    failed: outs.filter((x) => !x.ok).length,
    powerBeforeW: rec?.powerBeforeW ?? null,
    powerAfterW: rec?.powerAfterW ?? null,
  };
}
