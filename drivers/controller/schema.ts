import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { feedSchema } from '../lib/transports.js';

/**
 * The field key of a mount's disk usage: `diskUsedPct` for `/`, otherwise
 * `disk` + the path's segments in PascalCase + `UsedPct`
 * (`/boot/firmware` -> `diskBootFirmwareUsedPct`).
 */
export function diskKey(mount: string, suffix: 'UsedPct' | 'FreeMiB'): string {
  const parts = mount
    .split('/')
    .filter(Boolean)
    .map((p) => p.replace(/[^A-Za-z0-9]+/g, ' ').trim())
    .flatMap((p) => p.split(' '))
    .filter(Boolean)
    .map((p) => p[0]?.toUpperCase() + p.slice(1));
  return `disk${parts.join('')}${suffix}`;
}

export const controllerConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('controller'),
    name: z.string().max(128).optional(),
    feed: feedSchema,
    /** Mount points whose disk usage is reported (statfs), one flat field per mount. */
    mounts: z
      .array(z.string().regex(/^\/[A-Za-z0-9._/-]*$/, 'expected an absolute path'))
      .min(1)
      .max(16)
      .default(['/'])
      .refine((ms) => new Set(ms.map((m) => diskKey(m, 'UsedPct'))).size === ms.length, { message: 'two mounts map to the same field name' }),
    /** Thermal zone for temperatureC: its index N (thermal_zoneN) or its type (e.g. "cpu-thermal", "x86_pkg_temp"). Default: a CPU zone, else the first. */
    thermalZone: z.union([z.number().int().min(0).max(255), z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/)]).optional(),
  })
  .strict();

export type ControllerConfig = z.output<typeof controllerConfigSchema>;
