import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { DEFAULT_SNMP_PORT, feedSchema, hostSchema, portSchema, snmpSchema, timeoutsSchema } from '../lib/transports.js';
import { PROFILE_IDS } from './profiles.js';

export const pduSnmpConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('pdu-snmp'),
    name: z.string().max(128).optional(),
    host: hostSchema,
    port: portSchema.default(DEFAULT_SNMP_PORT),
    /** `readMs` is the deadline of one SNMP request (all its tries); `connectMs` is unused (UDP). */
    timeouts: timeoutsSchema,
    snmp: snmpSchema,
    feed: feedSchema,
    /** Which vendor MIB the PDU speaks (profiles.ts). */
    profile: z.enum(PROFILE_IDS),
    /** Number of outlets, named "1".."outlets". */
    outlets: z.number().int().min(1).max(96).default(8),
    /** Phases (poles) to report as `phase<p>PowerW`; 0 for none. */
    phases: z.number().int().min(0).max(3).default(1),
    /** {u} in the profile's OIDs (Raritan PDU id, Sentry4 unit, Eaton strap, Vertiv PDU index); profile default when absent. */
    unit: z.number().int().min(0).max(255).optional(),
    /** {c} in the profile's OIDs (Sentry4 cord, Raritan inlet, Eaton input); profile default when absent. */
    cord: z.number().int().min(1).max(64).optional(),
    /** Minimum time between two consecutive switch-ons on this PDU (inrush); switch-offs are never delayed. */
    switchOnDelayMs: z.number().int().min(0).max(60_000).default(1_000),
    /** Interval of outlet-state read-backs while confirming a switch. */
    confirmPollMs: z.number().int().min(20).max(5_000).default(200),
    /** Varbinds per SNMP get PDU (bigger reads are split and sent in parallel). */
    maxOidsPerRequest: z.number().int().min(1).max(128).default(40),
  })
  .strict();

export type PduSnmpConfig = z.output<typeof pduSnmpConfigSchema>;
