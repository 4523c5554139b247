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
 *  - When the last active demand clears: hold-off (the longest of the cleared
 *    demands'), then a staggered ramp (ramp.ts) that a new demand stops at once.
 *  - Every transition is persisted before it is reported (reporter.ts); at
 *    start the persisted curtailment is re-asserted before anything else, so a
 *    restart, a crash or a broker outage never restores load by itself.
 *  - Every activation is recorded in the evidence log with hr-clock timings.
 */
import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import type { DeviceDriver, Reading } from '../../drivers/contract.js';
import { RackpilotError } from '../../drivers/lib/errors.js';
import type { EventType, RackState } from '../../protocol/messages.js';
import type { SignalCondition, SignalStatus } from '../signals.js';
import { AbortGroup } from '../abort-group.js';
import { holdUntil as holdReaping } from '../../drivers/lib/socket-reaper.js';
import { hrNow } from './clock.js';
import type { EngineConfig } from './config.js';
import { DemandSet, isActive, nextTickIn, targetsEqual } from './demands.js';
import type { ActivationRecord, EvidenceLog } from './evidence.js';
import { fanOut, FINISH_WAIT_MAX_MS, fireArmed, PduReads, settledOrAfter, shedDevice, WaveAcks, type DeviceHandle, type ExecOptions, type ShedOutcome } from './executor.js';
import { plan } from './planner.js';
import { rampSteps, restoreInSteps } from './ramp.js';
import { Reporter } from './reporter.js';
import type { EngineStateStore, PersistedState, ShedRecord } from './state-store.js';
import type { Demand, PlanDevice, Target } from './types.js';
import { summarize, triggerOf, view, type ActivationSummary, type DemandView } from './views.js';


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
  /** A curtailment wave's sends went out; `acked` settles once its devices acknowledged (WaveAcks, at most ACK_HOLD_MAX_MS). */
  onWave?: (acked: Promise<void>) => void;
}

/** The result of a demand: the wave it started, or the waves in flight it joined. */
export interface Wave {
  id: string | null;
  done: Promise<WaveOutcome>;
}

interface RunningWave extends Wave {
  id: string;
  trigger: Demand;
  signalAt: number;
  decidedAt: number;
}

interface Prepared {
  target: Target;
  handles: DeviceHandle[];
  sufficient: boolean;
  powerW: number | null;
  expectedW: number | null;
}

interface Ramp {
  ctl: AbortController;
  done: Promise<WaveOutcome>;
}

type Shed = ShedRecord & { loadW: number; rank: number };

const FAIL_SAFE_KEY = 'fail-safe';
const RESTART_GRACE_MS = 10_000;

export class Engine {
  readonly demands = new DemandSet();
  /** Devices the engine holds down. */
  readonly shed = new Map<string, Shed>();
  /** Devices with a curtail in flight, by wave. */
  private readonly pending = new Map<string, RunningWave>();
  /** Devices whose last shed or restore failed (rack state partial). */
  private readonly failed = new Set<string>();
  private readonly handles = new Map<string, DeviceHandle>();
  private readonly planDevices: PlanDevice[];
  private readonly prepared = new Map<string, Prepared>();
  private readonly conditions = new Map<string, SignalCondition>();
  private readonly reads = new PduReads();
  /** Aborted at stop: in-flight actions give up. */
  private readonly life = new AbortController();
  private readonly reporter: Reporter;
  /** Per-wave options share this base (the hot path copies nothing else). */
  private readonly base: Omit<ExecOptions, 'onStep'>;
  phase: EnginePhase = 'idle';
  since = Date.now();
  commandId: string | null = null;
  holdOffUntil: number | null = null;
  private lastState: RackState = 'running';
  /** The longest hold-off of the demands cleared since load was last fully back. */
  private episodeHoldOffMs = 0;
  private holdTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  /** The time the last tick acted for: the starts and ends up to it are done. */
  private tickedAt = Date.now();
  private lostTimer: NodeJS.Timeout | undefined;
  private ramp: Ramp | undefined;
  private rampDeadlineMs: number | undefined;
  private rampWaiters: ((o: WaveOutcome) => void)[] = [];
  private waves = 0;
  /** The latest wave's answers are in (or FINISH_WAIT_MAX_MS passed): its devices are finished from then on. */
  private answersIn: Promise<void> | undefined;
  /** `answersIn` has not settled yet. */
  private collecting = false;
  private startedAt = Date.now();
  /** Signal demands loaded from disk: cleared once their signal reads normal after the restart. */
  private readonly carried = new Set<string>();
  private insufficient = false;
  private stopped = false;

  constructor(private readonly o: EngineOptions) {
    // each wave and ramp in flight listens on the life signal once (its AbortGroup), never once per device
    setMaxListeners(64, this.life.signal);
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
    this.base = {
      deadlineMs: o.deadlineMs,
      retries: o.config.retries,
      confirmByPower: o.config.confirmByPower,
      powerConfirmFraction: o.config.powerConfirmFraction,
      signal: this.life.signal,
      onReading: (device, r, at) => o.onReading(device, r, at),
      powerBeforeW: (device) => this.shed.get(device)?.loadW ?? o.latest.get(device)?.powerW ?? null,
      lastReading: (device) => o.latest.get(device),
    };
    this.reporter = new Reporter(o.store, () => this.snapshot(), o.log, () => this.answersPending);
    this.prepare();
  }

  /** Options for one wave or ramp: its device events carry its command id and count from its origin. */
  private execOptions(commandId: string | null, origin: number, over: Partial<ExecOptions> = {}): ExecOptions {
    return {
      ...this.base,
      ...over,
      onStep: (device, s) => {
        const type = s.step === 'alarm' ? 'device.alarm' : !s.ok ? 'device.failed' : s.step === 'curtail' || s.step === 'restore' ? 'device.confirmed' : 'device.escalated';
        this.emit({ type, commandId, device, step: s.step, durationMs: Math.max(0, Math.round(s.at - origin)), ...(s.error ? { error: s.error } : {}) });
      },
    };
  }

  // ---------------------------------------------------------------- lifecycle

  /** Loads the persisted state and re-asserts an active curtailment. Call after the devices started, before anything else. */
  async start(): Promise<void> {
    this.startedAt = Date.now();
    const loaded = this.o.store.load();
    if (loaded.kind === 'corrupt') {
      this.o.log.error({ error: loaded.error, movedTo: loaded.movedTo }, 'curtailment state file is corrupt: shedding the rack until a restore command (fail-safe)');
      const w = this.raise({ key: FAIL_SAFE_KEY, source: 'fail-safe', kind: 'shed', since: Date.now(), holdOffMs: this.o.config.commandHoldOffMs, commandId: null });
      await w?.done;
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
    const again: string[] = [];
    for (const id of Object.keys(s.shed)) if (this.handles.has(id)) again.push(id);
    if (again.length === 0 && this.demands.size === 0) return;
    this.o.log.warn({ shed: again.length, demands: this.demands.list().map((d) => d.key), phase: s.phase }, 're-asserting the curtailment in force before the restart');
    // every device we held down is told again (it may have been woken while we were away)
    const reassert: Demand = { key: 'restart', source: 'fail-safe', kind: 'shed', devices: again, since: now, holdOffMs: 0, commandId: null };
    const waves: Promise<WaveOutcome>[] = [];
    const w = this.dispatch(reassert, again.flatMap((id) => this.handles.get(id) ?? []), now, undefined, (id) => s.shed[id]);
    if (w) waves.push(w.done);
    const first = this.demands.list().find((d) => isActive(d, now));
    const w2 = first ? this.apply(first) : null;
    if (w2) waves.push(w2.done);
    this.scheduleTick();
    if (this.activeCount() === 0) {
      // it was holding off or ramping: the hold-off starts again, never shorter than what was left
      this.episodeHoldOffMs = Math.max(0, (s.holdOffUntil ?? now) - now);
      if (w) await w.done;
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
    await this.reporter.idle();
  }

  // ---------------------------------------------------------------- inputs

  /** A signal condition changed (agent/signals.ts). The hot path: no planning, no await before the sends. */
  onSignal(type: 'signal.raised' | 'signal.cleared', id: string, measuredAt: number, value: number | null = null): Wave | null {
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
      value,
    });
  }

  /**
   * Adds (or replaces) a demand and sheds what its target needs. Returns the
   * wave it started, or the waves in flight that cover its devices; null when
   * everything it needs is already shed (or it is a window not started yet).
   */
  raise(d: Demand, deadlineMs?: number): Wave | null {
    if (this.stopped) return null;
    const now = Date.now();
    const prev = this.demands.get(d.key);
    this.demands.add(d, now);
    const wavesBefore = this.waves;
    const w = isActive(d, now) ? this.activate(d, deadlineMs) : null;
    // a wave just went out: it saves and reports the state itself (dispatch), and planning again waits
    // until its answers are in, so that neither holds up the reading of those answers
    const later = this.waves !== wavesBefore ? this.answersIn : undefined;
    setImmediate(() => {
      this.scheduleTick();
      const added = (): void => {
        if (!prev) this.emit({ type: 'demand.added', commandId: d.commandId ?? null, demand: view(d) });
      };
      if (later) {
        // after the wave's own bookkeeping (registered on the same promise first): curtail.started, then this
        void later.then(() => {
          if (!this.stopped) this.prepare();
          added();
        });
      } else {
        this.prepare();
        this.changed();
        added();
      }
    });
    return w;
  }

  /** An active demand: load stops coming back, and its target is shed. */
  private activate(d: Demand, deadlineMs?: number): Wave | null {
    if (this.ramp) this.stopRamp();
    if (this.holdOffUntil !== null) this.cancelHoldOff();
    else if (this.rampWaiters.length > 0) this.preemptWaiters('a new demand arrived before load could come back');
    return this.apply(d, deadlineMs);
  }

  /** Answers the restores waiting for load to come back: a new demand keeps it down. */
  private preemptWaiters(why: string): void {
    if (this.rampWaiters.length === 0) return;
    this.emit({ type: 'restore.stopped', commandId: this.commandId, error: { code: 'PREEMPTED', message: why } });
    this.resolveRamp({ ok: false, activation: null, durationMs: 0, devices: [], preempted: true });
  }

  /** Removes a demand; when no active one is left, load comes back after the hold-off. */
  clear(key: string, why: string): Demand | undefined {
    const d = this.demands.remove(key);
    if (!d) return undefined;
    this.carried.delete(key);
    const now = Date.now();
    if (this.demands.activeTarget(now).maxW === null) this.insufficient = false;
    // a window that never started holds nothing back: it has no hold-off to add
    if (d.startsAt === undefined || d.startsAt <= now) this.episodeHoldOffMs = Math.max(this.episodeHoldOffMs, d.holdOffMs);
    this.reporter.persist();
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

  /**
   * `restore`: ends central control's curtailments (curtail commands, their
   * scheduled windows, the fail-safe); budgets are ended by `clear-budget`.
   * Resolves when the ramp has brought load back, or throws DEMANDS_ACTIVE
   * naming what still holds it.
   */
  async restore(commandId: string | null, deadlineMs?: number): Promise<WaveOutcome> {
    this.commandId = commandId;
    for (const d of this.demands.list()) {
      if (d.key.startsWith('command:') || d.key === FAIL_SAFE_KEY) this.clear(d.key, `restore command ${commandId ?? ''}`);
    }
    const now = Date.now();
    const left = this.demands.list().filter((d) => isActive(d, now));
    if (left.length > 0) {
      throw new RackpilotError('DEMANDS_ACTIVE', `load stays down: ${left.map((d) => `${d.key} (${d.source})`).join(', ')} still active; it comes back after they clear and their hold-off`);
    }
    this.rampDeadlineMs = deadlineMs;
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

  /** Runs `fn` once the state it reports is on disk (command results). */
  whenPersisted(fn: () => void): void {
    this.reporter.report(fn);
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

  /**
   * While a curtailment wave's answers are coming in: settles once they are
   * in (or the wave's cap on that wait passed; never rejects). Undefined
   * otherwise. Work that can wait (publishing, saving) waits for it, so the
   * answers are read first.
   */
  get answersPending(): Promise<void> | undefined {
    return this.collecting ? this.answersIn : undefined;
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
    const now = Date.now();
    let n = 0;
    for (const d of this.demands.list()) if (isActive(d, now)) n++;
    return n;
  }

  private emit(e: EngineEvent): void {
    this.reporter.report(() => this.o.emit(e));
  }

  /** The state may have changed (`at`: when it did, if not now): save it, then publish it. */
  private changed(at = Date.now()): void {
    const st = this.state;
    if (st !== this.lastState) {
      this.lastState = st;
      this.since = at;
    }
    this.reporter.persist();
    this.reporter.report(this.o.onState);
  }

  /** The plan for the current demands, taken from the prepared ones when it matches. */
  private apply(trigger: Demand, deadlineMs?: number): Wave | null {
    const now = Date.now();
    const target = this.demands.activeTarget(now);
    const prep = this.prepared.get(trigger.key);
    let handles: DeviceHandle[];
    if (prep && targetsEqual(prep.target, target)) {
      handles = prep.handles;
      this.noteSufficiency(prep.sufficient, prep, target, trigger.commandId ?? null);
    } else handles = this.planHandles(target, trigger.commandId ?? null);
    // a scheduled window's activation counts from when it started
    const origin = trigger.startsAt !== undefined && trigger.startsAt <= now ? Math.max(trigger.since, trigger.startsAt) : trigger.since;
    return this.dispatch(trigger, handles, origin, deadlineMs) ?? this.join(handles);
  }

  /** Nothing new to shed: the waves in flight for these devices, if any, stand for the demand's result. */
  private join(handles: readonly DeviceHandle[]): Wave | null {
    const waves = new Set<RunningWave>();
    for (const h of handles) {
      const w = this.pending.get(h.id);
      if (w) waves.add(w);
    }
    if (waves.size === 0) return null;
    const ids = new Set(handles.map((h) => h.id));
    const list = [...waves];
    return {
      id: list[0]?.id ?? null,
      done: Promise.all(list.map((w) => w.done)).then((outs) => {
        const devices = outs.flatMap((o) => o.devices).filter((d) => ids.has(d.id));
        return { ok: devices.every((d) => d.ok), activation: list[0]?.id ?? null, durationMs: Math.max(...outs.map((o) => o.durationMs)), devices };
      }),
    };
  }

  private planHandles(target: Target, commandId: string | null): DeviceHandle[] {
    const p = plan(target, this.planDevices, { meteredPowerW: this.meteredW(), alreadyShed: new Set(this.shed.keys()), classOrder: this.o.config.classOrder });
    this.noteSufficiency(p.sufficient, p, target, commandId);
    return p.steps.flatMap((s) => this.handles.get(s.device) ?? []);
  }

  /** A budget that shedding everything allowed cannot meet: one event, and the rack reads partial. */
  private noteSufficiency(sufficient: boolean, p: { powerW: number | null; expectedW: number | null }, target: Target, commandId: string | null): void {
    if (!sufficient && target.maxW !== null && !this.insufficient) {
      this.emit({ type: 'budget.unreachable', commandId, error: { code: 'BUDGET_UNREACHABLE', message: `rack power ${p.powerW ?? 'unknown'} W cannot be brought to ${target.maxW} W by shedding everything allowed (expected ${p.expectedW ?? 'unknown'} W)` } });
    }
    this.insufficient = !sufficient && target.maxW !== null;
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

  /**
   * Prepares, for each signal, the handles its raise would dispatch given the
   * other demands, and arms the curtail of every device that could be shed
   * (drivers encode their request with the session they hold; no I/O beyond
   * starting a connection an armed send needs, see DeviceDriver.armCurtail).
   */
  private prepare(): void {
    for (const h of this.handles.values()) {
      if (h.driver.armCurtail && !this.shed.has(h.id) && !this.pending.has(h.id)) h.armed = h.driver.armCurtail();
    }
    const now = Date.now();
    const metered = this.meteredW();
    const alreadyShed = new Set(this.shed.keys());
    for (const c of this.conditions.values()) {
      if (c.demand === 'none') continue;
      const key = `signal:${c.id}`;
      const probe = new DemandSet();
      for (const d of this.demands.list()) probe.add(d, now);
      probe.add({ key, source: 'signal', kind: c.demand === 'budget' ? 'budget' : 'shed', ...(c.maxW !== undefined ? { maxW: c.maxW } : {}), since: now, holdOffMs: c.holdOffMs }, now);
      const target = probe.activeTarget(now);
      const p = plan(target, this.planDevices, { meteredPowerW: metered, alreadyShed, classOrder: this.o.config.classOrder });
      this.prepared.set(key, { target, handles: p.steps.flatMap((s) => this.handles.get(s.device) ?? []), sufficient: p.sufficient, powerW: p.powerW, expectedW: p.expectedW });
    }
  }

  /** Issues the sends for every handle not shed or in flight yet. */
  private dispatch(trigger: Demand, handles: readonly DeviceHandle[], signalAt: number, deadlineMs?: number, previously?: (id: string) => ShedRecord | undefined): RunningWave | null {
    const decidedAt = hrNow();
    // the armed sends go out before anything else, the plain ones first thing in the fan-out
    const { todo, fired, answered } = fireArmed(handles, this.shed, this.pending);
    if (todo.length === 0) return null;
    const commandId = trigger.commandId ?? null;
    const acks = new WaveAcks(todo.length);
    // answered connections are closed once the wave's acknowledgements are in, not between them
    holdReaping(acks.all);
    const opts = this.execOptions(commandId, signalAt, { ...(deadlineMs === undefined ? {} : { deadlineMs }), acks });
    const group = new AbortGroup([this.life.signal]);
    const id = `act-${Math.floor(decidedAt)}-${++this.waves}`;
    const wave: RunningWave = { id, trigger, signalAt, decidedAt, done: undefined as unknown as Promise<WaveOutcome> };
    for (const h of todo) {
      this.pending.set(h.id, wave);
      this.failed.delete(h.id);
    }
    const loads = new Map<string, { loadW: number; rank: number }>();
    todo.forEach((h, rank) => loads.set(h.id, { loadW: previously?.(h.id)?.loadW ?? this.o.latest.get(h.id)?.powerW ?? 0, rank: previously?.(h.id)?.rank ?? rank }));
    this.commandId = commandId;
    this.phase = 'curtailing';
    // the fired devices are finished once their answers are in (a quarter of their deadline at most)
    const answersIn = settledOrAfter(answered, Math.min(FINISH_WAIT_MAX_MS, opts.deadlineMs / 4));
    this.answersIn = answersIn;
    this.collecting = true;
    // The bookkeeping (evidence record, state, curtail.started) waits for the answers too, which it would
    // otherwise hold up: nothing of it could be reported sooner, since reports wait for the state file and
    // the save waits for the same answers (Reporter's gate). Registered before fanOut's own wait on them,
    // so the record is begun before any device is finished. The times it records are taken now.
    const startedAt = Date.now();
    // the state is due to be saved from now on: whatever reports meanwhile waits for that save
    this.reporter.persist();
    void answersIn.then(() => {
      if (this.answersIn === answersIn) this.collecting = false;
      this.o.evidence.begin({ id, trigger: triggerOf(trigger), signalAt, decidedAt, devices: [], powerBeforeW: null, powerAfterW: null });
      this.changed(startedAt);
      this.emit({ type: 'curtail.started', commandId, activation: id, durationMs: Math.max(0, startedAt - trigger.since), demand: view(trigger) });
    });
    wave.done = fanOut(todo, fired, (h, f) => shedDevice(h, opts, this.reads, group.signal(), f), answersIn).then((outs) => {
      group.dispose();
      return this.settle(wave, outs, loads);
    });
    this.o.onWave?.(acks.all);
    return wave;
  }

  private settle(wave: RunningWave, outs: ShedOutcome[], loads: Map<string, { loadW: number; rank: number }>): WaveOutcome {
    for (const out of outs) {
      if (this.pending.get(out.id) === wave) this.pending.delete(out.id);
      if (out.ok && out.via) {
        const l = loads.get(out.id);
        this.shed.set(out.id, {
          via: out.via,
          at: Date.now(),
          ...(out.cutOutlets ? { outlets: out.cutOutlets } : {}),
          ...(out.previous ? { previous: out.previous } : {}),
          loadW: l?.loadW ?? 0,
          rank: l?.rank ?? 0,
        });
      } else this.failed.add(out.id);
    }
    this.reporter.persist();
    const completedAt = hrNow();
    const rec = this.o.evidence.complete(wave.id, outs, completedAt);
    const failed = outs.filter((x) => !x.ok);
    const ok = failed.length === 0;
    const commandId = wave.trigger.commandId ?? null;
    this.emit({
      type: ok ? 'curtail.completed' : 'curtail.failed',
      commandId,
      activation: wave.id,
      durationMs: Math.max(0, completedAt - wave.signalAt),
      timings: summarize(wave.signalAt, wave.decidedAt, outs, rec),
      ...(ok ? {} : { error: { code: 'NOT_CONFIRMED', message: `${failed.length} of ${outs.length} device(s) were not shed: ${failed.map((x) => `${x.id}: ${x.error?.code ?? 'FAILED'}`).join(', ')}` } }),
    });
    if (rec) this.o.onActivation?.(rec);
    // the devices that were not shed are armed again
    this.prepare();
    if (this.pending.size === 0) {
      if (this.activeCount() > 0) this.phase = 'curtailed';
      else if (!this.stopped) this.afterDemandsCleared();
    }
    this.changed();
    return { ok, activation: wave.id, durationMs: Math.max(0, completedAt - wave.signalAt), devices: outs };
  }

  private afterDemandsCleared(): void {
    if (this.pending.size > 0 || this.stopped || this.ramp) return;
    if (this.shed.size === 0 && this.failed.size === 0) {
      this.phase = 'idle';
      this.episodeHoldOffMs = 0;
      this.resolveRamp({ ok: true, activation: null, durationMs: 0, devices: [] });
      return;
    }
    const wait = this.episodeHoldOffMs;
    this.holdOffUntil = Date.now() + wait;
    this.phase = 'holdoff';
    this.reporter.persist();
    clearTimeout(this.holdTimer);
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined;
      this.holdOffUntil = null;
      this.startRamp();
    }, wait);
    this.emit({ type: 'restore.scheduled', commandId: this.commandId, holdOffUntil: new Date(this.holdOffUntil).toISOString(), durationMs: wait });
  }

  /** A new demand during the hold-off: load stays down; a restore waiting for it is answered as preempted. */
  private cancelHoldOff(): void {
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    this.holdOffUntil = null;
    this.reporter.persist();
    this.preemptWaiters('a new demand arrived during the hold-off');
  }

  private startRamp(): void {
    const ctl = new AbortController();
    const done = this.runRamp(ctl.signal);
    this.ramp = { ctl, done };
    this.phase = 'restoring';
    this.changed();
    void done.then((o) => {
      if (this.ramp?.done === done) this.ramp = undefined;
      this.rampDeadlineMs = undefined; // a restore's timeoutMs is for its own ramp only
      // the devices back on are armed again for the next signal
      this.prepare();
      if (!o.preempted) this.resolveRamp(o);
      this.changed();
    });
  }

  private stopRamp(): void {
    const r = this.ramp;
    if (!r) return;
    this.ramp = undefined;
    r.ctl.abort();
    this.reporter.persist();
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
    const commandId = this.commandId;
    const ids = new Set([...this.shed.keys(), ...this.failed]);
    const steps = rampSteps(
      [...ids].flatMap((id) => {
        const h = this.handles.get(id);
        const s = this.shed.get(id);
        return h ? [{ id, kind: h.driver.kind, cut: s?.via === 'cut', loadW: s?.loadW ?? 0, shedRank: s?.rank ?? 0 }] : [];
      }),
      this.o.config.restore,
    );
    this.emit({ type: 'restore.started', commandId, durationMs: 0 });
    const group = new AbortGroup([signal, this.life.signal]);
    const opts = this.execOptions(commandId, t0, this.rampDeadlineMs !== undefined ? { deadlineMs: this.rampDeadlineMs } : {});
    const devices = await restoreInSteps({
      steps,
      handles: this.handles,
      shed: this.shed,
      failed: this.failed,
      opts,
      group,
      stepIntervalMs: this.o.config.restore.stepIntervalMs,
      signal,
      onStep: (i, n) => {
        this.reporter.persist();
        this.emit({ type: 'restore.step', commandId, durationMs: Math.round(hrNow() - t0), step: `${i + 1}/${n}` });
        this.reporter.report(this.o.onState);
      },
    });
    const durationMs = Math.round(hrNow() - t0);
    if (signal.aborted) return { ok: false, activation: null, durationMs, devices, preempted: true };
    const failed = devices.filter((d) => !d.ok);
    this.phase = failed.length === 0 ? 'idle' : 'curtailed';
    if (failed.length === 0) this.episodeHoldOffMs = 0;
    this.reporter.persist();
    this.emit({
      type: failed.length === 0 ? 'restore.completed' : 'restore.failed',
      commandId,
      durationMs,
      ...(failed.length === 0 ? {} : { error: { code: 'NOT_CONFIRMED', message: `${failed.length} of ${devices.length} device(s) did not confirm restore: ${failed.map((d) => `${d.id}: ${d.error?.code ?? 'FAILED'}`).join(', ')}` } }),
    });
    return { ok: failed.length === 0, activation: null, durationMs, devices };
  }

  /**
   * The timer for scheduled windows starting and demands running out.
   * Times the next tick (nextTickIn): counted from the last tick's time, not
   * from now. A timer can fire a millisecond before the time it was set for
   * (Node times it from the event loop's cached clock), so a tick may see a
   * start or an end still ahead that the clock has passed by the time the
   * next one is planned; planned from now, it was skipped (a window that
   * never started, a demand that never ran out: seen in the tests under
   * load).
   */
  private scheduleTick(): void {
    clearTimeout(this.tickTimer);
    const inMs = nextTickIn(this.demands.list(), this.tickedAt, Date.now());
    if (inMs === null || this.stopped) return;
    this.tickTimer = setTimeout(() => this.tick(), Math.min(inMs, 2 ** 31 - 1));
    this.tickTimer.unref();
  }

  private tick(): void {
    const now = Date.now();
    this.tickedAt = now;
    for (const d of this.demands.list()) if (d.until !== undefined && d.until <= now) this.clear(d.key, 'ran out');
    // a scheduled window that has started: it acts like a new demand
    for (const d of this.demands.list()) if (d.startsAt !== undefined && d.startsAt <= now && d.startsAt > now - 60_000) this.activate(d);
    this.scheduleTick();
    this.prepare();
    this.changed();
  }

  private snapshot(): PersistedState {
    const shed: Record<string, ShedRecord> = {};
    for (const [id, r] of this.shed) shed[id] = r;
    // devices with a curtail in flight count as shed: after a crash they are re-asserted
    for (const id of this.pending.keys()) shed[id] ??= { via: 'curtail', at: Date.now(), loadW: this.o.latest.get(id)?.powerW ?? 0 };
    return { version: 1, savedAt: Date.now(), phase: this.phase, demands: this.demands.list(), shed, holdOffUntil: this.holdOffUntil };
  }
}
