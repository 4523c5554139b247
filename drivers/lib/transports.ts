/**
 * Transport option schemas shared by every driver (CONVENTIONS.md #6): a
 * driver composes these instead of inventing its own option names.
 */
import { z } from 'zod';

export const hostSchema = z
  .string()
  .min(1, 'expected a host name or IP address')
  .max(253)
  .regex(/^[A-Za-z0-9.:_-]+$/, 'expected a host name or IP address (letters, digits, ".", ":", "-")');

export const portSchema = z.number().int().min(1).max(65535);

export const timeoutsSchema = z
  .object({
    connectMs: z.number().int().min(10).max(60_000).default(1_000),
    readMs: z.number().int().min(10).max(120_000).default(3_000),
  })
  .strict()
  .prefault({});

export function tcpTransportSchema(defaultPort: number) {
  return {
    host: hostSchema,
    port: portSchema.default(defaultPort),
    timeouts: timeoutsSchema,
  };
}

export type Timeouts = z.infer<typeof timeoutsSchema>;

/**
 * The part of a device block that says how to reach one of its TCP endpoints:
 * host, primary `port`, `timeouts` and the reply size cap. The HTTP and
 * cgminer clients build their endpoints from it (`httpEndpoint`,
 * `cgminerEndpoint`).
 */
export interface DeviceEndpointConfig {
  host: string;
  port: number;
  timeouts: Timeouts;
  maxResponseBytes: number;
}

/*
 * The shared device-block vocabulary. Every driver names the same thing the
 * same way; the defaults differ per family and are set where a driver
 * composes these. Keys:
 *
 *   port        the family's primary control port (tcpTransportSchema)
 *   apiPort     the cgminer-family TCP API port, where it is a secondary endpoint
 *   webPort     the HTTP port, where it is a secondary endpoint
 *   username    login name, top level (never logged)
 *   password    password, top level (never logged or put in errors)
 *   powerTarget {minW, maxW}: a configured power-target range
 *   fullPowerW  the draw that 100 % stands for in percent-based power targets
 */

/** Default port of the cgminer-family TCP API. */
export const DEFAULT_CGMINER_API_PORT = 4028;

/**
 * `apiPort`: the cgminer-family TCP API port when it is a secondary endpoint of
 * a family whose `port` is something else (e.g. Auradine telemetry, the
 * Braiins legacy fallback). Detection's API port is handed to it.
 */
export const apiPortSchema = portSchema.default(DEFAULT_CGMINER_API_PORT);

/**
 * `webPort`: the HTTP port when it is a secondary endpoint of a family whose
 * `port` is the TCP API (e.g. the Antminer CGI). Detection's web port is
 * handed to it.
 */
export function webPortSchema(defaultPort = 80) {
  return portSchema.default(defaultPort);
}

/**
 * `username`: the login name for the family's API or web login, always top
 * level. Families with a fixed set of accounts use their own enum under the
 * same key. Never logged or put in errors.
 */
export const usernameSchema = z.string().min(1).max(64);

/**
 * `password`: the login password, always top level (may be empty; families
 * that refuse an empty one add `.min(1)`). Never logged or put in errors.
 */
export const passwordSchema = z.string().max(256);

/** Watts of a power target or of a power-target range bound. */
export const wattsSchema = z.number().int().positive().max(100_000);

/**
 * `powerTarget`: `{minW, maxW}`, the power-target range a driver takes from
 * config (where the miner cannot report it, or until it does). Both bounds
 * are required; `minW` must not exceed `maxW`.
 */
export const powerTargetRangeSchema = z
  .object({
    /** Lowest watt target the driver will send. */
    minW: wattsSchema,
    /** Highest watt target the driver will send. */
    maxW: wattsSchema,
  })
  .strict()
  .refine((r) => r.minW <= r.maxW, { message: 'minW must not exceed maxW', path: ['minW'] });

/**
 * `fullPowerW`: the draw, in watts, that 100 % stands for where the firmware
 * takes power targets in percent (a watt target W is sent as W / fullPowerW).
 */
export const fullPowerWSchema = z.number().int().min(100).max(30_000);

export type PowerTargetRange = z.infer<typeof powerTargetRangeSchema>;

/**
 * `feed`: the PDU outlet(s) powering a device, so the agent can hard-cut a
 * device that ignores a soft curtail. Each entry names a PDU device id and
 * one of its outlets (as that PDU's driver names them, e.g. "3" or "A12").
 */
export const feedSchema = z
  .array(
    z
      .object({
        pdu: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'expected the id of a PDU device'),
        outlet: z.string().min(1).max(32),
      })
      .strict(),
  )
  .max(8)
  .optional();

const BAUD_RATES: readonly number[] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200];

/** A serial line (Modbus RTU meters): `serial: { path, baudRate, parity, dataBits, stopBits, lowLatency }`. */
export const serialSchema = z
  .object({
    path: z.string().min(1, 'expected a serial device path such as /dev/ttyUSB0'),
    baudRate: z
      .number()
      .int()
      .refine((b) => BAUD_RATES.includes(b), { message: `expected one of the baud rates ${BAUD_RATES.join(', ')}` })
      .default(9600),
    parity: z.enum(['none', 'even', 'odd']).default('none'),
    dataBits: z.union([z.literal(7), z.literal(8)]).default(8),
    stopBits: z.union([z.literal(1), z.literal(2)]).default(1),
    /** Sets the USB-serial adapter's latency timer to 1 ms (FTDI adds 16 ms otherwise). */
    lowLatency: z.boolean().default(false),
  })
  .strict();

/** Modbus unit (slave) id. */
export const unitIdSchema = z.number().int().min(0).max(255).default(1);

/** Default SNMP agent port. */
export const DEFAULT_SNMP_PORT = 161;

const snmpKeySchema = z.string().min(8, 'SNMPv3 keys have at least 8 characters (RFC 3414)').max(256);

/**
 * `snmp`: how an SNMP device is addressed (PDUs). Either v2c with a
 * `community` (default "public"; writes usually need the read-write one), or
 * v3 with a `user` and, optionally, `authProtocol`+`authKey` (authNoPriv)
 * and `privProtocol`+`privKey` (authPriv; needs auth). The security level
 * follows from which keys are present. Communities and keys are never logged
 * or put in errors. `retries`: extra tries per request inside its deadline
 * (the deadline of one request is `timeouts.readMs`).
 */
export const snmpSchema = z
  .discriminatedUnion('version', [
    z
      .object({
        version: z.literal('2c'),
        community: z.string().min(1).max(128).default('public'),
        retries: z.number().int().min(0).max(5).default(0),
      })
      .strict(),
    z
      .object({
        version: z.literal('3'),
        user: z.string().min(1).max(32),
        authProtocol: z.enum(['md5', 'sha', 'sha224', 'sha256', 'sha384', 'sha512']).default('sha'),
        authKey: snmpKeySchema.optional(),
        privProtocol: z.enum(['des', 'aes', 'aes256b', 'aes256r']).default('aes'),
        privKey: snmpKeySchema.optional(),
        retries: z.number().int().min(0).max(5).default(0),
      })
      .strict()
      .refine((v) => v.privKey === undefined || v.authKey !== undefined, {
        message: 'privKey needs authKey (SNMPv3 has no privacy without authentication)',
        path: ['privKey'],
      }),
  ])
  .prefault({ version: '2c' });

export type SnmpOptions = z.output<typeof snmpSchema>;
