import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { portSchema, tcpTransportSchema } from '../lib/transports.js';

export const braiinsConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('braiins'),
    name: z.string().max(128).optional(),
    /** gRPC API (h2c); `port` is the gRPC port. */
    ...tcpTransportSchema(50051),
    /** API login. Never logged. */
    username: z.string().min(1).max(64).default('root'),
    /** API password (empty: the factory default of older Braiins OS+). Never logged. */
    password: z.string().max(256).default(''),
    /** The legacy cgminer-style TCP API (BOSminer), used for telemetry when gRPC is unreachable. */
    legacyApi: z
      .object({
        enabled: z.boolean().default(true),
        port: portSchema.default(4028),
      })
      .strict()
      .prefault({}),
    /** Replies larger than this are refused (bytes). */
    maxResponseBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(1024 * 1024),
    /** A curtail is confirmed only when the miner is paused, not hashing, and draws at most this. */
    sleepPowerMaxW: z.number().positive().max(1000).default(100),
    /** Interval of read-back polls while confirming an action. */
    confirmPollMs: z.number().int().min(20).max(5000).default(250),
    /**
     * Quick ramping for curtailments, applied once at start (`SetQuickRamping`, saved and applied):
     * seconds to ramp up on resume and down on pause. Left unset, the miner's setting is untouched.
     */
    quickRamping: z
      .object({
        upS: z.number().int().min(0).max(3600),
        downS: z.number().int().min(0).max(3600),
      })
      .strict()
      .optional(),
    /**
     * Power-target range to assume until the miner reports its own (`GetConstraints`);
     * the miner's reported range always wins.
     */
    powerTarget: z
      .object({ minW: z.number().int().positive().max(100_000), maxW: z.number().int().positive().max(100_000) })
      .strict()
      .refine((r) => r.minW <= r.maxW, { message: 'minW must not exceed maxW' })
      .optional(),
  })
  .strict();

export type BraiinsConfig = z.output<typeof braiinsConfigSchema>;
