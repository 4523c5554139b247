/** The one place a device block of the config becomes a driver (the agent, `rackpilot doctor`). */
import type { Logger } from 'pino';
import type { DeviceDriver, DriverContext } from '../drivers/contract.js';
import { findDriver } from '../drivers/registry.js';
import { AutoDevice } from './auto.js';
import type { DeviceConfig } from './config.js';

export function createDevice(dc: DeviceConfig, log: Logger): DeviceDriver {
  const ctx: DriverContext = { logger: log.child({ device: dc.id, driver: dc.driver }), now: Date.now };
  if (dc.driver === 'auto') return new AutoDevice(dc, ctx);
  const def = findDriver(dc.driver);
  if (!def) throw new Error(`no driver "${dc.driver}" (config was validated against the registry)`);
  return def.create(dc, ctx);
}
