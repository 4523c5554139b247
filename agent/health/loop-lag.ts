/**
 * Event-loop delay for `/healthz`: perf_hooks.monitorEventLoopDelay sampled
 * into fixed windows (the last complete window is reported, or the current
 * one until the first completes), plus a sample taken at request time (how
 * long a setImmediate takes to run: the I/O and timers queued ahead of it).
 * Costs one timer per window; nothing on the curtailment path.
 */
import { monitorEventLoopDelay, performance, type IntervalHistogram } from 'node:perf_hooks';

/** Length of one window. */
export const LOOP_WINDOW_MS = 10_000;
/** monitorEventLoopDelay's sampling timer. */
const RESOLUTION_MS = 20;

export interface LoopLagWindow {
  /** The window's length so far, ms. */
  windowMs: number;
  /** Delay percentiles and maximum over the window, ms (null before any sample). */
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
}

export class LoopLagMonitor {
  private hist: IntervalHistogram | undefined;
  private timer: NodeJS.Timeout | undefined;
  private windowStart = 0;
  private last: LoopLagWindow | undefined;

  start(): void {
    if (this.hist) return;
    this.hist = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.hist.enable();
    this.windowStart = performance.now();
    this.timer = setInterval(() => this.roll(), LOOP_WINDOW_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.hist?.disable();
    this.hist = undefined;
    this.last = undefined;
  }

  /** The last complete window, or the current one before the first completes. */
  window(): LoopLagWindow {
    return this.last ?? this.snapshot();
  }

  /** How long a setImmediate queued now takes to run, ms. */
  async sample(): Promise<number> {
    const t0 = performance.now();
    await new Promise<void>((resolve) => setImmediate(resolve));
    return Math.round((performance.now() - t0) * 100) / 100;
  }

  private roll(): void {
    this.last = this.snapshot();
    this.hist?.reset();
    this.windowStart = performance.now();
  }

  private snapshot(): LoopLagWindow {
    const h = this.hist;
    const windowMs = Math.round(performance.now() - this.windowStart);
    if (!h || h.count === 0) return { windowMs, p50Ms: null, p99Ms: null, maxMs: null };
    // the histogram records the time between its timer's runs: the lag is what exceeds the resolution
    const lag = (ns: number): number => Math.max(0, Math.round(ns / 1e4 - RESOLUTION_MS * 100) / 100);
    return { windowMs, p50Ms: lag(h.percentile(50)), p99Ms: lag(h.percentile(99)), maxMs: lag(h.max) };
  }
}
