import type { DriverDefinition } from '../contract.js';
import { WhatsminerV3Driver } from './driver.js';
import { whatsminerV3ConfigSchema } from './schema.js';

export const whatsminerV3Driver = {
  id: 'whatsminer-v3',
  kind: 'asic',
  description:
    'MicroBT Whatsminer with API v3 (firmware after 2024.11), length-prefixed JSON on TCP 4433: get.miner.status telemetry; salted-token writes set.miner.service stop/start and set.miner.power_percent',
  // a framed `get.device.info` (no credentials needed) answers with its command echoed in `desc`
  fingerprint: { framed: { port: 4433, request: { cmd: 'get.device.info' }, expect: ['"desc":"get.device.info"'] } },
  configSchema: whatsminerV3ConfigSchema,
  create: (config, ctx) => new WhatsminerV3Driver(config, ctx),
} satisfies DriverDefinition<typeof whatsminerV3ConfigSchema>;
