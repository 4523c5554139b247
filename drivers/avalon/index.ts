import type { DriverDefinition } from '../contract.js';
import { AvalonDriver } from './driver.js';
import { avalonConfigSchema } from './schema.js';

export const avalonDriver = {
  id: 'avalon',
  kind: 'asic',
  description:
    'Canaan Avalon (cgminer TCP API, port 4028): estats telemetry, scheduled softoff/softon curtail and restore confirmed by read-back, work levels as profiles; no watt target',
  fingerprint: { api: ['Avalon'], web: { bodyIncludes: ['Avalon'] } },
  configSchema: avalonConfigSchema,
  create: (config, ctx) => new AvalonDriver(config, ctx),
} satisfies DriverDefinition<typeof avalonConfigSchema>;
