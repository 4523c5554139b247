/**
 * NVML for GPU devices on the local backend (`driver: gpu`, `mode: local`):
 * the library opens through the GPU backend's own open() (honouring
 * `libraryPath`), and reports its GPUs and, when it has the symbol, the
 * driver version. Remote gpu-nodes are devices: the device check covers them.
 */
import { readFileSync } from 'node:fs';
import koffi from 'koffi';
import type { GpuConfig } from '../../drivers/gpu/schema.js';
import { LocalGpuBackend } from '../../drivers/gpu/local.js';
import { NVML_DEFAULT_LIBRARY } from '../../drivers/gpu/nvml.js';
import { toRackpilotError } from '../../drivers/lib/errors.js';
import type { DeviceConfig } from '../config.js';
import { fail, pass, skip, warn, type CheckResult } from './types.js';

const CAP_SYS_ADMIN = 21n;

/** Whether this process holds CAP_SYS_ADMIN (root, or granted by the unit), from /proc/self/status; null when unknown. */
export function hasSysAdmin(status: string | null = readStatus()): boolean | null {
  const m = status === null ? null : /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  if (!m?.[1]) return null;
  return ((BigInt(`0x${m[1]}`) >> CAP_SYS_ADMIN) & 1n) === 1n;
}

function readStatus(): string | null {
  try {
    return readFileSync('/proc/self/status', 'utf8');
  } catch {
    return null;
  }
}

/**
 * Capping a GPU's power limit (curtail) and setting it back (restore) need
 * CAP_SYS_ADMIN: NVML answers NO_PERMISSION otherwise. The service runs as
 * user rackpilot with no capabilities unless a drop-in grants it.
 */
export function checkGpuPermission(ids: readonly string[], status?: string | null): CheckResult {
  const has = hasSysAdmin(status);
  if (has === true) return pass('gpu permission', `CAP_SYS_ADMIN held: power limits of ${ids.join(', ')} can be set`);
  const why = has === null ? 'cannot tell whether this process holds CAP_SYS_ADMIN' : 'this process lacks CAP_SYS_ADMIN';
  return warn(
    'gpu permission',
    `${why}: curtail/restore of ${ids.join(', ')} (power limits) will fail with NO_PERMISSION; grant it to the service with "systemctl edit rackpilot": [Service] AmbientCapabilities=CAP_SYS_ADMIN and CapabilityBoundingSet=CAP_SYS_ADMIN (reading works without it)`,
  );
}

/** `nvmlSystemGetDriverVersion`, looked up in the already-loaded library (same dlopen handle); null when absent. */
function driverVersion(path: string): string | null {
  // not unloaded: the handle may be the binding's own (dlopen counts references; doctor is one-shot)
  try {
    const lib = koffi.load(path);
    const fn = lib.func('nvmlSystemGetDriverVersion', 'int', ['uint8_t *', 'uint32_t']) as (buf: Buffer, len: number) => number;
    const buf = Buffer.alloc(96);
    if (fn(buf, buf.length) !== 0) return null;
    const end = buf.indexOf(0);
    return buf.toString('utf8', 0, end < 0 ? buf.length : end) || null;
  } catch {
    return null;
  }
}

async function checkLibrary(name: string, path: string | undefined, ids: string[]): Promise<CheckResult> {
  const lib = path ?? NVML_DEFAULT_LIBRARY;
  const backend = new LocalGpuBackend(path !== undefined ? { libraryPath: path } : {});
  try {
    await backend.open();
  } catch (err) {
    const e = toRackpilotError(err);
    const cause = e.cause instanceof Error ? e.cause.message : undefined;
    const missing = e.code === 'UNSUPPORTED' && e.context.libraryPath !== undefined && e.context.symbol === undefined && cause !== undefined;
    const detail = missing
      ? `${lib} not found: install the NVIDIA driver (nvidia-utils-<version> ships libnvidia-ml.so.1)${path !== undefined ? ' or fix libraryPath' : ''}; used by ${ids.join(', ')} (loader: ${cause})`
      : `${lib}: ${e.code}: ${e.message} (used by ${ids.join(', ')})`;
    return fail(name, detail, { library: lib, code: e.code });
  }
  try {
    const gpus = await backend.list();
    const version = driverVersion(lib);
    const lost = gpus.filter((g) => g.lost !== undefined);
    const data = { library: lib, gpus: gpus.length, driverVersion: version };
    const what = `${lib}: driver ${version ?? 'version unknown'}, ${gpus.length} GPU(s)${gpus.length > 0 ? ` (${[...new Set(gpus.filter((g) => !g.lost).map((g) => g.name))].join(', ')})` : ''}`;
    if (gpus.length === 0) return fail(name, `${what}: NVML sees no GPU; check "nvidia-smi"`, data);
    if (lost.length > 0) return fail(name, `${what}; lost: ${lost.map((g) => `#${g.index} ${g.lost ?? ''}`).join('; ')}`, data);
    return pass(name, what, data);
  } catch (err) {
    const e = toRackpilotError(err);
    return fail(name, `${e.code}: ${e.message}`, { library: lib, code: e.code });
  } finally {
    await backend.close().catch(() => undefined);
  }
}

export async function checkNvml(devices: readonly DeviceConfig[]): Promise<CheckResult[]> {
  const local = devices.filter((d): d is GpuConfig => d.driver === 'gpu' && d.mode === 'local');
  if (local.length === 0) return [skip('nvml', 'no GPU devices on the local NVML backend')];
  const byLib = new Map<string | undefined, string[]>();
  for (const d of local) byLib.set(d.libraryPath, [...(byLib.get(d.libraryPath) ?? []), d.id]);
  // one row `nvml` per library: named after its first device when devices use different ones
  const rows = await Promise.all([...byLib].map(([path, ids]) => checkLibrary(byLib.size === 1 ? 'nvml' : `nvml ${ids[0] ?? ''}`, path, ids)));
  return [...rows, checkGpuPermission(local.map((d) => d.id))];
}
