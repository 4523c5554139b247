/**
 * Zod schemas of every message of the rackpilot v1 MQTT contract. The JSON
 * Schema files in protocol/schema/ are generated from these (npm run schema)
 * and a test fails when they are stale. Later versions extend, never break:
 * messages the agent publishes allow unknown fields (consumers must ignore
 * them); commands it receives are strict, so a mistyped key is refused
 * rather than silently ignored on a curtailment path.
 */
import { z } from 'zod';

const isoTime = z.iso.datetime({ offset: true }).describe('ISO-8601 timestamp');

export const errorSchema = z
  .object({
    code: z.string().describe('Stable machine-readable code, e.g. NOT_CONFIRMED, INVALID_COMMAND'),
    message: z.string().describe('Human-readable explanation: what failed, where, what to do'),
  });

// ---------- status (retained) ----------
export const statusMessageSchema = z
  .object({
    online: z.boolean(),
    ts: isoTime.describe('When this status was published (for the Will: when the agent connected)'),
    site: z.string(),
    rack: z.string(),
    agentVersion: z.string(),
    protocol: z.literal('v1'),
    reason: z
      .enum(['started', 'reconnected', 'shutdown', 'connection-lost'])
      .describe(
        'started: first connection since the agent process started; reconnected: a later connection; shutdown: clean stop; connection-lost: published by the broker as the MQTT Will',
      ),
  })
  .describe('rackpilot/v1/<site>/<rack>/status — retained presence');

// ---------- telemetry ----------
export const DEVICE_KINDS = ['asic', 'gpu', 'pdu', 'meter', 'gpio', 'controller'] as const;
export const DEVICE_STATES = ['running', 'curtailed', 'transitioning', 'unreachable', 'unknown'] as const;
export const FRESHNESS = ['fresh', 'stale', 'missing'] as const;

export const deviceTelemetrySchema = z
  .object({
    id: z.string(),
    kind: z.enum(DEVICE_KINDS),
    driver: z.string(),
    online: z.boolean().describe('Whether the device answered the last poll'),
    state: z.enum(DEVICE_STATES),
    freshness: z.enum(FRESHNESS).describe('fresh: read this cycle; stale: last good values; missing: never read'),
    powerW: z.number().nullable().describe('Active power in watts; null when unknown'),
    sampledAt: isoTime.describe('When the values were sampled (older than ts when stale)'),
    error: errorSchema.optional().describe('Why the last poll failed'),
    hashrateThs: z.number().nullable().optional().describe('asic: hashrate in TH/s'),
    temperatureC: z.number().nullable().optional().describe('Hottest sensor in °C'),
  })
  .catchall(z.union([z.number(), z.string(), z.boolean(), z.null()]))
  .describe('One device; kind-specific fields (hashrateThs, temperatureC, fanRpm, ...) sit beside the common ones');

export const telemetryMessageSchema = z
  .object({
    ts: isoTime,
    site: z.string(),
    rack: z.string(),
    seq: z.number().int().nonnegative().describe('Increments by one per telemetry message since agent start'),
    intervalMs: z.number().int().positive(),
    summary: z
      .object({
        devices: z.number().int().nonnegative(),
        online: z.number().int().nonnegative(),
        curtailed: z.number().int().nonnegative(),
        powerW: z.number().describe('Sum of the loads\' own powerW (asic, gpu) over those with a fresh reading'),
        powerComplete: z.boolean().describe('False when some load had no fresh power reading'),
        meteredPowerW: z
          .number()
          .nullable()
          .optional()
          .describe('Sum of the fresh readings of the rack\'s meters (kind meter); null when there is none'),
      }),
    devices: z.array(deviceTelemetrySchema),
  })
  .describe('rackpilot/v1/<site>/<rack>/telemetry — periodic, not retained');

// ---------- state (retained) ----------
export const RACK_STATES = ['unknown', 'running', 'curtailing', 'curtailed', 'restoring', 'partial'] as const;

export const stateMessageSchema = z
  .object({
    ts: isoTime,
    site: z.string(),
    rack: z.string(),
    state: z
      .enum(RACK_STATES)
      .describe(
        'unknown: since start-up, not every curtail-capable device has been read yet and no command ran; partial: the last curtail or restore did not confirm on every device (or, at start-up, only some devices are curtailed)',
      ),
    since: isoTime.describe('When the rack entered this state'),
    commandId: z.string().nullable().describe('Id of the command that caused this state, if any'),
    devices: z.array(z.object({ id: z.string(), state: z.enum(DEVICE_STATES) })),
    signals: z
      .array(z.object({ id: z.string(), raised: z.boolean(), since: isoTime }))
      .optional()
      .describe('Configured signal conditions and whether each is raised'),
  })
  .describe('rackpilot/v1/<site>/<rack>/state — retained current curtailment state');

// ---------- events ----------
export const EVENT_TYPES = [
  'curtail.started',
  'curtail.completed',
  'curtail.failed',
  'restore.started',
  'restore.completed',
  'restore.failed',
  'device.confirmed',
  'device.failed',
  'signal.raised',
  'signal.cleared',
] as const;

export const eventMessageSchema = z
  .object({
    ts: isoTime,
    site: z.string(),
    rack: z.string(),
    type: z.enum(EVENT_TYPES),
    commandId: z.string().nullable(),
    device: z.string().optional().describe('Set on device.* events; on signal.* events the source device'),
    durationMs: z.number().nonnegative().optional().describe('From command receipt to this event'),
    error: errorSchema.optional(),
    signal: z.string().optional().describe('signal.*: the signal condition id from config'),
    channel: z.string().optional().describe('signal.*: the source channel, e.g. frequencyHz, input'),
    value: z.number().nullable().optional().describe('signal.*: the deciding value (null when the source went stale without one)'),
    reason: z.enum(['threshold', 'stale', 'fresh-again']).optional().describe('signal.*: why it changed'),
    measuredAt: isoTime.optional().describe('signal.*: when the deciding sample was measured (GPIO: the edge time)'),
    latencyMs: z.number().nonnegative().optional().describe('signal.*: from measurement to this event being built'),
  })
  .describe('rackpilot/v1/<site>/<rack>/events — curtailment events, not retained');

// ---------- commands ----------
export const COMMAND_NAMES = ['ping', 'curtail', 'restore'] as const;
export type CommandName = (typeof COMMAND_NAMES)[number];

export const commandEnvelopeSchema = z
  .object({
    id: z.string().min(1).max(128).describe('Unique per command; echoed in every result'),
    command: z.string().min(1).max(64),
    params: z.record(z.string(), z.unknown()).optional(),
    expiresAt: z
      .union([isoTime, z.number().int().positive().describe('epoch milliseconds')])
      .optional()
      .describe('Absolute expiry: ISO-8601 or epoch ms. An expired command gets status "expired".'),
  })
  .strict()
  .describe('rackpilot/v1/<site>/<rack>/cmd — commands from central control; never retained');

const actionParams = z
  .object({
    timeoutMs: z
      .number()
      .int()
      .min(1000)
      .max(600_000)
      .optional()
      .describe('How long each device may take to confirm (default from config)'),
  })
  .strict();

export const commandParamsSchemas = {
  ping: z.object({}).strict(),
  curtail: actionParams,
  restore: actionParams,
} as const satisfies Record<CommandName, z.ZodType>;

export const COMMAND_STATUSES = ['accepted', 'succeeded', 'failed', 'rejected', 'expired'] as const;

export const deviceOutcomeSchema = z
  .object({
    id: z.string(),
    ok: z.boolean(),
    dispatchMs: z.number().nonnegative().optional().describe('From receipt of the command until the device driver was called'),
    ackMs: z.number().nonnegative().optional().describe('From receipt of the command until the device acknowledged the write'),
    tookMs: z.number().nonnegative().optional().describe('From receipt of the command until read-back confirmed the device'),
    error: errorSchema.optional(),
  });

export const commandResultSchema = z
  .object({
    id: z.string().nullable().describe('The command id; null when none could be read'),
    command: z.string().nullable(),
    status: z.enum(COMMAND_STATUSES),
    error: errorSchema.optional(),
    result: z
      .object({
        devices: z.array(deviceOutcomeSchema).optional().describe('curtail/restore: one outcome per device'),
        durationMs: z.number().nonnegative().optional(),
        pong: z.boolean().optional(),
        agentVersion: z.string().optional(),
      })
      .optional(),
    ts: isoTime,
  })
  .describe('rackpilot/v1/<site>/<rack>/cmd/result — one "accepted" then one final status per command');

export type StatusMessage = z.infer<typeof statusMessageSchema>;
export type TelemetryMessage = z.infer<typeof telemetryMessageSchema>;
export type DeviceTelemetry = z.infer<typeof deviceTelemetrySchema>;
export type StateMessage = z.infer<typeof stateMessageSchema>;
export type EventMessage = z.infer<typeof eventMessageSchema>;
export type CommandEnvelope = z.infer<typeof commandEnvelopeSchema>;
export type CommandResult = z.infer<typeof commandResultSchema>;
export type CommandStatus = (typeof COMMAND_STATUSES)[number];
export type RackState = (typeof RACK_STATES)[number];
export type EventType = (typeof EVENT_TYPES)[number];

/** Every message schema, by the file name of its generated JSON Schema. */
export const MESSAGE_SCHEMAS = {
  status: statusMessageSchema,
  telemetry: telemetryMessageSchema,
  state: stateMessageSchema,
  event: eventMessageSchema,
  command: commandEnvelopeSchema,
  'command-result': commandResultSchema,
} as const;
