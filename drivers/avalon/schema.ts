import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { feedSchema, tcpTransportSchema } from '../lib/transports.js';

export const avalonConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('avalon'),
    name: z.string().max(128).optional(),
    /** The PDU outlet(s) feeding this device (hard cut when it ignores a soft curtail). */
    feed: feedSchema,
    ...tcpTransportSchema(4028),
    /** Replies larger than this are refused (bytes). */
    maxResponseBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(1024 * 1024),
    /**
     * softoff/softon act at a unix time; the driver sends now + this many seconds (tools use 5).
     * The miner's clock must be right (NTP): a skewed clock delays or advances the action.
     */
    scheduleOffsetS: z.number().int().min(0).max(300).default(5),
    /** A curtail is confirmed only when the miner does not hash and draws at most this. */
    sleepPowerMaxW: z.number().positive().max(1000).default(60),
    /**
     * Work levels offered as profiles (`ascset 0,worklevel,set,<level>`). Their meaning and range
     * differ per model (e.g. -1 eco / 0 super on Avalon Q/Mini 3), so none are assumed: list them.
     */
    workLevels: z
      .array(
        z
          .object({
            name: z.string().regex(/^[A-Za-z0-9_-]{1,32}$/, 'expected 1..32 letters, digits, "_" or "-"'),
            level: z.number().int().min(-10).max(10),
            /** Nominal draw at this level, if known (shown in listProfiles). */
            powerW: z.number().positive().max(20_000).optional(),
          })
          .strict(),
      )
      .max(16)
      .default([]),
    /** Interval of read-back polls while confirming an action. */
    confirmPollMs: z.number().int().min(20).max(10_000).default(500),
  })
  .strict();

export type AvalonConfig = z.output<typeof avalonConfigSchema>;
