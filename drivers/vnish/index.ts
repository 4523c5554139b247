import type { DriverDefinition } from '../contract.js';
import { VnishDriver } from './driver.js';
import { vnishConfigSchema } from './schema.js';

export const vnishDriver = {
  id: 'vnish',
  kind: 'asic',
  description:
    'Vnish (AnthillOS) firmware on Antminers, over its web API (HTTP /api/v1, bearer token from /unlock): summary telemetry, mining stop/start or pause/resume, throttle percent as a power target',
  fingerprint: { api: ['VNISH'], web: { bodyIncludes: ['AnthillOS'] } },
  configSchema: vnishConfigSchema,
  create: (config, ctx) => new VnishDriver(config, ctx),
} satisfies DriverDefinition<typeof vnishConfigSchema>;
