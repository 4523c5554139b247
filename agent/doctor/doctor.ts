/**
 * Runs every doctor check for a loaded config, in parallel, each under a
 * deadline, and returns the rows in a fixed order: machine, files, broker,
 * GPIO, serial, NVML, devices, clock.
 */
import { pino, type Logger } from 'pino';
import { withDeadline } from '../../drivers/lib/deadline.js';
import { toRackpilotError } from '../../drivers/lib/errors.js';
import type { AgentConfig } from '../config.js';
import { checkBroker, checkTlsFiles } from './broker.js';
import { checkClock, type ClockProbes } from './clock.js';
import { checkDevices } from './devices.js';
import { checkGpio, type GpioCheckOptions } from './gpio.js';
import { checkNvml } from './nvml.js';
import { checkSerial } from './serial.js';
import { checkConfigFile, checkNode, checkStateDirs } from './system.js';
import { fail, type CheckResult } from './types.js';

export const DEFAULT_TIMEOUT_MS = 5_000;
/** A check group that has not finished this long after --timeout is reported as hung (nothing may hang). */
const GRACE_MS = 3_000;

export interface DoctorOptions {
  config: AgentConfig;
  /** The config file (its mode and owner are checked). */
  configFile?: string;
  timeoutMs?: number;
  clock?: ClockProbes;
  gpio?: GpioCheckOptions;
  logger?: Logger;
}

async function guarded(name: string, ms: number, work: () => Promise<CheckResult[]>): Promise<CheckResult[]> {
  try {
    return await withDeadline(`${name} check`, ms, work);
  } catch (err) {
    const e = toRackpilotError(err);
    return [fail(name, `${e.code}: ${e.message}`, { code: e.code })];
  }
}

export async function runChecks(o: DoctorOptions): Promise<CheckResult[]> {
  const cfg = o.config;
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const limit = timeoutMs + GRACE_MS;
  const log = o.logger ?? pino({ level: 'silent' });
  const tls = checkTlsFiles(cfg.mqtt);
  const clientId = `rackpilot-doctor-${cfg.site}-${cfg.rack}-${process.pid}`.slice(0, 128);
  const groups = await Promise.all([
    Promise.resolve([checkNode()]),
    o.configFile !== undefined ? guarded('config file', limit, async () => [await checkConfigFile(o.configFile as string)]) : Promise.resolve([]),
    guarded('state dir', limit, () => checkStateDirs(cfg)),
    Promise.resolve([tls.row]),
    guarded('broker', limit, async () => [await checkBroker(cfg.mqtt, tls.files, timeoutMs, clientId)]),
    guarded('gpio', limit, () => checkGpio(cfg.devices, o.gpio)),
    guarded('serial', limit, () => checkSerial(cfg.devices)),
    guarded('nvml', limit, () => checkNvml(cfg.devices)),
    guarded('devices', limit * Math.ceil(cfg.devices.length / cfg.poll.concurrency || 1), () => checkDevices(cfg.devices, timeoutMs, cfg.poll.concurrency, log)),
    guarded('clock', limit, async () => [await checkClock(o.clock, Math.min(timeoutMs, 2_000))]),
  ]);
  return groups.flat();
}
