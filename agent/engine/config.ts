/**
 * The `engine:` config block: who may be shed and how, how load comes back,
 * where the fail-safe state lives, and what losing central control means.
 */
import { z } from 'zod';
import { idSchema } from '../../drivers/lib/ids.js';

const ms = (max: number) => z.number().int().min(0).max(max);

export const engineConfigSchema = z
  .object({
    /** Device ids the engine never touches (e.g. the rack's network switch on a PDU outlet, a protected AI job). */
    protected: z.array(idSchema).max(4096).default([]),
    /**
     * Priority classes in shed order. The hybrid default sheds mining (asic) first and caps GPUs
     * only when that is not enough; ['gpu', 'asic'] caps GPUs first (a site that favours mining).
     */
    classOrder: z
      .array(z.enum(['asic', 'gpu']))
      .length(2)
      .refine((a) => new Set(a).size === 2, { message: 'list "asic" and "gpu" once each, in shed order' })
      .default(['asic', 'gpu']),
    /** Per-device shed priority within its class: lower sheds earlier (default 0). */
    priority: z.record(idSchema, z.number().int().min(-1000).max(1000)).default({}),
    /** Devices whose PDU outlet (their `feed`) may be cut when they do not confirm a curtail (never GPUs). */
    hardCut: z.array(idSchema).max(4096).default([]),
    /** Extra curtail attempts for a device that did not confirm, before its alternative action. */
    retries: z.number().int().min(0).max(5).default(1),
    /** Confirm a curtail by the device's PDU outlet power too, where its feed outlet measures power. */
    confirmByPower: z.boolean().default(true),
    /** A curtailed device's outlet must read at most this fraction of its draw before the curtail (or 100 W, whichever is higher). */
    powerConfirmFraction: z.number().min(0.01).max(1).default(0.2),
    /** Hold-off before load comes back after a command's or a budget's demand clears (signals set their own). */
    commandHoldOffMs: ms(86_400_000).default(0),
    restore: z
      .object({
        /** Devices restored per step of the ramp. */
        stepDevices: z.number().int().min(1).max(4096).default(8),
        /** Time between ramp steps. */
        stepIntervalMs: ms(600_000).default(2_000),
        /** Instead of a device count: at most this many kW of expected load per second. */
        kwPerS: z.number().positive().max(10_000).optional(),
      })
      .strict()
      .prefault({}),
    /** What losing the MQTT connection to central control means for the rack. */
    centralLost: z
      .object({
        /** none: nothing; shed: shed everything sheddable; budget: hold rack power at most `maxW`. */
        demand: z.enum(['none', 'shed', 'budget']).default('none'),
        /** How long the connection must be down first. */
        afterMs: z.number().int().min(1_000).max(86_400_000).default(300_000),
        maxW: z.number().int().positive().max(10_000_000).optional(),
        holdOffMs: ms(86_400_000).default(60_000),
      })
      .strict()
      .prefault({})
      .refine((c) => c.demand !== 'budget' || c.maxW !== undefined, { message: 'demand "budget" needs maxW', path: ['maxW'] }),
  })
  .strict()
  .prefault({});

export type EngineConfig = z.output<typeof engineConfigSchema>;

/** What a raised signal asks of the engine (the `demand` keys of a signal condition). */
export const signalDemandSchema = {
  /** shed: everything sheddable; budget: rack power at most `maxW`; none: report only. */
  demand: z.enum(['shed', 'budget', 'none']).default('shed'),
  maxW: z.number().int().positive().max(10_000_000).optional(),
  /** After the signal clears, load comes back only this much later (FFR: 15 min = 900000). */
  holdOffMs: ms(86_400_000).default(60_000),
};
