/**
 * The narrow interface between the GPIO driver and a GPIO implementation:
 * the onoff backend (sysfs + epoll, real hardware) and the software backend
 * (process-local lines for tests and the demo). Backends deal in physical
 * levels; the driver applies active-low, debounce and the edge filter.
 */
import { RackpilotError } from '../lib/errors.js';

export type Level = 0 | 1;

export interface ChipInfo {
  /** sysfs name, e.g. `gpiochip512`. */
  name: string;
  label: string;
  /** Global number of the chip's line 0. */
  base: number;
  ngpio: number;
}

/** A physical level change, `ts` (epoch ms) captured in the interrupt callback before anything else runs. */
export interface EdgeEvent {
  value: Level;
  ts: number;
}

export interface LineSpec {
  chip?: string | undefined;
  offset?: number | undefined;
  line?: number | undefined;
}

export interface LineHandle {
  /** Global line number. */
  readonly line: number;
  /** The physical level now. */
  read(): Promise<Level>;
  write(value: Level): Promise<void>;
  /** Delivers every physical edge (both ways) of an input; `onError` when the interrupt source fails. */
  watch(onEdge: (ev: EdgeEvent) => void, onError: (err: Error) => void): void;
  /** Releases the line. An output keeps its level (the line stays claimed so a relay does not drop). */
  close(): Promise<void>;
}

export interface OpenOptions {
  direction: 'in' | 'out';
  /** Physical level an output starts at (set glitch-free with the direction where the backend can). */
  initial: Level;
}

export interface GpioBackend {
  readonly name: string;
  /** The global line number for a spec; throws CONFIG_INVALID naming the chips present when it cannot. */
  resolve(spec: LineSpec): Promise<number>;
  open(line: number, opts: OpenOptions): Promise<LineHandle>;
}

function describeChips(chips: readonly ChipInfo[]): string {
  if (chips.length === 0) return 'no GPIO chips are present';
  return `chips present: ${chips.map((c) => `"${c.label}" (${c.name}, lines ${c.base}..${c.base + c.ngpio - 1})`).join(', ')}`;
}

/** Resolves chip label + offset (or a global number) against the chips present. */
export function resolveLine(chips: readonly ChipInfo[], spec: LineSpec): number {
  if (spec.chip !== undefined) {
    const chip = chips.find((c) => c.label === spec.chip);
    if (!chip) throw new RackpilotError('CONFIG_INVALID', `GPIO chip "${spec.chip}" not found; ${describeChips(chips)}`, { chip: spec.chip });
    const offset = spec.offset ?? 0;
    if (offset >= chip.ngpio) {
      throw new RackpilotError(
        'CONFIG_INVALID',
        `GPIO offset ${offset} is out of range for chip "${chip.label}" (${chip.name}), which has ${chip.ngpio} lines (offsets 0..${chip.ngpio - 1})`,
        { chip: chip.label, offset },
      );
    }
    return chip.base + offset;
  }
  if (spec.line === undefined) throw new RackpilotError('CONFIG_INVALID', 'GPIO line not named: give "chip" + "offset" or "line"');
  const line = spec.line;
  if (!chips.some((c) => line >= c.base && line < c.base + c.ngpio)) {
    throw new RackpilotError('CONFIG_INVALID', `GPIO line ${line} belongs to no chip (Bookworm kernels number from 512 up; prefer "chip" + "offset"); ${describeChips(chips)}`, { line });
  }
  return line;
}
