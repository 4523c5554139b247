import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { feedSchema, hostSchema, portSchema, serialSchema, unitIdSchema } from '../lib/transports.js';
import { BUILTIN_MAPS, BUILTIN_METERS, planReads, REGISTER_TYPES, registerCount, type RegisterDef } from './maps.js';
import { maxSampleHz, pollWireMs } from './wire.js';

/** One register of a `generic` map. */
export const registerDefSchema = z
  .object({
    /** `powerW` and `frequencyHz` are the signal channels; any other name becomes a Reading field. */
    name: z.string().regex(/^[A-Za-z][A-Za-z0-9_]{0,63}$/, 'expected a field name: a letter, then letters, digits or "_"'),
    function: z.union([z.literal(3), z.literal(4)], { message: 'expected function 3 (holding registers) or 4 (input registers)' }),
    /** 0-based protocol address (a documented "register 40001" is address 0). */
    address: z.number().int().min(0).max(65535),
    type: z.enum(REGISTER_TYPES),
    wordOrder: z.enum(['big', 'little']).default('big'),
    scale: z.number().refine((n) => n !== 0 && Number.isFinite(n), 'expected a finite, non-zero multiplier').default(1),
  })
  .strict()
  .refine((r) => r.address + registerCount(r.type) <= 65536, { message: 'the value runs past address 65535', path: ['address'] });

/** Meters answer in milliseconds: the read deadline defaults lower than the miners' 3 s. Same keys as transports.ts timeouts. */
const meterTimeoutsSchema = z
  .object({
    connectMs: z.number().int().min(10).max(60_000).default(1_000),
    readMs: z.number().int().min(10).max(120_000).default(500),
  })
  .strict()
  .prefault({});

export const modbusMeterConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('modbus-meter'),
    name: z.string().max(128).optional(),
    feed: feedSchema,
    /** `tcp` (Modbus TCP: host, port) or `rtu` (Modbus RTU: serial). */
    transport: z.enum(['tcp', 'rtu']).default('tcp'),
    host: hostSchema.optional(),
    port: portSchema.default(502),
    serial: serialSchema.optional(),
    unitId: unitIdSchema,
    timeouts: meterTimeoutsSchema,
    /** Built-in register map, or `generic` with `registers`. */
    meter: z.enum([...BUILTIN_METERS, 'generic']).default('sdm630'),
    registers: z.array(registerDefSchema).min(1).max(32).optional(),
    /** Polls per second of the sampling loop (RTU: bounded by what the line carries). */
    sampleHz: z.number().min(1).max(20).default(5),
    /** The meter's answer delay assumed when checking sampleHz against the line (datasheets: 5..400 ms). */
    turnaroundMs: z.number().int().min(0).max(1000).default(10),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.transport === 'tcp') {
      if (c.host === undefined) ctx.addIssue({ code: 'custom', path: ['host'], message: 'transport tcp needs host (the meter or its gateway)' });
      if (c.serial !== undefined) ctx.addIssue({ code: 'custom', path: ['serial'], message: 'serial is for transport rtu; remove it or set transport: rtu' });
    } else {
      if (c.serial === undefined) ctx.addIssue({ code: 'custom', path: ['serial'], message: 'transport rtu needs serial: {path, baudRate, ...}' });
      if (c.host !== undefined) ctx.addIssue({ code: 'custom', path: ['host'], message: 'host is for transport tcp; remove it or set transport: tcp' });
    }
    if (c.meter === 'generic') {
      if (!c.registers) ctx.addIssue({ code: 'custom', path: ['registers'], message: 'meter generic needs registers: [{name, function, address, type}]' });
    } else if (c.registers) {
      ctx.addIssue({ code: 'custom', path: ['registers'], message: `registers are for meter generic; ${c.meter} has a built-in map` });
    }
    const regs = registersOf(c);
    const names = new Set<string>();
    regs.forEach((r, i) => {
      if (names.has(r.name)) ctx.addIssue({ code: 'custom', path: ['registers', i, 'name'], message: `duplicate register name "${r.name}"` });
      names.add(r.name);
    });
    if (c.transport === 'rtu' && c.serial && regs.length > 0) {
      const blocks = planReads(regs);
      const max = maxSampleHz(c.serial, blocks, c.turnaroundMs);
      if (c.sampleHz > max) {
        const ms = pollWireMs(c.serial, blocks, c.turnaroundMs);
        ctx.addIssue({
          code: 'custom',
          path: ['sampleHz'],
          message:
            `sampleHz ${c.sampleHz} is more than the serial line carries: one poll (${blocks.length} read(s), ${blocks.reduce((s, b) => s + b.count, 0)} registers) ` +
            `takes ~${ms.toFixed(1)} ms at ${c.serial.baudRate} baud including ${c.turnaroundMs} ms meter turnaround, so at most ${Math.floor(max * 10) / 10} Hz; ` +
            'lower sampleHz or raise serial.baudRate',
        });
      }
    }
  });

export type ModbusMeterConfig = z.output<typeof modbusMeterConfigSchema>;

/** The register map a config selects. */
export function registersOf(c: Pick<ModbusMeterConfig, 'meter' | 'registers'>): readonly RegisterDef[] {
  return c.meter === 'generic' ? (c.registers ?? []) : BUILTIN_MAPS[c.meter].registers;
}
