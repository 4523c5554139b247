import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { feedSchema, fullPowerWSchema, passwordSchema, tcpTransportSchema } from '../lib/transports.js';

export const whatsminerV2ConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('whatsminer-v2'),
    name: z.string().max(128).optional(),
    /** The PDU outlet(s) feeding this device (hard cut when it ignores a soft curtail). */
    feed: feedSchema,
    ...tcpTransportSchema(4028),
    /**
     * The miner's admin password (never logged). Needed for every write; without it the
     * driver is read-only. Writes also need the API enabled and the password changed
     * from the factory "admin" in WhatsMinerTool.
     */
    password: passwordSchema.min(1).max(64).optional(),
    /** Replies larger than this are refused (bytes). */
    maxResponseBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(1024 * 1024),
    /** A curtail is confirmed only when the miner draws at most this (power_off leaves the control board on). */
    sleepPowerMaxW: z.number().positive().max(1000).default(100),
    /** Interval of read-back polls while confirming an action. */
    confirmPollMs: z.number().int().min(20).max(5000).default(250),
    /** Renew the token (it lives 30 min on the miner) once it is this old; renewal happens in read()/start(). */
    tokenRefreshMs: z.number().int().min(1000).max(29 * 60_000).default(25 * 60_000),
    /**
     * The draw that 100 % stands for (the miner's power limit), in watts, when known up front;
     * otherwise learned from summary `Power Limit` on the first good read. Power targets are
     * sent as percentages of it.
     */
    fullPowerW: fullPowerWSchema.optional(),
    /** Lowest set_power_pct the driver will send. */
    minPowerPercent: z.number().int().min(1).max(100).default(10),
    /** A power target is confirmed when read-back power is within this fraction of the target (or 50 W). */
    powerTargetTolerance: z.number().min(0.01).max(0.5).default(0.05),
  })
  .strict();

export type WhatsminerV2Config = z.output<typeof whatsminerV2ConfigSchema>;
