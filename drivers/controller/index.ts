import type { DriverDefinition } from '../contract.js';
import { ControllerDriver } from './driver.js';
import { controllerConfigSchema } from './schema.js';

export const controllerDriver = {
  id: 'controller',
  kind: 'controller',
  description:
    "The rack controller's own health: CPU %, load, memory, disk per mount and temperature from /proc, /sys and statfs (no process per read); static facts (CPU model, cores, OS, memory) from systeminformation at start-up",
  configSchema: controllerConfigSchema,
  create: (config, ctx) => new ControllerDriver(config, ctx),
} satisfies DriverDefinition<typeof controllerConfigSchema>;
