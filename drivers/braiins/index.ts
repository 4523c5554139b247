import type { DriverDefinition } from '../contract.js';
import { BraiinsDriver } from './driver.js';
import { braiinsConfigSchema } from './schema.js';

export const braiinsDriver = {
  id: 'braiins',
  kind: 'asic',
  description:
    'Braiins OS+ firmware, over its gRPC API (h2c, port 50051: pause/resume mining, power target, quick ramping) with the legacy BOSminer TCP API (port 4028) as telemetry fallback',
  fingerprint: { api: ['BOSminer', 'BOSer'], web: { bodyIncludes: ['Braiins OS'] }, ports: [50051] },
  configSchema: braiinsConfigSchema,
  create: (config, ctx) => new BraiinsDriver(config, ctx),
} satisfies DriverDefinition<typeof braiinsConfigSchema>;
