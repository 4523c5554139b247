import { z } from 'zod';
import { keepWarmSchema } from '../lib/http-keep-warm.js';
import { idSchema } from '../lib/ids.js';
import { feedSchema, fullPowerWSchema, passwordSchema, tcpTransportSchema } from '../lib/transports.js';

export const vnishConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('vnish'),
    name: z.string().max(128).optional(),
    /** The PDU outlet(s) feeding this device (hard cut when it ignores a soft curtail). */
    feed: feedSchema,
    ...tcpTransportSchema(80),
    /** Web password, sent to `POST /api/v1/unlock` (factory default "admin"). Never logged. */
    password: passwordSchema.min(1).default('admin'),
    /**
     * How curtail stops the miner: `stop` ends mining (`/mining/stop`, restore `/mining/start`);
     * `pause` pauses it (`/mining/pause`, restore `/mining/resume`). See README.
     */
    curtailMethod: z.enum(['stop', 'pause']).default('stop'),
    /**
     * Draw of this miner at throttle 100 %, in watts. Vnish throttles in percent of full power;
     * only with this set can a watt target be mapped to a percent (and the capability offered).
     */
    fullPowerW: fullPowerWSchema.optional(),
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

export type VnishConfig = z.output<typeof vnishConfigSchema>;
