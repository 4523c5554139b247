import type { DriverDefinition } from '../contract.js';
import { AntminerDriver } from './driver.js';
import { antminerConfigSchema } from './schema.js';

export const antminerDriver = {
  id: 'antminer',
  kind: 'asic',
  description:
    'Bitmain stock Antminer firmware: telemetry over the cgminer-family TCP API (4028); sleep/normal and low/high work modes through the web CGI (HTTP Digest, port 80), confirmed by read-back; no watt target',
  fingerprint: { api: ['BMMiner'], web: { realm: 'antMiner' } },
  configSchema: antminerConfigSchema,
  create: (config, ctx) => new AntminerDriver(config, ctx),
} satisfies DriverDefinition<typeof antminerConfigSchema>;
