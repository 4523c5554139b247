import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { feedSchema, tcpTransportSchema } from '../lib/transports.js';

export const luxosConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('luxos'),
    name: z.string().max(128).optional(),
    /** The PDU outlet(s) feeding this device (hard cut when it ignores a soft curtail). */
    feed: feedSchema,
    ...tcpTransportSchema(4028),
    /** Replies larger than this are refused (bytes). */
    maxResponseBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(1024 * 1024),
    /** A curtail is confirmed only when the miner draws at most this (LuxOS sleeps at ~25 W). */
    sleepPowerMaxW: z.number().positive().max(1000).default(60),
    /** Interval of read-back polls while confirming an action. */
    confirmPollMs: z.number().int().min(20).max(5000).default(250),
    /**
     * Hold the single LuxOS session and renew it from read() (off the hot path), so curtail/restore
     * never wait for a logon. Other tools then get 402 "Another session is active" on their logon.
     */
    keepSessionWarm: z.boolean().default(true),
  })
  .strict();

export type LuxosConfig = z.output<typeof luxosConfigSchema>;
