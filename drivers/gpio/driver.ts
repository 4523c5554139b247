/**
 * GPIO driver: one device = one line. Inputs stream their level on the
 * `input` channel from edge interrupts (debounced, active-low applied, edge
 * time captured in the interrupt callback); outputs are driven with
 * `setOutput`, confirmed by reading the line back.
 */
import type { ActionOptions, ActionResult, Capabilities, DeviceDriver, DriverContext, Reading, SignalListener, SignalSample } from '../contract.js';
import { actAndConfirm } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { ReadingTracker } from '../lib/reading.js';
import type { EdgeEvent, GpioBackend, Level, LineHandle } from './backend.js';
import { OnoffBackend } from './onoff.js';
import { DEFAULT_DEBOUNCE_MS, type GpioConfig } from './schema.js';
import { SoftBackend } from './soft.js';

export function backendFor(cfg: GpioConfig): GpioBackend {
  switch (cfg.backend) {
    case 'onoff':
      return new OnoffBackend();
    case 'soft':
      return new SoftBackend();
  }
}

const INPUT_CHANNELS = ['input'] as const;
const NO_CHANNELS = [] as const;

export class GpioDriver implements DeviceDriver {
  readonly kind = 'gpio' as const;
  readonly driverId = 'gpio';
  readonly id: string;
  readonly capabilities: Capabilities;
  readonly signalChannels: readonly string[];
  private readonly tracker = new ReadingTracker();
  private readonly listeners = new Set<SignalListener>();
  private readonly inv: 0 | 1;
  private readonly debounceMs: number;
  private readonly edge: 'both' | 'rising' | 'falling';
  private handle: LineHandle | undefined;
  private lineNo: number | undefined;
  /** Accepted (debounced) logical level and when it was established. */
  private stable: Level = 0;
  private stableTs = 0;
  /** Last raw logical level seen, and the first edge of the burst now being debounced. */
  private raw: Level = 0;
  private burstTs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private edges = 0;
  private lastEdgeTs: number | null = null;
  private fresh = true;

  constructor(
    private readonly cfg: GpioConfig,
    private readonly ctx: DriverContext,
    private readonly backend: GpioBackend = backendFor(cfg),
  ) {
    this.id = cfg.id;
    this.inv = cfg.activeLow ? 1 : 0;
    this.debounceMs = cfg.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    this.edge = cfg.edge ?? 'both';
    const out = cfg.direction === 'out';
    this.capabilities = { curtail: false, restore: false, powerTarget: null, profiles: false, switchOutlet: false, output: out };
    this.signalChannels = out ? NO_CHANNELS : INPUT_CHANNELS;
  }

  /** The global line number, once started. */
  get line(): number | undefined {
    return this.lineNo;
  }

  async start(): Promise<void> {
    if (this.handle) return;
    const line = await this.backend.resolve({ chip: this.cfg.chip, offset: this.cfg.offset, line: this.cfg.line });
    const initial = ((this.cfg.initial === true ? 1 : 0) ^ this.inv) as Level;
    const h = await this.backend.open(line, { direction: this.cfg.direction, initial });
    this.handle = h;
    this.lineNo = line;
    if (this.cfg.direction === 'in') {
      const v = ((await h.read()) ^ this.inv) as Level;
      this.stable = v;
      this.raw = v;
      this.stableTs = this.ctx.now();
      h.watch(
        (ev) => this.onEdge(ev),
        (err) => this.onWatchError(err),
      );
    }
    this.ctx.logger.debug({ line, backend: this.backend.name, direction: this.cfg.direction }, 'gpio line open');
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }

  onSignal(listener: SignalListener): () => void {
    this.listeners.add(listener);
    if (this.handle && this.cfg.direction === 'in') {
      // a new subscriber learns the current level (a trip input may already be active)
      const s: SignalSample = { device: this.id, channel: 'input', value: this.stable, ts: this.stableTs, fresh: this.fresh };
      queueMicrotask(() => {
        if (this.listeners.has(listener)) listener(s);
      });
    }
    return () => {
      this.listeners.delete(listener);
    };
  }

  private emit(value: Level, ts: number, fresh: boolean): void {
    const s: SignalSample = { device: this.id, channel: 'input', value, ts, fresh };
    for (const l of this.listeners) {
      try {
        l(s);
      } catch (err) {
        this.ctx.logger.error({ err }, 'gpio signal listener failed');
      }
    }
  }

  private onEdge(ev: EdgeEvent): void {
    const v = (ev.value ^ this.inv) as Level;
    this.raw = v;
    this.fresh = true;
    if (this.debounceMs === 0) {
      this.accept(v, ev.ts);
      return;
    }
    // the level must hold for debounceMs after the last edge; the sample carries the burst's first edge time
    this.burstTs ??= ev.ts;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.settle(), this.debounceMs);
  }

  private settle(): void {
    this.timer = undefined;
    const ts = this.burstTs ?? this.ctx.now();
    this.burstTs = undefined;
    this.accept(this.raw, ts);
  }

  private accept(v: Level, ts: number): void {
    if (v === this.stable) return;
    this.stable = v;
    this.stableTs = ts;
    this.edges++;
    this.lastEdgeTs = ts;
    if (this.edge === 'both' || (this.edge === 'rising') === (v === 1)) this.emit(v, ts, true);
  }

  private onWatchError(err: Error): void {
    this.fresh = false;
    this.ctx.logger.warn({ err, line: this.lineNo }, 'gpio interrupt source failed');
    this.emit(this.stable, this.ctx.now(), false);
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    const h = this.handle;
    if (!h) return this.tracker.failed(new RackpilotError('NOT_STARTED', `${this.id}: GPIO line not open (start() not called or failed)`), this.ctx.now());
    try {
      const physical = await withDeadline(`${this.id} read GPIO line ${h.line}`, opts.deadlineMs, () => h.read(), opts.signal);
      const level = (physical ^ this.inv) === 1;
      const input = this.cfg.direction === 'in';
      return this.tracker.ok({
        ts: this.ctx.now(),
        state: 'running',
        powerW: null,
        fields: {
          level,
          value: level ? 1 : 0,
          physical,
          direction: this.cfg.direction,
          line: h.line,
          activeLow: this.cfg.activeLow,
          // inputs: the debounced level the signal stream reported last, edges accepted, and the last one's time
          stableLevel: input ? this.stable === 1 : null,
          edges: input ? this.edges : null,
          lastEdgeTs: input ? this.lastEdgeTs : null,
        },
      });
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  async setOutput(on: boolean, opts: ActionOptions): Promise<ActionResult> {
    if (this.cfg.direction !== 'out') throw new RackpilotError('UNSUPPORTED', `${this.id}: GPIO line is an input (direction: in); it cannot be driven`, { device: this.id });
    const h = this.handle;
    if (!h) throw new RackpilotError('NOT_STARTED', `${this.id}: GPIO line not open (start() not called or failed)`, { device: this.id });
    const physical = ((on ? 1 : 0) ^ this.inv) as Level;
    return actAndConfirm(
      {
        deviceId: this.id,
        what: `set output ${on ? 'on' : 'off'}`,
        want: `level ${String(on)}`,
        send: () => h.write(physical),
        read: (o) => this.read(o),
        confirmed: (r) => r.fields.level === on,
        readDeadlineMs: Math.min(1000, opts.deadlineMs),
        pollMs: 10,
        now: this.ctx.now,
      },
      opts,
    );
  }
}
