import { z } from 'zod';
import { keepWarmSchema } from '../lib/http-keep-warm.js';
import { idSchema } from '../lib/ids.js';
import { feedSchema, passwordSchema, powerTargetRangeSchema, tcpTransportSchema } from '../lib/transports.js';

export const epicConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('epic'),
    name: z.string().max(128).optional(),
    /** The PDU outlet(s) feeding this device (hard cut when it ignores a soft curtail). */
    feed: feedSchema,
    /** The ePIC HTTP API listens on 4028 (instead of the cgminer TCP API). */
    ...tcpTransportSchema(4028),
    /** API password, sent in the body of every POST (factory default "letmein"). Never logged. */
    password: passwordSchema.min(1).default('letmein'),
    /**
     * `{minW, maxW}`: watt-target range of this miner's Power tuning algorithm (see GET
     * /capabilities on the device). The power-target capability is offered only when set.
     */
    powerTarget: powerTargetRangeSchema.optional(),
    /** Name of the watt-target algorithm in `POST /perpetualtune/algo` (ePIC's UI: "PowerTune"). */
    powerTuneAlgo: z.string().min(1).max(64).default('PowerTune'),
    /** `min_throttle` sent with a watt target: the tuner may throttle down to this (W). */
    minThrottleW: z.number().int().min(100).max(30_000).default(1000),
    /** `throttle_step` sent with a watt target (W). */
    throttleStepW: z.number().int().min(10).max(5000).default(100),
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

export type EpicConfig = z.output<typeof epicConfigSchema>;
