/**
 * Transport option schemas shared by every driver (CONVENTIONS.md #6): a
 * driver composes these instead of inventing its own option names.
 */
import { z } from 'zod';

export const hostSchema = z
  .string()
  .min(1, 'expected a host name or IP address')
  .max(253)
  .regex(/^[A-Za-z0-9.:_-]+$/, 'expected a host name or IP address (letters, digits, ".", ":", "-")');

export const portSchema = z.number().int().min(1).max(65535);

export const timeoutsSchema = z
  .object({
    connectMs: z.number().int().min(10).max(60_000).default(1_000),
    readMs: z.number().int().min(10).max(120_000).default(3_000),
  })
  .strict()
  .prefault({});

export function tcpTransportSchema(defaultPort: number) {
  return {
    host: hostSchema,
    port: portSchema.default(defaultPort),
    timeouts: timeoutsSchema,
  };
}

export type Timeouts = z.infer<typeof timeoutsSchema>;
