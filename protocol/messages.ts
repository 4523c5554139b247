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
      .enum(['started', 'reconnected', 'reloaded', 'shutdown', 'reloading', 'connection-lost'])
      .describe(
        'started: first connection since the agent process started; reconnected: a later connection; reloaded: first connection after a config reload (same process); shutdown: clean stop; reloading: stopping to apply a reloaded config (reloaded follows within seconds; devices are left as they are); connection-lost: published by the broker as the MQTT Will',
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
    historical: z.boolean().optional().describe('true: sent late from the store-and-forward spool after a broker outage (ts is when it was built)'),
    spoolSeq: z.number().int().positive().optional().describe('historical: the spool\'s sequence number (increasing across restarts; deduplicate on it)'),
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
export const DEMAND_SOURCES = ['signal', 'command', 'schedule', 'central-lost', 'fail-safe'] as const;

export const demandSchema = z
  .object({
    key: z.string().describe('signal:<id>, command:<commandId>, budget:<id>, central-lost, fail-safe'),
    source: z.enum(DEMAND_SOURCES),
    kind: z.enum(['shed', 'budget']).describe('shed: everything sheddable (or `devices`); budget: rack power at most maxW'),
    maxW: z.number().optional(),
    devices: z.array(z.string()).optional().describe('shed: only these devices'),
    since: isoTime,
    startsAt: isoTime.optional().describe('A scheduled window: active from here'),
    until: isoTime.optional().describe('Ends by itself at this time'),
    holdOffMs: z.number().int().nonnegative().describe('After it clears, load comes back only this much later'),
    commandId: z.string().nullable().optional(),
  })
  .describe('One reason to hold load down');

export const RACK_STATES = ['unknown', 'running', 'curtailing', 'curtailed', 'holdoff', 'restoring', 'partial'] as const;

export const stateMessageSchema = z
  .object({
    ts: isoTime,
    site: z.string(),
    rack: z.string(),
    state: z
      .enum(RACK_STATES)
      .describe(
        'unknown: since start-up, not every curtail-capable device has been read yet and nothing acted; holdoff: every demand cleared, load comes back at holdOffUntil; partial: some device was not shed or not restored, or a budget cannot be met (or, at start-up, only some devices are curtailed)',
      ),
    since: isoTime.describe('When the rack entered this state'),
    commandId: z.string().nullable().describe('Id of the command that caused this state, if any'),
    devices: z.array(z.object({ id: z.string(), state: z.enum(DEVICE_STATES) })),
    signals: z
      .array(z.object({ id: z.string(), raised: z.boolean(), since: isoTime }))
      .optional()
      .describe('Configured signal conditions and whether each is raised'),
    demands: z.array(demandSchema).optional().describe('Demands holding load down (the most restrictive wins), and scheduled windows not started yet (startsAt in the future)'),
    holdOffUntil: isoTime.nullable().optional().describe('holdoff: when the restore ramp starts'),
    shed: z.array(z.string()).optional().describe('Devices the engine holds down'),
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
  'demand.added',
  'demand.cleared',
  'device.escalated',
  'device.alarm',
  'budget.unreachable',
  'restore.scheduled',
  'restore.step',
  'restore.stopped',
] as const;

export const eventMessageSchema = z
  .object({
    ts: isoTime,
    site: z.string(),
    rack: z.string(),
    type: z.enum(EVENT_TYPES),
    commandId: z.string().nullable(),
    historical: z.boolean().optional().describe('true: sent late from the store-and-forward spool after a broker outage (ts is when it was built)'),
    spoolSeq: z.number().int().positive().optional().describe('historical: the spool\'s sequence number (increasing across restarts; deduplicate on it)'),
    device: z.string().optional().describe('Set on device.* events; on signal.* events the source device'),
    durationMs: z.number().nonnegative().optional().describe('From command receipt to this event'),
    error: errorSchema.optional(),
    signal: z.string().optional().describe('signal.*: the signal condition id from config'),
    channel: z.string().optional().describe('signal.*: the source channel, e.g. frequencyHz, input'),
    value: z.number().nullable().optional().describe('signal.*: the deciding value (null when the source went stale without one)'),
    reason: z.enum(['threshold', 'stale', 'fresh-again']).optional().describe('signal.*: why it changed'),
    measuredAt: isoTime.optional().describe('signal.*: when the deciding sample was measured (GPIO: the edge time)'),
    latencyMs: z.number().nonnegative().optional().describe('signal.*: from measurement to this event being built'),
    demand: demandSchema.optional().describe('demand.*, curtail.started: the demand'),
    step: z.string().optional().describe('device.*: the step (curtail, retry, alternative, cut, alarm, restore); restore.step: "i/n"'),
    activation: z.string().optional().describe('curtail.*: the activation id in the evidence log'),
    holdOffUntil: isoTime.optional().describe('restore.scheduled: when the restore ramp starts'),
    timings: z
      .object({
        signalAt: isoTime.describe('When the signal was measured (GPIO: the edge) or the command received'),
        decisionMs: z.number().describe('Signal to the first action issued'),
        lastDispatchMs: z.number().describe('Signal to the last action issued'),
        lastAckMs: z.number().nullable().describe('Signal to the last device acknowledgement'),
        lastConfirmMs: z.number().nullable().describe('Signal to the last confirmation'),
        devices: z.number().int(),
        failed: z.number().int(),
        powerBeforeW: z.number().nullable(),
        powerAfterW: z.number().nullable(),
      })
      .optional()
      .describe('curtail.completed/failed: the activation\'s timings (ms, sub-millisecond resolution)'),
  })
  .describe('rackpilot/v1/<site>/<rack>/events — curtailment events, not retained');

// ---------- commands ----------
export const COMMAND_NAMES = ['ping', 'curtail', 'restore', 'set-budget', 'clear-budget'] as const;
export type CommandName = (typeof COMMAND_NAMES)[number];

export const commandEnvelopeSchema = z
  .object({
    id: z.string().min(1).max(128).describe('Unique per command; echoed in every result. A recently seen id is not executed again: its earlier result is re-sent'),
    command: z.string().min(1).max(64),
    params: z.record(z.string(), z.unknown()).optional(),
    expiresAt: z
      .union([isoTime, z.number().int().positive().describe('epoch milliseconds')])
      .optional()
      .describe('Absolute expiry: ISO-8601 or epoch ms. An expired command gets status "expired". Required when signed.'),
    issuedAt: z
      .union([isoTime, z.number().int().positive().describe('epoch milliseconds')])
      .optional()
      .describe('When central control issued (signed) it: ISO-8601 or epoch ms. Required when signed; checked against the agent\'s clock (security.maxClockSkewMs, security.replayWindowMs)'),
    nonce: z
      .string()
      .regex(/^[A-Za-z0-9_-]{16,128}$/, 'expected 16-128 characters of A-Z a-z 0-9 _ - (e.g. 18 random bytes in base64url)')
      .optional()
      .describe('Single-use random value. Required when signed; a nonce seen again within the replay window is refused (REPLAYED)'),
    target: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}\/[A-Za-z0-9_-]{1,64}$/, 'expected "<site>/<rack>"')
      .optional()
      .describe('"<site>/<rack>" the command is meant for; another rack refuses it (WRONG_TARGET). Required when signed, so a signed command cannot be replayed to another rack'),
    sig: z
      .object({
        keyId: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected 1-64 characters of A-Z a-z 0-9 _ . -').describe('Id of the signing key in the agent\'s security.commandKeys'),
        alg: z.literal('ed25519'),
        value: z
          .string()
          .regex(/^[A-Za-z0-9+/_-]{86}(==)?$/, 'expected the base64 of a 64-byte Ed25519 signature')
          .describe('Base64 of the Ed25519 signature of the canonical form (protocol/signing.ts): the command without sig, keys sorted, no whitespace, UTF-8'),
      })
      .strict()
      .optional()
      .describe('Signature by central control (protocol/signing.ts)'),
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

const deviceIds = z.array(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'expected a device id')).min(1).max(4096);
const windowParams = {
  durationMs: z.number().int().min(1000).max(7 * 86_400_000).optional().describe('The demand ends by itself after this long (from startsAt, or from receipt)'),
  startsAt: z.union([isoTime, z.number().int().positive()]).optional().describe('A scheduled window: the demand starts at this time (ISO-8601 or epoch ms)'),
};

export const commandParamsSchemas = {
  ping: z.object({}).strict(),
  curtail: actionParams
    .extend({
      maxW: z.number().int().positive().max(10_000_000).optional().describe('Instead of shedding everything: hold rack power at most this many watts'),
      devices: deviceIds.optional().describe('Shed only these devices'),
      ...windowParams,
    })
    .strict()
    .refine((p) => p.maxW === undefined || p.devices === undefined, { message: 'give maxW or devices, not both', path: ['devices'] }),
  restore: actionParams,
  'set-budget': actionParams
    .extend({
      maxW: z.number().int().positive().max(10_000_000).describe('Rack power ceiling, watts'),
      budgetId: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/).default('central').describe('Names the budget (clear-budget removes it by this name)'),
      ...windowParams,
    })
    .strict(),
  'clear-budget': z.object({ budgetId: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/).optional().describe('Default: every budget') }).strict(),
} as const satisfies Record<CommandName, z.ZodType>;

export const COMMAND_STATUSES = ['accepted', 'succeeded', 'failed', 'rejected', 'expired'] as const;

export const deviceOutcomeSchema = z
  .object({
    id: z.string(),
    ok: z.boolean(),
    dispatchMs: z.number().nonnegative().optional().describe('From receipt of the command until the device driver was called'),
    ackMs: z.number().nonnegative().optional().describe('From receipt of the command until the device acknowledged the write'),
    tookMs: z.number().nonnegative().optional().describe('From receipt of the command until read-back confirmed the device'),
    via: z.enum(['curtail', 'alternative', 'cut']).optional().describe('curtail: how the device was shed (its own curtail, its alternative action, or its PDU outlet cut)'),
    steps: z
      .array(z.object({ step: z.string(), ok: z.boolean(), atMs: z.number().describe('From receipt of the command'), error: errorSchema.optional() }))
      .optional()
      .describe('Every step taken, in order: curtail, retry, alternative, cut, alarm (curtail); restore'),
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
        activation: z.string().nullable().optional().describe('curtail/set-budget: the evidence-log activation this command caused (null: nothing new to shed)'),
        scheduled: isoTime.optional().describe('curtail/set-budget with startsAt in the future: when the window starts'),
        cleared: z.number().int().optional().describe('clear-budget: how many budgets were removed'),
        holding: z.array(z.string()).optional().describe('Demands still holding load down'),
      })
      .optional(),
    ts: isoTime,
    historical: z.boolean().optional().describe('true: sent late from the store-and-forward spool after a broker outage'),
    spoolSeq: z.number().int().positive().optional().describe('historical: the spool\'s sequence number (deduplicate on it)'),
  })
  .describe('rackpilot/v1/<site>/<rack>/cmd/result — one "accepted" then one final status per command');

export type StatusMessage = z.infer<typeof statusMessageSchema>;
export type TelemetryMessage = z.infer<typeof telemetryMessageSchema>;
export type DeviceTelemetry = z.infer<typeof deviceTelemetrySchema>;
export type StateMessage = z.infer<typeof stateMessageSchema>;
export type EventMessage = z.infer<typeof eventMessageSchema>;
export type CommandEnvelope = z.infer<typeof commandEnvelopeSchema>;
export type CommandResult = z.infer<typeof commandResultSchema>;
export type DeviceOutcome = z.infer<typeof deviceOutcomeSchema>;
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
