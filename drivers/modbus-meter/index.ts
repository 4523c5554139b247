import type { DriverDefinition } from '../contract.js';
import { ModbusMeterDriver } from './driver.js';
import { modbusMeterConfigSchema } from './schema.js';

export const modbusMeterDriver = {
  id: 'modbus-meter',
  kind: 'meter',
  description:
    'Power meters over Modbus RTU (serial) or Modbus TCP: Eastron SDM630, Schneider PM5xxx or a register map in config; streams frequencyHz and powerW at up to 20 Hz (bounded by the serial line)',
  configSchema: modbusMeterConfigSchema,
  create: (config, ctx) => new ModbusMeterDriver(config, ctx),
} satisfies DriverDefinition<typeof modbusMeterConfigSchema>;
