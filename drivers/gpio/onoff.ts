/**
 * The onoff backend: sysfs GPIO with epoll edge interrupts (real hardware).
 * onoff (and its native epoll module) is loaded only when a line is opened,
 * so machines without it still run the software backend.
 */
import { join } from 'node:path';
import { RackpilotError } from '../lib/errors.js';
import { resolveLine, type GpioBackend, type Level, type LineHandle, type LineSpec, type OpenOptions, type EdgeEvent } from './backend.js';
import { checkAccess, DEFAULT_SYSFS_ROOT, gpioAccessError, gpioDir, readChips } from './sysfs.js';

type OnoffGpio = import('onoff').Gpio;
type OnoffModule = typeof import('onoff');

async function loadOnoff(): Promise<OnoffModule['Gpio']> {
  try {
    const mod = (await import('onoff')) as OnoffModule & { default?: OnoffModule };
    return (mod.default ?? mod).Gpio;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new RackpilotError('UNSUPPORTED', `the onoff GPIO library (with its native epoll module) could not be loaded: ${msg}; reinstall with "npm install" on the controller, or use "backend: soft"`, {}, { cause: err });
  }
}

class OnoffLine implements LineHandle {
  constructor(
    readonly line: number,
    private readonly gpio: OnoffGpio,
    private readonly direction: 'in' | 'out',
    private readonly where: string,
  ) {}

  async read(): Promise<Level> {
    try {
      return (await this.gpio.read()) === 1 ? 1 : 0;
    } catch (err) {
      throw gpioAccessError(err, `reading GPIO line ${this.line}`, join(this.where, 'value'));
    }
  }

  async write(value: Level): Promise<void> {
    try {
      await this.gpio.write(value);
    } catch (err) {
      throw gpioAccessError(err, `writing GPIO line ${this.line}`, join(this.where, 'value'));
    }
  }

  watch(onEdge: (ev: EdgeEvent) => void, onError: (err: Error) => void): void {
    this.gpio.watch((err, value) => {
      // captured first, in the epoll callback, before anything can await
      const ts = performance.timeOrigin + performance.now(); // sub-millisecond: decision times are measured from it
      if (err) onError(err);
      else onEdge({ value: value === 1 ? 1 : 0, ts });
    });
  }

  close(): Promise<void> {
    this.gpio.unwatchAll();
    // an unexported output falls back to an input and a relay on it would drop: outputs stay exported
    if (this.direction === 'in') this.gpio.unexport();
    return Promise.resolve();
  }
}

export class OnoffBackend implements GpioBackend {
  readonly name = 'onoff';

  /** `sysfsRoot` other than /sys is for tests of resolution and access checks only: onoff itself always uses /sys. */
  constructor(private readonly sysfsRoot = DEFAULT_SYSFS_ROOT) {}

  async resolve(spec: LineSpec): Promise<number> {
    return resolveLine(await readChips(this.sysfsRoot), spec);
  }

  async open(line: number, opts: OpenOptions): Promise<LineHandle> {
    await checkAccess(this.sysfsRoot);
    const Gpio = await loadOnoff();
    const where = join(gpioDir(this.sysfsRoot), `gpio${line}`);
    try {
      // activeLow false: the sysfs level is physical; the driver applies active-low itself
      const g =
        opts.direction === 'in'
          ? new Gpio(line, 'in', 'both', { activeLow: false })
          : new Gpio(line, opts.initial === 1 ? 'high' : 'low', 'none', { activeLow: false });
      return new OnoffLine(line, g, opts.direction, where);
    } catch (err) {
      throw gpioAccessError(err, `opening GPIO line ${line} (${opts.direction})`, join(gpioDir(this.sysfsRoot), 'export'));
    }
  }
}
