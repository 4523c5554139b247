import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { feedSchema, apiPortSchema, passwordSchema, powerTargetRangeSchema, tcpTransportSchema, usernameSchema } from '../lib/transports.js';

export const braiinsConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('braiins'),
    name: z.string().max(128).optional(),
    /** The PDU outlet(s) feeding this device (hard cut when it ignores a soft curtail). */
    feed: feedSchema,
    /** gRPC API (h2c); `port` is the gRPC port. */
    ...tcpTransportSchema(50051),
    /** API login. Never logged. */
    username: usernameSchema.default('root'),
    /** API password (empty: the factory default of older Braiins OS+). Never logged. */
    password: passwordSchema.default(''),
    /** Port of the legacy cgminer-style TCP API (BOSminer), the telemetry fallback. */
    apiPort: apiPortSchema,
    /** Read telemetry from the legacy TCP API on `apiPort` when gRPC is unreachable. */
    apiFallback: z.boolean().default(true),
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
    powerTarget: powerTargetRangeSchema.optional(),
  })
  .strict();

export type BraiinsConfig = z.output<typeof braiinsConfigSchema>;
