/**
 * Signal conditions: watch a device's sample stream (a meter's frequency, a
 * GPIO input) and raise a signal when the value stays beyond a threshold for
 * at least `forMs`; clear it when the value is back past the threshold by
 * `hysteresis` for at least `releaseMs`. Stale input never counts as normal:
 * by default (`onStale: trip`) it raises the signal (fail-safe); `hold`
 * keeps the current state until fresh input returns.
 */
import { z } from 'zod';
import type { Logger } from 'pino';
import type { DeviceDriver, Reading, SignalSample } from '../drivers/contract.js';
import { idSchema } from '../drivers/lib/ids.js';
import { signalDemandSchema } from './engine/config.js';

export const signalConditionSchema = z
  .object({
    id: idSchema,
    /** Device id whose samples are watched. */
    source: idSchema,
    /** The device's channel, e.g. `frequencyHz`, `powerW`, `input`. */
    channel: z.string().min(1).max(64),
    below: z.number().optional(),
    above: z.number().optional(),
    /** The value must stay beyond the threshold this long before the signal is raised. */
    forMs: z.number().int().min(0).max(3_600_000).default(0),
    /** To clear, the value must come back past the threshold by this much... */
    hysteresis: z.number().min(0).default(0),
    /** ...and stay there this long. */
    releaseMs: z.number().int().min(0).max(3_600_000).default(0),
    /** What stale input does: `trip` raises the signal (fail-safe), `hold` keeps the current state. */
    onStale: z.enum(['trip', 'hold']).default('trip'),
    /** A source with no sample for this long is stale (leave unset for edge-driven sources such as GPIO). */
    staleAfterMs: z.number().int().min(10).max(3_600_000).optional(),
    ...signalDemandSchema,
  })
  .strict()
  .refine((c) => (c.below === undefined) !== (c.above === undefined), { message: 'give exactly one of "below" or "above"' })
  .refine((c) => c.demand !== 'budget' || c.maxW !== undefined, { message: 'demand "budget" needs maxW (watts)', path: ['maxW'] });

export type SignalCondition = z.output<typeof signalConditionSchema>;

export type SignalPhase = 'normal' | 'pending' | 'raised' | 'releasing';

export interface SignalChange {
  type: 'signal.raised' | 'signal.cleared';
  signal: string;
  source: string;
  channel: string;
  value: number | null;
  /** When the deciding sample was measured (or when staleness was detected). */
  measuredAt: number;
  reason: 'threshold' | 'stale' | 'fresh-again';
}

export interface SignalStatus {
  id: string;
  raised: boolean;
  since: number;
  /** When the last fresh, finite sample was measured (null: none since start). */
  lastFreshAt: number | null;
}

/** One condition's state machine. Exported for tests; the monitor drives it. */
export class ConditionState {
  phase: SignalPhase = 'normal';
  since = Date.now();
  lastFreshAt: number | null = null;
  private timer: NodeJS.Timeout | undefined;
  private staleTimer: NodeJS.Timeout | undefined;
  private last: SignalSample | undefined;
  /** Raised because the input went stale (cleared by fresh normal input, reason `fresh-again`). */
  private staleRaise = false;

  constructor(
    readonly c: SignalCondition,
    private readonly emit: (ch: SignalChange) => void,
    private readonly now: () => number = Date.now,
  ) {}

  get raised(): boolean {
    return this.phase === 'raised' || this.phase === 'releasing';
  }

  private beyond(v: number): boolean {
    return this.c.below !== undefined ? v < this.c.below : v > (this.c.above as number);
  }

  private backToNormal(v: number): boolean {
    return this.c.below !== undefined ? v >= this.c.below + this.c.hysteresis : v <= (this.c.above as number) - this.c.hysteresis;
  }

  private set(phase: SignalPhase, at: number): void {
    this.phase = phase;
    this.since = at;
  }

  private change(type: SignalChange['type'], value: number | null, measuredAt: number, reason: SignalChange['reason']): void {
    this.set(type === 'signal.raised' ? 'raised' : 'normal', this.now());
    this.staleRaise = false;
    this.emit({ type, signal: this.c.id, source: this.c.source, channel: this.c.channel, value, measuredAt, reason });
  }

  private schedule(atMs: number, fn: () => void): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(fn, Math.max(0, atMs - this.now()));
  }

  private armStaleTimer(): void {
    if (this.c.staleAfterMs === undefined) return;
    clearTimeout(this.staleTimer);
    this.staleTimer = setTimeout(() => this.stale(this.now()), this.c.staleAfterMs);
  }

  /** Starts the stale watch before the first sample arrives (a source that never speaks is stale too). */
  start(): void {
    this.armStaleTimer();
  }

  stop(): void {
    clearTimeout(this.timer);
    clearTimeout(this.staleTimer);
  }

  stale(at: number): void {
    clearTimeout(this.timer);
    if (this.c.onStale === 'hold') {
      // hold keeps the state, but stale time never counts towards a release
      if (this.phase === 'releasing') this.set('raised', at);
      return;
    }
    if (!this.raised) {
      this.change('signal.raised', this.last?.value ?? null, at, 'stale');
      this.staleRaise = true;
    } else if (this.phase === 'releasing') this.set('raised', at);
  }

  sample(s: SignalSample): void {
    // a meter that is not ready reports NaN: that is no measurement, so it counts as stale
    if (!s.fresh || !Number.isFinite(s.value)) {
      this.stale(s.ts);
      return;
    }
    const wasStaleRaise = this.staleRaise;
    this.last = s;
    this.lastFreshAt = s.ts;
    this.armStaleTimer();
    const v = s.value;
    switch (this.phase) {
      case 'normal':
        if (!this.beyond(v)) return;
        if (this.c.forMs === 0) {
          this.change('signal.raised', v, s.ts, 'threshold');
          return;
        }
        this.set('pending', s.ts);
        this.schedule(s.ts + this.c.forMs, () => {
          if (this.phase === 'pending') this.change('signal.raised', this.last?.value ?? v, this.since, 'threshold');
        });
        return;
      case 'pending':
        if (!this.beyond(v)) {
          clearTimeout(this.timer);
          this.set('normal', s.ts);
        } else if (s.ts - this.since >= this.c.forMs) {
          clearTimeout(this.timer);
          this.change('signal.raised', v, s.ts, 'threshold');
        }
        return;
      case 'raised':
        if (!this.backToNormal(v)) return;
        if (this.c.releaseMs === 0) {
          this.change('signal.cleared', v, s.ts, wasStaleRaise ? 'fresh-again' : 'threshold');
          return;
        }
        this.set('releasing', s.ts);
        this.schedule(s.ts + this.c.releaseMs, () => {
          if (this.phase === 'releasing') this.change('signal.cleared', this.last?.value ?? v, this.since, 'threshold');
        });
        return;
      case 'releasing':
        if (!this.backToNormal(v)) {
          clearTimeout(this.timer);
          this.set('raised', s.ts);
        } else if (s.ts - this.since >= this.c.releaseMs) {
          clearTimeout(this.timer);
          this.change('signal.cleared', v, s.ts, 'threshold');
        }
        return;
    }
  }
}

/** Wires every configured condition to its device's sample stream. */
export class SignalMonitor {
  private readonly states: ConditionState[];
  private unsubscribe: (() => void)[] = [];
  private startedAt = Date.now();

  constructor(
    conditions: readonly SignalCondition[],
    private readonly devices: readonly DeviceDriver[],
    emit: (ch: SignalChange) => void,
    private readonly log: Logger,
    /** How long after start a source may stay without a fresh reading before it counts as stale. */
    private readonly startGraceMs = 10_000,
  ) {
    for (const c of conditions) {
      const d = devices.find((x) => x.id === c.source);
      if (!d) throw new Error(`signals.${c.id}.source: no device "${c.source}"`);
      if (!d.onSignal || !d.signalChannels?.includes(c.channel)) {
        const has = d.signalChannels?.length ? `it streams ${d.signalChannels.join(', ')}` : 'it streams no signals';
        throw new Error(`signals.${c.id}.channel: device "${c.source}" (${d.driverId}) has no channel "${c.channel}"; ${has}`);
      }
    }
    this.states = conditions.map((c) => new ConditionState(c, emit));
  }

  start(): void {
    this.startedAt = Date.now();
    for (const st of this.states) {
      const d = this.devices.find((x) => x.id === st.c.source);
      const off = d?.onSignal?.((s) => {
        if (s.channel !== st.c.channel) return;
        try {
          st.sample(s);
        } catch (err) {
          this.log.error({ err, signal: st.c.id }, 'signal condition failed');
        }
      });
      if (off) this.unsubscribe.push(off);
      st.start();
    }
  }

  stop(): void {
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    for (const st of this.states) st.stop();
  }

  /**
   * Called with every telemetry cycle's readings: a source device whose
   * reading is not fresh (it never started, never answered, or stopped
   * answering) is stale input for its conditions, so a source that stays
   * silent can never pass for normal — even an edge-driven GPIO line.
   */
  observeReadings(readings: ReadonlyMap<string, Reading>, at = Date.now()): void {
    // a source that simply has not produced its first sample yet gets a grace period after start
    if (at - this.startedAt < this.startGraceMs) return;
    for (const st of this.states) {
      const r = readings.get(st.c.source);
      if (r && r.freshness !== 'fresh') st.stale(at);
    }
  }

  status(): SignalStatus[] {
    return this.states.map((s) => ({ id: s.c.id, raised: s.raised, since: s.since, lastFreshAt: s.lastFreshAt }));
  }
}
