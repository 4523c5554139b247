import type { DriverDefinition } from '../contract.js';
import { AuradineDriver } from './driver.js';
import { auradineConfigSchema } from './schema.js';

export const auradineDriver = {
  id: 'auradine',
  kind: 'asic',
  description:
    'Auradine Teraflux miners, over their web API on port 8080 (token from POST /token) plus the gcminer TCP API for hashrate: sleep on/off, custom power mode with a watt target',
  fingerprint: { api: ['GCMINER'], web: { bodyIncludes: ['Miner UI'] } },
  configSchema: auradineConfigSchema,
  create: (config, ctx) => new AuradineDriver(config, ctx),
} satisfies DriverDefinition<typeof auradineConfigSchema>;
