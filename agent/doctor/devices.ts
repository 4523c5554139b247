/**
 * Each configured device, as the agent would drive it: the driver is created
 * from the registry (AutoDevice for `driver: auto`), started, read once and
 * stopped, all within the deadline; devices are checked in parallel with a
 * concurrency bound. A reading that carries model/firmware shows them; for
 * cgminer-API families the firmware comes from one `version` request
 * (drivers/detect.ts apiFirmware), as `rackpilot probe` reports it.
 */
import type { Logger } from 'pino';
import type { DeviceDriver, FieldValue, Reading } from '../../drivers/contract.js';
import { apiFirmware, DEFAULT_API_PORT } from '../../drivers/detect.js';
import { sleep, withDeadline } from '../../drivers/lib/deadline.js';
import { toRackpilotError } from '../../drivers/lib/errors.js';
import { findDriver } from '../../drivers/registry.js';
import { createDevice } from '../devices.js';
import { mapLimit } from '../concurrency.js';
import type { DeviceConfig } from '../config.js';
import { fail, pass, skip, type CheckResult } from './types.js';

/** How long stop() may take after the check (not counted in the device's deadline). */
const STOP_MS = 2_000;
/** The firmware request is made only when at least this much of the deadline is left. */
const MIN_FIRMWARE_MS = 100;
/** A sampling device without a fresh sample yet is read again after this. */
const RESAMPLE_MS = 100;

const str = (v: FieldValue | undefined): string | null => (typeof v === 'string' && v.trim() !== '' ? v.trim() : null);

/** The cgminer-family API port of a device, when its family has API fingerprints. */
function apiPortOf(dc: DeviceConfig, driverId: string): number | undefined {
  const c = dc as { apiPort?: unknown; port?: unknown; host?: unknown };
  if (typeof c.host !== 'string') return undefined;
  if (dc.driver === 'auto') return typeof c.port === 'number' ? c.port : DEFAULT_API_PORT;
  if (!findDriver(driverId)?.fingerprint?.api) return undefined;
  if (typeof c.apiPort === 'number') return c.apiPort;
  // `port` is the API port for families whose default port is 4028 (antminer, luxos, avalon, whatsminer-v2, epic)
  const def = findDriver(driverId)?.configSchema as unknown as { shape?: { port?: { safeParse(v: unknown): { success: boolean; data?: unknown } } } };
  const d = def.shape?.port?.safeParse(undefined);
  return d?.success && d.data === DEFAULT_API_PORT && typeof c.port === 'number' ? c.port : undefined;
}

async function identification(dc: DeviceConfig, driver: DeviceDriver, r: Reading, leftMs: number): Promise<{ model: string | null; firmware: string | null }> {
  let model = str(r.fields.model);
  let firmware = str(r.fields.firmware);
  if (model !== null && firmware !== null) return { model, firmware };
  const port = apiPortOf(dc, driver.driverId);
  const host = (dc as { host?: unknown }).host;
  if (port === undefined || typeof host !== 'string' || leftMs < MIN_FIRMWARE_MS) return { model, firmware };
  const fw = await apiFirmware({ host, apiPort: port, probeTimeoutMs: Math.min(leftMs, 2_000) }).catch(() => undefined);
  model ??= fw?.model ?? null;
  firmware ??= fw?.firmware ?? null;
  return { model, firmware };
}

function describe(driverLabel: string, id: { model: string | null; firmware: string | null }, r: Reading): string {
  const parts = [driverLabel];
  if (id.model) parts.push(`model ${id.model}`);
  if (id.firmware) parts.push(`firmware ${id.firmware}`);
  parts.push(r.state);
  if (r.powerW !== null) parts.push(`${Math.round(r.powerW)} W`);
  return parts.join(', ');
}

function readOnce(id: string, driver: DeviceDriver, deadlineMs: number): Promise<Reading> {
  return withDeadline(`${id} read`, deadlineMs, (signal) => driver.read({ deadlineMs, signal }));
}

export async function checkDevice(dc: DeviceConfig, timeoutMs: number, log: Logger): Promise<CheckResult> {
  const name = `device ${dc.id}`;
  const started = Date.now();
  const left = (): number => Math.max(50, timeoutMs - (Date.now() - started));
  let driver: DeviceDriver;
  try {
    driver = createDevice(dc, log);
  } catch (err) {
    const e = toRackpilotError(err);
    return fail(name, `${dc.driver}: cannot create the driver: ${e.code}: ${e.message}`, { driver: dc.driver, code: e.code });
  }
  const label = (): string => (dc.driver === 'auto' ? `auto -> ${driver.driverId === 'auto' ? 'not identified' : driver.driverId}` : dc.driver);
  try {
    await withDeadline(`${dc.id} start`, left(), () => driver.start());
    let r = await readOnce(dc.id, driver, left());
    // a sampling device (meter, GPIO input) answers read() from its loop: its first sample may still be on the way
    while ((!r.online || r.freshness !== 'fresh') && (driver.signalChannels?.length ?? 0) > 0 && timeoutMs - (Date.now() - started) > RESAMPLE_MS) {
      await sleep(RESAMPLE_MS);
      r = await readOnce(dc.id, driver, left());
    }
    if (!r.online || r.freshness !== 'fresh') {
      const e = r.error ?? { code: 'UNREACHABLE', message: 'the device did not answer' };
      return fail(name, `${label()}: ${e.code}: ${e.message}`, { driver: driver.driverId, code: e.code });
    }
    const id = await identification(dc, driver, r, timeoutMs - (Date.now() - started));
    return pass(name, describe(label(), id, r), { driver: driver.driverId, model: id.model, firmware: id.firmware, state: r.state, powerW: r.powerW });
  } catch (err) {
    const e = toRackpilotError(err);
    if (e.code === 'DEADLINE_EXCEEDED') {
      const phase = /\bstart:/.test(e.message) ? 'start (connect/detect)' : 'read';
      return fail(name, `${label()}: DEADLINE_EXCEEDED: no ${phase} result within ${timeoutMs} ms: the device is silent, or slower than --timeout`, { driver: driver.driverId, code: e.code });
    }
    return fail(name, `${label()}: ${e.code}: ${e.message}`, { driver: driver.driverId, code: e.code });
  } finally {
    await withDeadline(`${dc.id} stop`, STOP_MS, () => driver.stop()).catch(() => undefined);
  }
}

export async function checkDevices(devices: readonly DeviceConfig[], timeoutMs: number, concurrency: number, log: Logger): Promise<CheckResult[]> {
  if (devices.length === 0) return [skip('devices', 'no devices configured')];
  return mapLimit(devices, concurrency, (dc) => checkDevice(dc, timeoutMs, log));
}
