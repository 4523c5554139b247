import type { DriverDefinition } from '../contract.js';
import { WhatsminerV2Driver } from './driver.js';
import { whatsminerV2ConfigSchema } from './schema.js';

export const whatsminerV2Driver = {
  id: 'whatsminer-v2',
  kind: 'asic',
  description:
    'MicroBT Whatsminer with btminer API v2 (firmware up to 2024.11), TCP 4028: plaintext telemetry; AES-encrypted writes power_off/power_on/set_power_pct (needs the API enabled and the admin password changed)',
  fingerprint: { api: ['BTMiner'], web: { redirectIncludes: ['/cgi-bin/luci'] } },
  configSchema: whatsminerV2ConfigSchema,
  create: (config, ctx) => new WhatsminerV2Driver(config, ctx),
} satisfies DriverDefinition<typeof whatsminerV2ConfigSchema>;
