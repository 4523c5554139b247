/**
 * Telemetry poller: reads every device each interval with a per-device
 * deadline and a concurrency bound. Cycles never overlap; a slow cycle
 * delays the next instead of stacking up. Drivers' read() never throws.
 */
import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import type { DeviceDriver, Reading } from '../drivers/contract.js';
import { mapLimit } from './concurrency.js';

export interface PollerOptions {
  intervalMs: number;
  deadlineMs: number;
  concurrency: number;
}

export interface CycleStats {
  startedAt: number;
  durationMs: number;
  /** CPU time of the whole process during the cycle (user + system), ms. */
  cpuMs: number;
}

export class Poller {
  readonly latest = new Map<string, Reading>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private ctl = new AbortController();
  lastCycle: CycleStats | undefined;

  constructor(
    private readonly devices: readonly DeviceDriver[],
    private readonly opts: PollerOptions,
    private readonly onCycle: (readings: ReadonlyMap<string, Reading>, stats: CycleStats) => void,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.ctl = new AbortController();
    // every in-flight read listens on this one signal
    setMaxListeners(this.devices.length + 16, this.ctl.signal);
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.ctl.abort();
    await this.running;
  }

  private schedule(delay: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      const started = Date.now();
      this.running = this.pollOnce().finally(() => {
        this.running = undefined;
        this.schedule(Math.max(0, this.opts.intervalMs - (Date.now() - started)));
      });
    }, delay);
  }

  /** One cycle over all devices; also used directly by tests and benchmarks. */
  async pollOnce(): Promise<void> {
    const startedAt = Date.now();
    const cpu0 = process.cpuUsage();
    const signal = this.ctl.signal;
    await mapLimit(this.devices, this.opts.concurrency, async (d) => {
      const r = await d.read({ deadlineMs: this.opts.deadlineMs, signal });
      this.latest.set(d.id, r);
    });
    if (signal.aborted) return;
    const cpu = process.cpuUsage(cpu0);
    const stats = { startedAt, durationMs: Date.now() - startedAt, cpuMs: (cpu.user + cpu.system) / 1000 };
    this.lastCycle = stats;
    try {
      this.onCycle(this.latest, stats);
    } catch (err) {
      this.log.error({ err }, 'telemetry cycle handler failed');
    }
  }
}
