import { z } from 'zod';
import { keepWarmSchema } from '../lib/http-keep-warm.js';
import { idSchema } from '../lib/ids.js';
import { feedSchema, apiPortSchema, passwordSchema, powerTargetRangeSchema, tcpTransportSchema, usernameSchema } from '../lib/transports.js';

export const auradineConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('auradine'),
    name: z.string().max(128).optional(),
    /** The PDU outlet(s) feeding this device (hard cut when it ignores a soft curtail). */
    feed: feedSchema,
    /** `port`: the web API (token auth) on 8080. */
    ...tcpTransportSchema(8080),
    /** The gcminer TCP API, read for hashrate (`summary`); telemetry still works without it. */
    apiPort: apiPortSchema,
    /** Web API user and password (factory default admin/admin). Never logged. */
    username: usernameSchema.default('admin'),
    password: passwordSchema.min(1).default('admin'),
    /** `{minW, maxW}`: watt range of the custom power mode (from the model's datasheet); the capability is offered only when set. */
    powerTarget: powerTargetRangeSchema.optional(),
    /** Keep a connection to the web port open between actions (a small `GET /` when idle for 0.7 x the device's keep-alive idle; see drivers/lib/http-keep-warm.ts). */
    keepWarm: keepWarmSchema,
    /** Replies larger than this are refused (bytes). */
    maxResponseBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(1024 * 1024),
    /** A curtail is confirmed only when the miner draws at most this. */
    sleepPowerMaxW: z.number().positive().max(1000).default(150),
    /** Interval of read-back polls while confirming an action. */
    confirmPollMs: z.number().int().min(20).max(5000).default(250),
  })
  .strict();

export type AuradineConfig = z.output<typeof auradineConfigSchema>;
