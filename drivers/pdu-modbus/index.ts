import type { DriverDefinition } from '../contract.js';
import { PduModbusDriver } from './driver.js';
import { pduModbusConfigSchema } from './schema.js';

export const pduModbusDriver = {
  id: 'pdu-modbus',
  kind: 'pdu',
  description: 'PDUs over Modbus TCP through a register/coil map in config: total/phase/outlet power, outlet state, outlet on/off with switch-on sequencing',
  configSchema: pduModbusConfigSchema,
  create: (config, ctx) => new PduModbusDriver(config, ctx),
} satisfies DriverDefinition<typeof pduModbusConfigSchema>;
