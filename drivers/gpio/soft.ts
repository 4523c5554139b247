/**
 * The software GPIO backend: process-local chips and lines that tests and
 * the demo drive, with the same edge semantics as the onoff backend (a
 * physical level change is delivered to the watcher with the time captured
 * in the callback). Drive an input with
 * `softGpio.chip('pinctrl-bcm2711').line(17).set(1)`; read an output with
 * `.value`.
 */
import { RackpilotError } from '../lib/errors.js';
import { resolveLine, type ChipInfo, type EdgeEvent, type GpioBackend, type Level, type LineHandle, type LineSpec, type OpenOptions } from './backend.js';

type Watcher = { onEdge: (ev: EdgeEvent) => void; onError: (err: Error) => void };

export class SoftLine {
  private level: Level = 0;
  private watchers: Watcher[] = [];
  /** Claimed by an open handle. */
  claimed = false;
  direction: 'in' | 'out' = 'in';
  /** Fault: writes are accepted but the level does not change (a stuck output stage). */
  stuck = false;
  /** Fault: reads fail with EIO. */
  failReads = false;

  constructor(
    readonly chip: SoftChip,
    readonly offset: number,
  ) {}

  /** Global line number. */
  get number(): number {
    return this.chip.base + this.offset;
  }

  /** The physical level. */
  get value(): Level {
    return this.level;
  }

  /** Drives the physical level from outside (a contact closing); an actual change is an edge. */
  set(value: Level | boolean): this {
    const v: Level = value === true || value === 1 ? 1 : 0;
    if (v === this.level) return this;
    this.level = v;
    for (const w of this.watchers.slice()) {
      // as in the onoff backend: the time is captured in the callback
      const ts = performance.timeOrigin + performance.now(); // sub-millisecond: decision times are measured from it
      w.onEdge({ value: v, ts });
    }
    return this;
  }

  /** Makes every watcher's interrupt source fail (as an epoll error would). */
  fail(err: Error = new Error('soft GPIO interrupt source failed')): void {
    for (const w of this.watchers.slice()) w.onError(err);
  }

  /** @internal used by SoftHandle */
  drive(v: Level): void {
    if (!this.stuck) this.set(v);
  }

  /** @internal */
  addWatcher(w: Watcher): void {
    this.watchers.push(w);
  }

  /** @internal */
  clearWatchers(): void {
    this.watchers = [];
  }
}

export class SoftChip {
  private readonly lines = new Map<number, SoftLine>();

  constructor(
    readonly label: string,
    readonly base: number,
    readonly ngpio: number,
  ) {}

  line(offset: number): SoftLine {
    if (!Number.isInteger(offset) || offset < 0 || offset >= this.ngpio) {
      throw new RangeError(`soft GPIO chip "${this.label}" has offsets 0..${this.ngpio - 1}, not ${offset}`);
    }
    let l = this.lines.get(offset);
    if (!l) {
      l = new SoftLine(this, offset);
      this.lines.set(offset, l);
    }
    return l;
  }

  info(): ChipInfo {
    return { name: `gpiochip${this.base}`, label: this.label, base: this.base, ngpio: this.ngpio };
  }
}

/** The process-local set of software chips. */
export class SoftGpio {
  private readonly chipsByLabel = new Map<string, SoftChip>();

  /** The chip with this label, created (bases from 512 up, like Bookworm) when it does not exist. */
  chip(label: string, opts: { base?: number; ngpio?: number } = {}): SoftChip {
    let c = this.chipsByLabel.get(label);
    if (!c) {
      const next = Math.max(512, ...[...this.chipsByLabel.values()].map((x) => x.base + x.ngpio));
      c = new SoftChip(label, opts.base ?? next, opts.ngpio ?? 64);
      this.chipsByLabel.set(label, c);
    }
    return c;
  }

  chips(): ChipInfo[] {
    return [...this.chipsByLabel.values()].map((c) => c.info()).sort((a, b) => a.base - b.base);
  }

  /** The line with this global number, if a chip holds it. */
  lineByNumber(n: number): SoftLine | undefined {
    for (const c of this.chipsByLabel.values()) if (n >= c.base && n < c.base + c.ngpio) return c.line(n - c.base);
    return undefined;
  }

  /** Forgets every chip (between tests). */
  reset(): void {
    this.chipsByLabel.clear();
  }
}

/** The software GPIO shared by the soft backend, tests and the demo. */
export const softGpio = new SoftGpio();

class SoftHandle implements LineHandle {
  private closed = false;

  constructor(private readonly l: SoftLine) {}

  get line(): number {
    return this.l.number;
  }

  private check(what: string): void {
    if (this.closed) throw new RackpilotError('NOT_STARTED', `soft GPIO line ${this.line}: ${what} after close`);
  }

  read(): Promise<Level> {
    this.check('read');
    if (this.l.failReads) return Promise.reject(new RackpilotError('DEVICE_ERROR', `reading GPIO line ${this.line}: EIO, i/o error (soft fault)`));
    return Promise.resolve(this.l.value);
  }

  write(value: Level): Promise<void> {
    this.check('write');
    if (this.l.direction !== 'out') return Promise.reject(new RackpilotError('DEVICE_ERROR', `writing GPIO line ${this.line}: EPERM, the line is an input`));
    this.l.drive(value);
    return Promise.resolve();
  }

  watch(onEdge: (ev: EdgeEvent) => void, onError: (err: Error) => void): void {
    this.check('watch');
    this.l.addWatcher({ onEdge, onError });
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.l.clearWatchers();
      this.l.claimed = false;
    }
    return Promise.resolve();
  }
}

export class SoftBackend implements GpioBackend {
  readonly name = 'soft';

  constructor(private readonly gpio: SoftGpio = softGpio) {}

  /** A named chip is created when missing (any label is valid in software); a global number must fall in an existing chip. */
  resolve(spec: LineSpec): Promise<number> {
    try {
      if (spec.chip !== undefined) this.gpio.chip(spec.chip);
      return Promise.resolve(resolveLine(this.gpio.chips(), spec));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  open(line: number, opts: OpenOptions): Promise<LineHandle> {
    const l = this.gpio.lineByNumber(line);
    if (!l) return Promise.reject(new RackpilotError('CONFIG_INVALID', `soft GPIO line ${line} belongs to no chip`, { line }));
    if (l.claimed) return Promise.reject(new RackpilotError('DEVICE_ERROR', `opening GPIO line ${line}: the line is busy (already opened by another device)`, { line }));
    l.claimed = true;
    l.direction = opts.direction;
    if (opts.direction === 'out') l.drive(opts.initial);
    return Promise.resolve(new SoftHandle(l));
  }
}
