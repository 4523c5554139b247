/**
 * The sysfs GPIO tree (/sys/class/gpio): chip discovery for line resolution
 * and clear errors when GPIO is not accessible. The root is configurable so
 * tests can point it at a fake tree; onoff itself always uses /sys.
 */
import { constants, promises as fsp, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RackpilotError } from '../lib/errors.js';
import type { ChipInfo } from './backend.js';

export const DEFAULT_SYSFS_ROOT = '/sys';

function errno(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

export function gpioDir(sysfsRoot: string): string {
  return join(sysfsRoot, 'class', 'gpio');
}

function noSysfs(dir: string): RackpilotError {
  return new RackpilotError(
    'UNSUPPORTED',
    `no sysfs GPIO interface at ${dir}: the kernel lacks CONFIG_GPIO_SYSFS (deprecated, but still enabled on Raspberry Pi OS); ` +
      'use a kernel with it, or "backend: soft" for tests and the demo',
    { path: dir },
  );
}

/** Name of the group owning `path` (from /etc/group), or its gid. */
function groupOf(path: string): { gid: number; name: string } | undefined {
  try {
    const { gid } = statSync(path);
    let name = `gid ${gid}`;
    try {
      const line = readFileSync('/etc/group', 'utf8')
        .split('\n')
        .find((l) => l.split(':')[2] === String(gid));
      if (line) name = line.split(':')[0] ?? name;
    } catch {
      // no /etc/group: the gid has to do
    }
    return { gid, name };
  } catch {
    return undefined;
  }
}

/** A clear error for a failed sysfs GPIO access (`what`: e.g. "export GPIO line 529"). */
export function gpioAccessError(err: unknown, what: string, path: string): RackpilotError {
  const code = errno(err);
  const detail = err instanceof Error ? err.message : String(err);
  switch (code) {
    case 'EACCES':
    case 'EPERM': {
      const g = groupOf(path);
      const who =
        g && g.gid !== 0
          ? `add the agent's user to group "${g.name}" (owner of ${path}; on Raspberry Pi OS the "gpio" group) and restart the agent, or run it as root`
          : `${path} is writable by root only: run the agent as root (or with CAP_DAC_OVERRIDE), or install a udev rule giving group "gpio" access (Raspberry Pi OS ships one) and add the agent's user to "gpio"`;
      return new RackpilotError('AUTH_FAILED', `${what}: permission denied on ${path}: ${who}`, { path, errno: code }, { cause: err });
    }
    case 'ENOENT':
      return new RackpilotError('UNSUPPORTED', `${what}: ${path} does not exist (${detail}); is sysfs GPIO (CONFIG_GPIO_SYSFS) enabled?`, { path, errno: code }, { cause: err });
    case 'EBUSY':
      return new RackpilotError(
        'DEVICE_ERROR',
        `${what}: the line is busy: claimed by a kernel driver (device tree overlay) or by another program through the GPIO character device`,
        { path, errno: code },
        { cause: err },
      );
    case 'EINVAL':
      return new RackpilotError('CONFIG_INVALID', `${what}: the kernel refused the line number (${detail})`, { path, errno: code }, { cause: err });
    case undefined:
    default:
      return new RackpilotError('DEVICE_ERROR', `${what}: ${detail}`, { path, errno: code ?? null }, { cause: err });
  }
}

/** Throws a clear error unless the sysfs GPIO interface exists and lines can be exported by this process. */
export async function checkAccess(sysfsRoot = DEFAULT_SYSFS_ROOT): Promise<void> {
  const dir = gpioDir(sysfsRoot);
  try {
    await fsp.access(dir, constants.F_OK);
  } catch {
    throw noSysfs(dir);
  }
  const exportPath = join(dir, 'export');
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(exportPath, constants.O_WRONLY);
  } catch (err) {
    throw gpioAccessError(err, 'GPIO not accessible', exportPath);
  } finally {
    await fh?.close();
  }
}

async function readTrim(path: string): Promise<string> {
  return (await fsp.readFile(path, 'utf8')).trim();
}

/** The GPIO chips in the sysfs tree, by label, base and line count. */
export async function readChips(sysfsRoot = DEFAULT_SYSFS_ROOT): Promise<ChipInfo[]> {
  const dir = gpioDir(sysfsRoot);
  let names: string[];
  try {
    names = (await fsp.readdir(dir)).filter((n) => /^gpiochip\d+$/.test(n));
  } catch (err) {
    if (errno(err) === 'ENOENT') throw noSysfs(dir);
    throw gpioAccessError(err, 'listing GPIO chips', dir);
  }
  const chips: ChipInfo[] = [];
  for (const name of names) {
    const d = join(dir, name);
    try {
      const [label, base, ngpio] = await Promise.all([readTrim(join(d, 'label')), readTrim(join(d, 'base')), readTrim(join(d, 'ngpio'))]);
      const b = Number(base);
      const n = Number(ngpio);
      if (Number.isInteger(b) && Number.isInteger(n)) chips.push({ name, label, base: b, ngpio: n });
    } catch {
      // a chip whose attributes cannot be read is not usable through sysfs anyway
    }
  }
  return chips.sort((a, b) => a.base - b.base);
}
