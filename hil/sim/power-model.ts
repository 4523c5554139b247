/**
 * Power and hashrate of a simulated miner over time, shared by every
 * simulator personality: full power while mining; after sleep, a linear
 * fall to the sleep level over `sleepDelayMs`; after wakeup, a linear ramp
 * back over `wakeRampMs`. A power target (`setPowerTarget`) lowers the full
 * draw, and the hashrate with it (proportionally); it applies at once.
 */
export interface PowerModelOptions {
  miningW: number;
  sleepW: number;
  hashrateThs: number;
  sleepDelayMs: number;
  wakeRampMs: number;
  now?: () => number;
}

export type MinerMode = 'mining' | 'sleeping';

export class PowerModel {
  private mode: MinerMode = 'mining';
  /** Level (0 = asleep, 1 = full) at the last transition, and when it happened. */
  private fromLevel = 1;
  private since = 0;
  private readonly now: () => number;
  private targetW: number | null = null;

  constructor(readonly opts: PowerModelOptions) {
    this.now = opts.now ?? Date.now;
    this.since = this.now() - Math.max(opts.sleepDelayMs, opts.wakeRampMs);
  }

  get target(): MinerMode {
    return this.mode;
  }

  /** 0..1, where the miner is between asleep and full power. */
  level(at = this.now()): number {
    const dt = at - this.since;
    if (this.mode === 'sleeping') {
      const d = this.opts.sleepDelayMs;
      return d <= 0 ? 0 : Math.max(0, this.fromLevel - dt / d);
    }
    const r = this.opts.wakeRampMs;
    return r <= 0 ? 1 : Math.min(1, this.fromLevel + dt / r);
  }

  set(mode: MinerMode): void {
    if (mode === this.mode) return;
    const at = this.now();
    this.fromLevel = this.level(at);
    this.since = at;
    this.mode = mode;
  }

  /** Caps the full draw at `watts` (clamped to sleepW..miningW); null removes the cap. */
  setPowerTarget(watts: number | null): void {
    const { miningW, sleepW } = this.opts;
    this.targetW = watts === null ? null : Math.min(miningW, Math.max(sleepW, watts));
  }

  /** The power target in force, or null when the miner runs at its full draw. */
  get powerTargetW(): number | null {
    return this.targetW;
  }

  /** Draw when fully up: the power target, or miningW without one. */
  fullW(): number {
    return this.targetW ?? this.opts.miningW;
  }

  powerW(at = this.now()): number {
    const { sleepW } = this.opts;
    return Math.round(sleepW + (this.fullW() - sleepW) * this.level(at));
  }

  hashrateThs(at = this.now()): number {
    const l = this.level(at);
    const scale = this.fullW() / this.opts.miningW;
    // hashboards stop hashing before the PSU reaches its sleep draw
    return l < 0.05 ? 0 : Math.round(this.opts.hashrateThs * scale * l * 100) / 100;
  }

  /** Whether the boards are hashing at all. */
  isHashing(at = this.now()): boolean {
    return this.hashrateThs(at) > 0;
  }
}
