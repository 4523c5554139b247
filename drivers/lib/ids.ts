import { z } from 'zod';

/** Identifiers that become MQTT topic levels or JSON keys: [A-Za-z0-9_-], 1..64 chars. */
export const idSchema = z
  .string()
  .min(1, 'expected a non-empty id')
  .max(64, 'expected at most 64 characters')
  .regex(/^[A-Za-z0-9_-]+$/, 'expected only letters, digits, "_" and "-"');
