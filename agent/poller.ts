/**
 * Telemetry poller: reads every device each interval with a per-device
 * deadline and a concurrency bound. Cycles never overlap; a slow cycle
 * delays the next instead of stacking up. Drivers' read() never throws.
 */
import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import type { DeviceDriver, Reading } from '../drivers/contract.js';
import { withDeadline } from '../drivers/lib/deadline.js';
import { toRackpilotError, type RackpilotError } from '../drivers/lib/errors.js';
import { AbortGroup } from './abort-group.js';
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

/** Extra time a driver gets past its own deadline before the poller gives up on it. */
const DRIVER_GRACE_MS = 1_000;

export class Poller {
  readonly latest = new Map<string, Reading>();
  /** When the request behind each device's latest reading started: an older one never replaces it. */
  private readonly latestFrom = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private ctl = new AbortController();
  lastCycle: CycleStats | undefined;
  /** Holds not settled yet (holdUntil); while any is, no read starts. */
  private readonly holds = new Set<Promise<void>>();
  /** What reads wait on while held; opened when the last hold settles, or at stop(). */
  private gate: { wait: Promise<void>; open: () => void } | undefined;
  /** How long each device's latest poll read took, ms (for /metrics). */
  readonly readMs = new Map<string, number>();

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
    // a hold must not keep a stopping poller waiting
    this.holds.clear();
    this.openGate();
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

  /**
   * No read starts until `until` settles (reads already in flight go on);
   * holds overlap, the last to settle ends them. The engine holds the
   * poller for each curtailment wave until its devices acknowledged (at
   * most ACK_HOLD_MAX_MS): telemetry requests would otherwise queue at the
   * miners ahead of the curtail (a cgminer API serves one connection at a
   * time) and their answers compete with the acknowledgements here.
   */
  holdUntil(until: Promise<unknown>): void {
    const hold = until.then(
      () => undefined,
      () => undefined,
    );
    this.holds.add(hold);
    if (!this.gate) {
      let open!: () => void;
      const wait = new Promise<void>((r) => (open = r));
      this.gate = { wait, open };
    }
    void hold.then(() => {
      this.holds.delete(hold);
      if (this.holds.size === 0) this.openGate();
    });
  }

  private openGate(): void {
    const g = this.gate;
    this.gate = undefined;
    g?.open();
  }

  /**
   * Records a reading unless a newer one is already there: a poll that was
   * sent before a curtail must not overwrite the read-back that confirmed it.
   */
  offer(deviceId: string, reading: Reading, requestedAt: number): void {
    if ((this.latestFrom.get(deviceId) ?? -Infinity) > requestedAt) return;
    this.latest.set(deviceId, reading);
    this.latestFrom.set(deviceId, requestedAt);
  }

  /** One cycle over all devices; also used directly by tests and benchmarks. */
  async pollOnce(): Promise<void> {
    const startedAt = Date.now();
    const cpu0 = process.cpuUsage();
    const signal = this.ctl.signal;
    // one signal per read: 256 reads listening on one shared signal cost O(n²) (agent/abort-group.ts)
    const group = new AbortGroup([signal]);
    await mapLimit(this.devices, this.opts.concurrency, async (d) => {
      while (this.gate) await this.gate.wait;
      if (signal.aborted) return;
      const from = Date.now();
      let r: Reading;
      try {
        // read() must not throw or hang; a driver bug must not stop the rack's polling either.
        // The read gets a signal of its own from the cycle's group (aborted when the poller stops).
        r = await withDeadline(`${d.id} read`, this.opts.deadlineMs + DRIVER_GRACE_MS, (s) => d.read({ deadlineMs: this.opts.deadlineMs, signal: s }), group.signal());
      } catch (err) {
        const e = toRackpilotError(err, { device: d.id });
        if (e.code === 'CANCELLED') return;
        this.log.error({ device: d.id, error: e.toJSON() }, 'driver read() failed instead of returning a reading');
        r = unreachable(this.latest.get(d.id), e);
      }
      this.readMs.set(d.id, Date.now() - from);
      this.offer(d.id, r, from);
    });
    group.dispose();
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

/** The reading of a device whose driver failed: last values marked stale, or missing. */
function unreachable(prev: Reading | undefined, e: RackpilotError): Reading {
  const error = e.toJSON();
  if (!prev) return { ts: Date.now(), freshness: 'missing', online: false, state: 'unreachable', powerW: null, fields: {}, error };
  return { ...prev, freshness: 'stale', online: false, state: 'unreachable', error };
}
