import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { feedSchema } from '../lib/transports.js';

/**
 * One GPIO line as one device. The line is named by a chip label and an
 * offset (resolved against the chip's base: Bookworm kernels number from 512
 * up) or by a global line number. Input-only keys (`edge`, `debounceMs`) and
 * the output-only key (`initial`) are refused on the other direction; their
 * defaults are applied by the driver (edge `both`, debounce 5 ms, initial off).
 */
export const gpioConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('gpio'),
    name: z.string().max(128).optional(),
    feed: feedSchema,
    /** `onoff`: sysfs GPIO with epoll edge interrupts (real hardware); `soft`: process-local lines (tests, demo). */
    backend: z.enum(['onoff', 'soft']).default('onoff'),
    /** The gpiochip's label, e.g. `pinctrl-bcm2711` (Pi 4) or `pinctrl-rp1` (Pi 5); with `offset`. */
    chip: z.string().min(1).max(64).optional(),
    /** Line offset within `chip` (the BCM number on a Pi's main chip). */
    offset: z.number().int().min(0).max(1023).optional(),
    /** Global sysfs line number (instead of chip + offset). */
    line: z.number().int().min(0).max(65_535).optional(),
    direction: z.enum(['in', 'out']),
    /** The line is active (level true, value 1) when it is electrically low. */
    activeLow: z.boolean().default(false),
    /** Inputs: which edges are streamed, in active-low-adjusted terms (rising = becoming active). Default `both`. */
    edge: z.enum(['both', 'rising', 'falling']).optional(),
    /** Inputs: a new level must hold this long before it is accepted (0: every edge). Default 5. */
    debounceMs: z.number().int().min(0).max(10_000).optional(),
    /** Outputs: the level driven at start (after active-low). Default false (inactive). */
    initial: z.boolean().optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const byChip = c.chip !== undefined || c.offset !== undefined;
    if (byChip && c.line !== undefined) ctx.addIssue({ code: 'custom', path: ['line'], message: 'give either "chip" + "offset" or "line", not both' });
    else if (!byChip && c.line === undefined) ctx.addIssue({ code: 'custom', path: ['line'], message: 'name the line: "chip" + "offset", or a global "line" number' });
    else if (byChip && (c.chip === undefined || c.offset === undefined)) {
      ctx.addIssue({ code: 'custom', path: [c.chip === undefined ? 'chip' : 'offset'], message: '"chip" and "offset" go together' });
    }
    if (c.direction === 'out') {
      for (const k of ['edge', 'debounceMs'] as const) {
        if (c[k] !== undefined) ctx.addIssue({ code: 'custom', path: [k], message: `"${k}" applies to inputs only (direction: in)` });
      }
    } else if (c.initial !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['initial'], message: '"initial" applies to outputs only (direction: out)' });
    }
  });

export type GpioConfig = z.output<typeof gpioConfigSchema>;

export const DEFAULT_DEBOUNCE_MS = 5;
