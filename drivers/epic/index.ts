import type { DriverDefinition } from '../contract.js';
import { EpicDriver } from './driver.js';
import { epicConfigSchema } from './schema.js';

export const epicDriver = {
  id: 'epic',
  kind: 'asic',
  description:
    'ePIC PowerPlay / UMC control boards, over their HTTP API on port 4028 (password in each POST): summary telemetry, miner Stop/Autostart, Power tuning algorithm with a watt target',
  fingerprint: { web: { bodyIncludes: ['Miner Web Dashboard'] } },
  configSchema: epicConfigSchema,
  create: (config, ctx) => new EpicDriver(config, ctx),
} satisfies DriverDefinition<typeof epicConfigSchema>;
