import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { feedSchema, fullPowerWSchema, passwordSchema, tcpTransportSchema } from '../lib/transports.js';

export const whatsminerV3ConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('whatsminer-v3'),
    name: z.string().max(128).optional(),
    /** The PDU outlet(s) feeding this device (hard cut when it ignores a soft curtail). */
    feed: feedSchema,
    ...tcpTransportSchema(4433),
    /** API account for writes (sent as `account`): super, user1, user2 or user3. Never logged. */
    username: z.enum(['super', 'user1', 'user2', 'user3']).default('super'),
    /** That account's password (never logged). Without it the driver is read-only. */
    password: passwordSchema.min(1).max(64).optional(),
    /** Reply frames announcing more than this are refused unread (bytes). */
    maxFrameBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(1024 * 1024),
    /** A curtail is confirmed only when the miner draws at most this. */
    sleepPowerMaxW: z.number().positive().max(1000).default(100),
    confirmPollMs: z.number().int().min(20).max(5000).default(250),
    /**
     * The draw that 100 % stands for (the miner's power limit), in watts, when known up front;
     * otherwise learned from `power-limit` on the first good read. Power targets are percentages of it.
     */
    fullPowerW: fullPowerWSchema.optional(),
    minPowerPercent: z.number().int().min(1).max(100).default(10),
    powerTargetTolerance: z.number().min(0.01).max(0.5).default(0.05),
  })
  .strict();

export type WhatsminerV3Config = z.output<typeof whatsminerV3ConfigSchema>;
