import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { feedSchema, tcpTransportSchema, unitIdSchema } from '../lib/transports.js';

const address = z.number().int().min(0).max(65535);

/** A numeric value in registers: `{table, address, type, scale, wordOrder}`; the value in W is raw * scale. */
export const registerValueSchema = z
  .object({
    table: z.enum(['holding', 'input']).default('holding'),
    address,
    type: z.enum(['uint16', 'int16', 'uint32', 'int32', 'float32']).default('uint16'),
    /** Multiplier to watts (e.g. 1000 for a value in kW, 0.1 for tenths of W). */
    scale: z.number().positive().default(1),
    /** 32-bit values: "big" = high word first (Raritan, ServerTech), "little" = low word first. */
    wordOrder: z.enum(['big', 'little']).default('big'),
  })
  .strict();

/** Where an outlet's state is read: a coil, a discrete input, or a register with its on/off values. */
const statePointSchema = z.union([
  z.object({ coil: address }).strict(),
  z.object({ discreteInput: address }).strict(),
  z
    .object({
      register: address,
      table: z.enum(['holding', 'input']).default('holding'),
      on: z.number().int().min(0).max(65535).default(1),
      off: z.number().int().min(0).max(65535).default(0),
    })
    .strict(),
]);

/** How an outlet is switched: a coil (written true/false), or a holding register written with `on`/`off`. */
const commandPointSchema = z.union([
  z.object({ coil: address }).strict(),
  z
    .object({
      register: address,
      on: z.number().int().min(0).max(65535).default(1),
      off: z.number().int().min(0).max(65535).default(0),
    })
    .strict(),
]);

export const pduModbusConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('pdu-modbus'),
    name: z.string().max(128).optional(),
    ...tcpTransportSchema(502),
    unitId: unitIdSchema,
    feed: feedSchema,
    /** Inlet / total active power: `Reading.powerW`. */
    totalPower: registerValueSchema.optional(),
    /** Per-phase active power, `phase<n>PowerW` in order. */
    phasePower: z.array(registerValueSchema).max(3).default([]),
    /** Outlets "1".."n" in order: where each one's state is read, how it is switched, its power. */
    outlets: z
      .array(
        z
          .object({
            state: statePointSchema,
            /** Defaults to the state point when that is a coil or a holding register. */
            command: commandPointSchema.optional(),
            power: registerValueSchema.optional(),
          })
          .strict(),
      )
      .min(1)
      .max(96),
    /** Minimum time between two consecutive switch-ons on this PDU (inrush); switch-offs are never delayed. */
    switchOnDelayMs: z.number().int().min(0).max(60_000).default(1_000),
    /** Addresses at most this far apart are read in one request (0: only adjacent ones; holes may answer exception 2). */
    maxReadGap: z.number().int().min(0).max(100).default(0),
    /** Interval of outlet-state read-backs while confirming a switch. */
    confirmPollMs: z.number().int().min(20).max(5_000).default(200),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    cfg.outlets.forEach((o, i) => {
      const writable = 'coil' in o.state || ('register' in o.state && o.state.table === 'holding');
      if (!o.command && !writable) {
        ctx.addIssue({ code: 'custom', path: ['outlets', i, 'command'], message: 'needed when the state is a discrete input or an input register (those cannot be written)' });
      }
    });
  });

export type PduModbusConfig = z.output<typeof pduModbusConfigSchema>;
export type RegisterValue = z.output<typeof registerValueSchema>;
