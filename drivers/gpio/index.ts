import type { DriverDefinition } from '../contract.js';
import { GpioDriver } from './driver.js';
import { gpioConfigSchema } from './schema.js';

export const gpioDriver = {
  id: 'gpio',
  kind: 'gpio',
  description:
    'One GPIO line: an input streaming its level from edge interrupts (debounced, active-low) or an output driving a relay, confirmed by read-back; sysfs GPIO through onoff, or a software backend for tests and the demo',
  configSchema: gpioConfigSchema,
  create: (config, ctx) => new GpioDriver(config, ctx),
} satisfies DriverDefinition<typeof gpioConfigSchema>;
