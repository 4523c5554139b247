/**
 * The agent's YAML config, validated by zod. Every error is reported at
 * once with its path (`devices[3].host: expected string, received number`).
 * Device blocks are validated by their driver's own schema.
 */
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { DRIVERS, findDriver, type RegisteredDriver } from '../drivers/registry.js';
import { parsePublicKey } from '../protocol/signing.js';
import { topicIdSchema } from '../protocol/topics.js';
import { signalConditionSchema } from './signals.js';
import { autoDeviceSchema, type AutoDeviceConfig } from './auto.js';
import { engineConfigSchema } from './engine/config.js';
import { evidenceConfigSchema } from './engine/evidence.js';
import { healthConfigSchema } from './health/config.js';
import { spoolConfigSchema } from './spool/config.js';
import { sparkplugConfigSchema } from './sparkplug/config.js';

export const mqttConfigSchema = z
  .object({
    url: z
      .string()
      .regex(/^(mqtts?|wss?):\/\/[^\s]+$/, 'expected a broker URL such as mqtt://127.0.0.1:1883 or mqtts://broker:8883'),
    username: z.string().optional(),
    password: z.string().optional(),
    clientId: z.string().min(1).max(128).optional(),
    /** 'auto' tries MQTT 5 and falls back to 3.1.1 when the broker refuses it. */
    protocolVersion: z.union([z.literal('auto'), z.literal(4), z.literal(5)]).default('auto'),
    keepaliveS: z.number().int().min(5).max(600).default(30),
    connectTimeoutMs: z.number().int().min(500).max(60_000).default(5_000),
    publishTimeoutMs: z.number().int().min(100).max(60_000).default(5_000),
    /** Spooled telemetry and events are replayed after a reconnect at most this many per second (live messages go alongside). */
    replayPerS: z.number().int().min(1).max(10_000).default(50),
    reconnect: z
      .object({
        minMs: z.number().int().min(50).max(60_000).default(500),
        maxMs: z.number().int().min(100).max(600_000).default(30_000),
      })
      .strict()
      .prefault({}),
    tls: z
      .object({
        caFile: z.string().optional(),
        certFile: z.string().optional(),
        keyFile: z.string().optional(),
        rejectUnauthorized: z.boolean().default(true),
      })
      .strict()
      .optional(),
  })
  .strict();

export const pollConfigSchema = z
  .object({
    intervalMs: z.number().int().min(100).max(3_600_000).default(5_000),
    /** Deadline of one device's read. */
    deadlineMs: z.number().int().min(50).max(120_000).default(3_000),
    /** At most this many devices are read at once. */
    concurrency: z.number().int().min(1).max(1024).default(32),
  })
  .strict()
  .prefault({});

export const actionsConfigSchema = z
  .object({
    /** How long a device may take to confirm a curtail or restore (commands may override). */
    deadlineMs: z.number().int().min(1000).max(600_000).default(30_000),
  })
  .strict()
  .prefault({});

export const logConfigSchema = z
  .object({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict()
  .prefault({});

export const commandKeySchema = z
  .object({
    /** The `sig.keyId` central control signs with. */
    id: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'expected 1-64 characters of A-Z a-z 0-9 _ . -'),
    /** PEM (-----BEGIN PUBLIC KEY-----) or the base64 of the 32 raw bytes (`rackpilot sign --keygen` prints both). */
    publicKey: z.string().superRefine((text, ctx) => {
      try {
        parsePublicKey(text);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
      }
    }),
  })
  .strict();

/**
 * Signed commands (protocol/signing.ts). With `commandKeys`, only commands
 * signed by one of them act on the rack (more than one: key rotation);
 * without, commands are accepted unsigned as before.
 */
export const securityConfigSchema = z
  .object({
    commandKeys: z.array(commandKeySchema).max(32).default([]),
    /** Refuse unsigned commands. Default: true when commandKeys is not empty; false lets unsigned ones through during a migration (signed ones are still verified). */
    requireSigned: z.boolean().optional(),
    /** How far a command's issuedAt may lie ahead of the agent's clock. */
    maxClockSkewMs: z.number().int().min(0).max(600_000).default(30_000),
    /** How old a command's issuedAt may be; its nonce is remembered this long. */
    replayWindowMs: z.number().int().min(1_000).max(3_600_000).default(300_000),
  })
  .strict()
  .superRefine((s, ctx) => {
    const seen = new Map<string, number>();
    s.commandKeys.forEach((k, i) => {
      const prev = seen.get(k.id);
      if (prev !== undefined) ctx.addIssue({ code: 'custom', path: ['commandKeys', i, 'id'], message: `duplicate key id "${k.id}" (also commandKeys[${prev}].id)` });
      seen.set(k.id, i);
    });
    if (s.requireSigned === true && s.commandKeys.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['requireSigned'], message: 'true needs at least one key in security.commandKeys (rackpilot sign --keygen makes one)' });
    }
  })
  .transform((s) => ({ ...s, requireSigned: s.requireSigned ?? s.commandKeys.length > 0 }))
  .prefault({});

const rootSchema = z
  .object({
    site: topicIdSchema,
    rack: topicIdSchema,
    mqtt: mqttConfigSchema,
    poll: pollConfigSchema,
    actions: actionsConfigSchema,
    log: logConfigSchema,
    devices: z.array(z.unknown()).max(4096).default([]),
    signals: z.array(signalConditionSchema).max(256).default([]),
    /** Where the agent keeps its fail-safe curtailment state (and, by default, the evidence log). */
    stateDir: z.string().min(1).default('/var/lib/rackpilot'),
    engine: engineConfigSchema,
    evidence: evidenceConfigSchema,
    /** The store-and-forward buffer for telemetry and events while the broker is unreachable. */
    spool: spoolConfigSchema,
    security: securityConfigSchema,
    /** Sparkplug B 3.0 edge node for SCADA hosts, off by default (agent/sparkplug/README.md). */
    sparkplug: sparkplugConfigSchema,
    /** Local HTTP endpoint: /healthz and Prometheus /metrics, on 127.0.0.1:9108 by default (agent/health/README.md). */
    health: healthConfigSchema,
  })
  .strict();

/** A registered driver's block, or `driver: auto` (the family is detected at start-up: agent/auto.ts). */
export type DeviceConfig = z.output<RegisteredDriver['configSchema']> | AutoDeviceConfig;
export type AgentConfig = Omit<z.output<typeof rootSchema>, 'devices'> & { devices: DeviceConfig[] };
export type MqttConfig = z.output<typeof mqttConfigSchema>;
export type SecurityConfig = z.output<typeof securityConfigSchema>;

export type ConfigResult = { ok: true; config: AgentConfig } | { ok: false; errors: string[] };

/** `devices[3].host` style path. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || '(root)';
}

function issueLines(issues: readonly z.core.$ZodIssue[], prefix: readonly PropertyKey[] = []): string[] {
  return issues.map((i) => {
    const msg = i.message.replace(/^Invalid input: /, '');
    return `${formatPath([...prefix, ...i.path])}: ${msg}`;
  });
}

/** Validates an already-parsed config object. */
export function validateConfig(raw: unknown): ConfigResult {
  const errors: string[] = [];
  const root = rootSchema.safeParse(raw);
  if (!root.success) errors.push(...issueLines(root.error.issues));
  const rawDevices =
    raw && typeof raw === 'object' && Array.isArray((raw as { devices?: unknown }).devices)
      ? ((raw as { devices: unknown[] }).devices)
      : [];
  const devices: DeviceConfig[] = [];
  const rawDeviceIds = new Set(rawDevices.flatMap((d) => (d && typeof d === 'object' && typeof (d as { id?: unknown }).id === 'string' ? [(d as { id: string }).id] : [])));
  const seen = new Map<string, number>();
  rawDevices.forEach((d, i) => {
    const driverId = d && typeof d === 'object' ? (d as { driver?: unknown }).driver : undefined;
    if (typeof driverId !== 'string') {
      errors.push(`devices[${i}].driver: expected one of ${DRIVERS.map((x) => `"${x.id}"`).join(', ')}, "auto"`);
      return;
    }
    const def = driverId === 'auto' ? { configSchema: autoDeviceSchema } : findDriver(driverId);
    if (!def) {
      errors.push(`devices[${i}].driver: unknown driver "${driverId}" (known: ${DRIVERS.map((x) => x.id).join(', ')}, auto)`);
      return;
    }
    const parsed = (def.configSchema as z.ZodType<DeviceConfig>).safeParse(d);
    if (!parsed.success) {
      errors.push(...issueLines(parsed.error.issues, ['devices', i]));
      return;
    }
    const prev = seen.get(parsed.data.id);
    if (prev !== undefined) {
      errors.push(`devices[${i}].id: duplicate id "${parsed.data.id}" (also devices[${prev}].id)`);
      return;
    }
    seen.set(parsed.data.id, i);
    devices.push(parsed.data);
  });
  // cross-checks run on the raw blocks too, so they are reported with every other error at once
  const rawSignals = raw && typeof raw === 'object' ? (raw as { signals?: unknown }).signals : undefined;
  if (Array.isArray(rawSignals)) {
    const signalIds = new Set<string>();
    rawSignals.forEach((sig: unknown, i) => {
      if (!sig || typeof sig !== 'object') return;
      const { id, source } = sig as { id?: unknown; source?: unknown };
      if (typeof id === 'string') {
        if (signalIds.has(id)) errors.push(`signals[${i}].id: duplicate id "${id}"`);
        signalIds.add(id);
      }
      if (typeof source === 'string' && !rawDeviceIds.has(source)) {
        errors.push(`signals[${i}].source: no device "${source}" in this config`);
      }
    });
  }
  errors.push(...feedErrors(rawDevices));
  errors.push(...engineErrors(raw, rawDevices));
  if (errors.length > 0 || !root.success) return { ok: false, errors };
  return { ok: true, config: { ...root.data, devices } };
}

/**
 * Each `devices[i].feed[j].pdu` must be the id of a device whose driver is of
 * kind 'pdu' in the same config (checked on the raw blocks, so it is reported
 * with every other error at once; malformed feed entries are the schema's to report).
 */
function feedErrors(rawDevices: readonly unknown[]): string[] {
  const block = (d: unknown): { id?: unknown; driver?: unknown; feed?: unknown } => (d && typeof d === 'object' ? d : {});
  const pdus = new Set<string>();
  for (const d of rawDevices) {
    const { id, driver } = block(d);
    if (typeof id === 'string' && typeof driver === 'string' && findDriver(driver)?.kind === 'pdu') pdus.add(id);
  }
  const out: string[] = [];
  rawDevices.forEach((d, i) => {
    const { feed } = block(d);
    if (!Array.isArray(feed)) return;
    feed.forEach((f: unknown, j) => {
      const pdu = f && typeof f === 'object' ? (f as { pdu?: unknown }).pdu : undefined;
      if (typeof pdu === 'string' && !pdus.has(pdu)) out.push(`devices[${i}].feed[${j}].pdu: "${pdu}" is not a PDU in this config`);
    });
  });
  return out;
}

/**
 * `engine.protected`, `engine.hardCut` and `engine.priority` name devices of
 * this config; a hard cut needs a `feed` and is refused for GPUs (capped, never cut).
 */
function engineErrors(raw: unknown, rawDevices: readonly unknown[]): string[] {
  const engine = raw && typeof raw === 'object' ? (raw as { engine?: unknown }).engine : undefined;
  if (!engine || typeof engine !== 'object') return [];
  const byId = new Map<string, { driver?: unknown; feed?: unknown }>();
  for (const d of rawDevices) {
    if (d && typeof d === 'object' && typeof (d as { id?: unknown }).id === 'string') byId.set((d as { id: string }).id, d);
  }
  const out: string[] = [];
  const e = engine as { protected?: unknown; hardCut?: unknown; priority?: unknown };
  const check = (key: string, ids: unknown): void => {
    if (!Array.isArray(ids)) return;
    ids.forEach((id: unknown, i) => {
      if (typeof id !== 'string') return;
      const d = byId.get(id);
      if (!d) {
        out.push(`engine.${key}[${i}]: no device "${id}" in this config`);
        return;
      }
      if (key !== 'hardCut') return;
      if (typeof d.driver === 'string' && findDriver(d.driver)?.kind === 'gpu') out.push(`engine.hardCut[${i}]: "${id}" is a GPU node: GPUs are capped, never cut`);
      else if (!Array.isArray(d.feed) || d.feed.length === 0) out.push(`engine.hardCut[${i}]: "${id}" has no "feed" (the PDU outlet to cut)`);
    });
  };
  check('protected', e.protected);
  check('hardCut', e.hardCut);
  if (e.priority && typeof e.priority === 'object') check('priority', Object.keys(e.priority));
  return out;
}

/** Parses YAML text; YAML syntax errors carry line and column. */
export function parseConfigText(text: string, file = 'config'): ConfigResult {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) {
    return {
      ok: false,
      errors: doc.errors.map((e) => {
        const pos = e.linePos?.[0];
        return `${file}${pos ? `:${pos.line}:${pos.col}` : ''}: YAML error: ${(e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, '')}`;
      }),
    };
  }
  const env: string[] = [];
  const raw = substituteEnv(doc.toJS(), [], process.env, env);
  if (env.length > 0) return { ok: false, errors: env };
  return validateConfig(raw);
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/**
 * Replaces `${NAME}` in string values with the environment variable NAME, so
 * secrets can stay out of the file (e.g. `password: ${MINER_PASSWORD}` with
 * the variable set by systemd's EnvironmentFile). An unset variable is an
 * error naming the path; `$${...}` is not special-cased (no escaping needed so far).
 */
export function substituteEnv(value: unknown, path: PropertyKey[], envVars: NodeJS.ProcessEnv, errors: string[]): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REF, (_, name: string) => {
      const v = envVars[name];
      if (v === undefined) {
        errors.push(`${formatPath(path)}: environment variable ${name} is not set`);
        return '';
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substituteEnv(v, [...path, i], envVars, errors));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substituteEnv(v, [...path, k], envVars, errors)]));
  }
  return value;
}

export function loadConfigFile(file: string): ConfigResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return { ok: false, errors: [`${file}: cannot read config file (${code})`] };
  }
  return parseConfigText(text, file);
}
