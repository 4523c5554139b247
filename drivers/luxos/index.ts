import type { DriverDefinition } from '../contract.js';
import { LuxosDriver } from './driver.js';
import { luxosConfigSchema } from './schema.js';

export const luxosDriver = {
  id: 'luxos',
  kind: 'asic',
  description: 'Luxor LuxOS firmware on Antminers, over the cgminer-family TCP API (port 4028)',
  fingerprint: { api: ['LUXminer'], web: { bodyIncludes: ['Luxor Firmware'] } },
  configSchema: luxosConfigSchema,
  create: (config, ctx) => new LuxosDriver(config, ctx),
} satisfies DriverDefinition<typeof luxosConfigSchema>;
