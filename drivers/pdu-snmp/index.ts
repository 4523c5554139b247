import type { DriverDefinition } from '../contract.js';
import { PduSnmpDriver } from './driver.js';
import { pduSnmpConfigSchema } from './schema.js';

export const pduSnmpDriver = {
  id: 'pdu-snmp',
  kind: 'pdu',
  description:
    'Switched rack PDUs over SNMP v2c/v3 (profiles: APC rPDU2, Raritan PDU2, Server Technology Sentry4, Eaton ePDU, Vertiv V5): inlet/phase/outlet power, outlet state, outlet on/off with switch-on sequencing',
  configSchema: pduSnmpConfigSchema,
  create: (config, ctx) => new PduSnmpDriver(config, ctx),
} satisfies DriverDefinition<typeof pduSnmpConfigSchema>;
