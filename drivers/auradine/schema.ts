import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { portSchema, tcpTransportSchema } from '../lib/transports.js';

export const auradineConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('auradine'),
    name: z.string().max(128).optional(),
    /** The web API (token auth) on 8080. */
    ...tcpTransportSchema(8080),
    /** The gcminer TCP API, read for hashrate (`summary`); telemetry still works without it. */
    apiPort: portSchema.default(4028),
    /** Web API user and password (factory default admin/admin). Never logged. */
    username: z.string().min(1).max(64).default('admin'),
    password: z.string().min(1).max(256).default('admin'),
    /** Watt range of the custom power mode (from the model's datasheet); the capability is offered only when both are set. */
    powerTargetMinW: z.number().int().min(100).max(30_000).optional(),
    powerTargetMaxW: z.number().int().min(100).max(30_000).optional(),
    /** Replies larger than this are refused (bytes). */
    maxResponseBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(1024 * 1024),
    /** A curtail is confirmed only when the miner draws at most this. */
    sleepPowerMaxW: z.number().positive().max(1000).default(150),
    /** Interval of read-back polls while confirming an action. */
    confirmPollMs: z.number().int().min(20).max(5000).default(250),
  })
  .strict()
  .refine((c) => (c.powerTargetMinW === undefined) === (c.powerTargetMaxW === undefined), {
    message: 'set both powerTargetMinW and powerTargetMaxW, or neither',
    path: ['powerTargetMaxW'],
  })
  .refine((c) => c.powerTargetMinW === undefined || c.powerTargetMaxW === undefined || c.powerTargetMinW < c.powerTargetMaxW, {
    message: 'powerTargetMinW must be below powerTargetMaxW',
    path: ['powerTargetMinW'],
  });

export type AuradineConfig = z.output<typeof auradineConfigSchema>;
