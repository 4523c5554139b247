/**
 * GPIO access for each `driver: gpio` device: the soft backend is simulated
 * (pass); the onoff backend needs the sysfs GPIO tree, a writable `export`,
 * the configured chip/line, and the onoff native module. No GPIO device: skipped.
 */
import { toRackpilotError } from '../../drivers/lib/errors.js';
import { resolveLine } from '../../drivers/gpio/backend.js';
import type { GpioConfig } from '../../drivers/gpio/schema.js';
import { checkAccess, DEFAULT_SYSFS_ROOT, gpioDir, readChips } from '../../drivers/gpio/sysfs.js';
import type { DeviceConfig } from '../config.js';
import { fail, pass, skip, type CheckResult } from './types.js';

export interface GpioCheckOptions {
  /** Root of the sysfs tree (tests point it at a fake one). */
  sysfsRoot?: string;
  /** Loads the onoff module (tests may replace it). */
  loadOnoff?: () => Promise<unknown>;
}

function lineName(c: GpioConfig): string {
  return c.chip !== undefined ? `chip "${c.chip}" offset ${c.offset ?? 0}` : `line ${c.line ?? '?'}`;
}

async function checkOne(c: GpioConfig, o: Required<GpioCheckOptions>): Promise<CheckResult> {
  const name = `gpio ${c.id}`;
  if (c.backend === 'soft') return pass(name, `simulated (backend soft): ${lineName(c)}, ${c.direction === 'in' ? 'input' : 'output'}`, { backend: 'soft' });
  try {
    await checkAccess(o.sysfsRoot);
    const line = resolveLine(await readChips(o.sysfsRoot), { chip: c.chip, offset: c.offset, line: c.line });
    try {
      await o.loadOnoff();
    } catch (err) {
      return fail(name, `the onoff GPIO library (native epoll module) cannot be loaded: ${(err as Error).message}: reinstall rackpilot on this machine (npm rebuild epoll onoff)`, { backend: 'onoff' });
    }
    return pass(name, `${lineName(c)} is line ${line}; ${gpioDir(o.sysfsRoot)}/export is writable (${c.direction === 'in' ? 'input' : 'output'})`, { backend: 'onoff', line });
  } catch (err) {
    const e = toRackpilotError(err);
    return fail(name, `${e.code}: ${e.message}`, { backend: 'onoff', code: e.code });
  }
}

export async function checkGpio(devices: readonly DeviceConfig[], opts: GpioCheckOptions = {}): Promise<CheckResult[]> {
  const gpio = devices.filter((d): d is GpioConfig => d.driver === 'gpio');
  if (gpio.length === 0) return [skip('gpio', 'no GPIO devices configured')];
  const o: Required<GpioCheckOptions> = { sysfsRoot: opts.sysfsRoot ?? DEFAULT_SYSFS_ROOT, loadOnoff: opts.loadOnoff ?? (() => import('onoff')) };
  return Promise.all(gpio.map((c) => checkOne(c, o)));
}
