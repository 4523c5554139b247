/**
 * `rackpilot probe HOST`: detect the family (drivers/detect.ts), create that
 * driver with a default config for the host, read telemetry once. Also the
 * building block of `scan` and of `driver: auto` (driverConfigFor).
 */
import { pino, type Logger } from 'pino';
import type { z } from 'zod';
import type { DeviceDriver, DriverDefinition, Reading } from '../drivers/contract.js';
import { DEFAULT_API_PORT, DEFAULT_HTTP_PORT, describeProbes, detect, type Detection, type DetectOptions } from '../drivers/detect.js';
import { toRackpilotError } from '../drivers/lib/errors.js';
import { findDriver } from '../drivers/registry.js';
import type { DeviceTelemetry } from '../protocol/messages.js';
import { deviceTelemetry } from './messages.js';

export interface Credentials {
  user?: string | undefined;
  password?: string | undefined;
}


function shapeOf(schema: z.ZodType): Record<string, z.ZodType> | undefined {
  const s = schema as unknown as { shape?: Record<string, z.ZodType> };
  return s.shape && typeof s.shape === 'object' ? s.shape : undefined;
}

export interface ConfigFor {
  id: string;
  host: string;
  apiPort?: number | undefined;
  httpPort?: number | undefined;
  portMap?: Readonly<Record<number, number>> | undefined;
  credentials?: Credentials | undefined;
  /** Extra keys for this family (timeouts, sleepPowerMaxW, ...). */
  extra?: Record<string, unknown> | undefined;
}

/**
 * A device block for `def` at `host` with the driver's defaults, in the shared
 * vocabulary of drivers/lib/transports.ts. The driver's own `port` default
 * tells which port it talks to: the API port (4028) and the web port (80)
 * follow --api-port/--http-port, a family port (4433, 50051, 8080...) follows
 * portMap. A secondary `apiPort` follows the API port and a secondary
 * `webPort` the web port. Credentials go to `username`/`password` when the
 * schema has them; a username the family does not accept (whatsminer-v3 takes
 * only its account names) leaves the family default. Returns every schema
 * error at once, never echoing values.
 */
export function driverConfigFor(def: DriverDefinition, c: ConfigFor): { ok: true; config: z.output<DriverDefinition['configSchema']> } | { ok: false; errors: string[] } {
  const shape = shapeOf(def.configSchema);
  const block: Record<string, unknown> = { id: c.id, driver: def.id, host: c.host };
  if (shape?.port) {
    const d = shape.port.safeParse(undefined);
    const defPort = d.success && typeof d.data === 'number' ? d.data : undefined;
    if (defPort !== undefined) {
      const port = defPort === DEFAULT_API_PORT ? (c.apiPort ?? defPort) : defPort === DEFAULT_HTTP_PORT ? (c.httpPort ?? defPort) : (c.portMap?.[defPort] ?? defPort);
      if (port !== defPort) block.port = port;
    }
  }
  if (shape?.apiPort && c.apiPort !== undefined) block.apiPort = c.apiPort;
  if (shape?.webPort && c.httpPort !== undefined) block.webPort = c.httpPort;
  const user = c.credentials?.user;
  if (user !== undefined && shape?.username?.safeParse(user).success) block.username = user;
  if (c.credentials?.password !== undefined && shape?.password) block.password = c.credentials.password;
  Object.assign(block, c.extra);
  const parsed = def.configSchema.safeParse(block);
  if (parsed.success) return { ok: true, config: parsed.data };
  // never echo values: they may be credentials
  return { ok: false, errors: parsed.error.issues.map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`) };
}

export interface ProbeOptions extends DetectOptions {
  credentials?: Credentials;
  /** Deadline of the one telemetry read (default 5000 ms). */
  readDeadlineMs?: number;
  /** Timeouts of the created driver (default: connect 1000 ms, read 3000 ms). */
  timeouts?: { connectMs: number; readMs: number };
  logger?: Logger;
  /**
   * One-off use (probe, scan): turn off driver behaviours meant for a long-lived agent, such as
   * LuxOS holding its single session warm (keys from QUIET_KEYS that the driver's schema knows).
   */
  quiet?: boolean;
}

/** Config keys set for one-off use when the driver's schema has them. */
const QUIET_KEYS: Record<string, unknown> = { keepSessionWarm: false };

export interface ProbeResult {
  detection: Detection;
  /** Telemetry in the protocol's device fields, when the driver could be created. */
  telemetry: DeviceTelemetry | null;
  /** Why no telemetry (config for the driver invalid, e.g. a password is required). */
  problem: string | null;
}

/** Creates the detected family's driver for the host (default config), or says why not. */
export function createDetected(detection: Detection, id: string, opts: Pick<ProbeOptions, 'portMap' | 'credentials' | 'timeouts' | 'quiet'>, logger: Logger): { driver: DeviceDriver } | { problem: string } {
  const def = detection.driver ? findDriver(detection.driver) : undefined;
  if (!def) return { problem: 'no driver identified' };
  const shape = shapeOf(def.configSchema);
  const extra: Record<string, unknown> = {};
  if (opts.quiet !== false) for (const [k, v] of Object.entries(QUIET_KEYS)) if (shape && k in shape) extra[k] = v;
  if (opts.timeouts) extra.timeouts = opts.timeouts;
  const res = driverConfigFor(def, {
    id,
    host: detection.host,
    apiPort: detection.apiPort,
    httpPort: detection.httpPort,
    portMap: opts.portMap,
    credentials: opts.credentials,
    extra,
  });
  if (!res.ok) return { problem: `cannot configure the ${def.id} driver: ${res.errors.join('; ')}` };
  return { driver: def.create(res.config, { logger: logger.child({ device: id, driver: def.id }), now: Date.now }) };
}

export async function probeHost(opts: ProbeOptions): Promise<ProbeResult> {
  const logger = opts.logger ?? pino({ level: 'silent' });
  const detection = await detect(opts);
  if (!detection.driver) return { detection, telemetry: null, problem: null };
  const made = createDetected(detection, 'probe', opts, logger);
  if ('problem' in made) return { detection, telemetry: null, problem: made.problem };
  const driver = made.driver;
  let reading: Reading;
  try {
    await driver.start();
    reading = await driver.read({ deadlineMs: opts.readDeadlineMs ?? 5000, ...(opts.signal ? { signal: opts.signal } : {}) });
  } catch (err) {
    return { detection, telemetry: null, problem: toRackpilotError(err).message };
  } finally {
    await driver.stop().catch(() => undefined);
  }
  return { detection, telemetry: deviceTelemetry(driver, reading), problem: null };
}

const fmt = (v: string | number | boolean | null | undefined, unit = ''): string => (v === null || v === undefined ? '?' : `${String(v)}${unit}`);

/** The human summary printed by `rackpilot probe`. */
export function formatProbe(r: ProbeResult): string {
  const d = r.detection;
  const lines: string[] = [];
  if (!d.driver) {
    lines.push(`${d.host}: unknown (no known firmware family answered; api port ${d.apiPort}, http port ${d.httpPort})`);
    for (const p of describeProbes(d)) lines.push(`  ${p}`);
    return `${lines.join('\n')}\n`;
  }
  lines.push(`${d.host}: ${d.driver} (${d.confidence} confidence)`);
  lines.push(`  model     ${fmt(d.model)}`);
  lines.push(`  firmware  ${fmt(d.firmware)}`);
  lines.push(`  evidence  ${d.evidence.map((e) => e.detail).join('; ')}`);
  if (d.alternatives.length > 0) lines.push(`  also matched: ${d.alternatives.join(', ')}`);
  const t = r.telemetry;
  if (t) {
    lines.push(`  state     ${t.state} (${t.online ? 'online' : 'offline'}, ${t.freshness})`);
    lines.push(`  power     ${fmt(t.powerW, ' W')}`);
    lines.push(`  hashrate  ${fmt(t.hashrateThs, ' TH/s')}`);
    lines.push(`  temp      ${fmt(t.temperatureC, ' °C')}`);
    if (t.error) lines.push(`  read error ${t.error.code}: ${t.error.message}`);
  } else if (r.problem) lines.push(`  telemetry unavailable: ${r.problem}`);
  return `${lines.join('\n')}\n`;
}

/** The single JSON object printed by `rackpilot probe --json`. */
export function probeJson(r: ProbeResult): Record<string, unknown> {
  const d = r.detection;
  return {
    host: d.host,
    identified: d.driver !== null,
    driver: d.driver,
    model: d.model,
    firmware: d.firmware,
    confidence: d.confidence,
    evidence: d.evidence.map((e) => e.detail),
    alternatives: d.alternatives,
    telemetry: r.telemetry,
    ...(r.problem ? { problem: r.problem } : {}),
    probes: d.probes,
  };
}

export { DEFAULT_API_PORT, DEFAULT_HTTP_PORT };
