/**
 * `rackpilot scan CIDR`: probe every address of an IPv4 range with bounded
 * concurrency and an end-to-end deadline per host (detection + one
 * telemetry read), so one silent host never stalls the scan and the number
 * of open sockets stays bounded (about 4-6 per host in flight).
 */
import { pino, type Logger } from 'pino';
import { withDeadline } from '../drivers/lib/deadline.js';
import { toRackpilotError } from '../drivers/lib/errors.js';
import { detect, type Detection } from '../drivers/detect.js';
import { mapLimit } from './concurrency.js';
import { createDetected, type Credentials } from './probe.js';
import { deviceTelemetry } from './messages.js';

/** Larger ranges are refused: a /16 is already 65 534 hosts. */
export const MAX_PREFIX_BITS = 16;

function ipToInt(ip: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return (((parts[0] ?? 0) << 24) | ((parts[1] ?? 0) << 16) | ((parts[2] ?? 0) << 8) | (parts[3] ?? 0)) >>> 0;
}

function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/**
 * The host addresses of an IPv4 CIDR ("10.0.4.0/22", or one address). For
 * prefixes up to /30 the network and broadcast addresses are left out.
 */
export function expandCidr(cidr: string): { ok: true; hosts: string[] } | { ok: false; error: string } {
  const [ip, bitsText, ...rest] = cidr.trim().split('/');
  const base = ip === undefined ? undefined : ipToInt(ip);
  const bits = bitsText === undefined ? 32 : Number(bitsText);
  if (base === undefined || rest.length > 0 || !Number.isInteger(bits) || bits < 0 || bits > 32 || (bitsText !== undefined && !/^\d{1,2}$/.test(bitsText))) {
    return { ok: false, error: `"${cidr}" is not an IPv4 CIDR such as 10.0.4.0/22` };
  }
  if (bits < MAX_PREFIX_BITS) {
    return { ok: false, error: `${cidr} has ${2 ** (32 - bits)} addresses; refusing to scan more than a /${MAX_PREFIX_BITS} (65 536) at once: split it into /${MAX_PREFIX_BITS} ranges` };
  }
  const size = 2 ** (32 - bits);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  const net = (base & mask) >>> 0;
  const first = size > 2 ? net + 1 : net;
  const last = size > 2 ? net + size - 2 : net + size - 1;
  const hosts: string[] = [];
  for (let n = first; n <= last; n++) hosts.push(intToIp(n));
  return { ok: true, hosts };
}

export interface ScanOptions {
  hosts: readonly string[];
  concurrency?: number;
  /** End-to-end deadline per host: detection and the telemetry read (default 3000 ms). */
  timeoutMs?: number;
  apiPort?: number;
  httpPort?: number;
  portMap?: Readonly<Record<number, number>>;
  credentials?: Credentials;
  /** Skip the telemetry read (faster; powerW is then null). */
  noRead?: boolean;
  signal?: AbortSignal;
  logger?: Logger;
  /** Called as each host finishes (progress, benchmarks). */
  onHost?: (h: ScanHost) => void;
}

export interface ScanHost {
  ip: string;
  /**
   * 'miner': a family identified; 'unknown': something answered but no family matched; 'silent': a
   * port accepted connections but nothing answered in time; 'none': nothing answered; 'timeout': the
   * host's end-to-end deadline passed.
   */
  status: 'miner' | 'unknown' | 'silent' | 'none' | 'timeout';
  driver: string | null;
  model: string | null;
  firmware: string | null;
  confidence: Detection['confidence'];
  powerW: number | null;
  hashrateThs: number | null;
  state: string | null;
  error?: string;
}

export interface ScanSummary {
  scanned: number;
  miners: number;
  byDriver: Record<string, number>;
  unknown: number;
  silent: number;
  timeouts: number;
  wallMs: number;
}

async function scanOne(ip: string, o: ScanOptions, logger: Logger): Promise<ScanHost> {
  const timeoutMs = o.timeoutMs ?? 3000;
  const base: ScanHost = { ip, status: 'none', driver: null, model: null, firmware: null, confidence: null, powerW: null, hashrateThs: null, state: null };
  const started = Date.now();
  try {
    return await withDeadline(
      `${ip} scan`,
      timeoutMs,
      async (signal) => {
        // detection gets ~half of the host's budget, the read the rest
        const probeTimeoutMs = Math.max(100, Math.floor(timeoutMs / 2));
        const d = await detect({
          host: ip,
          ...(o.apiPort !== undefined ? { apiPort: o.apiPort } : {}),
          ...(o.httpPort !== undefined ? { httpPort: o.httpPort } : {}),
          ...(o.portMap ? { portMap: o.portMap } : {}),
          probeTimeoutMs,
          signal,
        });
        if (!d.driver) {
          const silent = d.probes.some((p) => p.kind !== 'port' && /^(READ_TIMEOUT|DEADLINE_EXCEEDED)/.test(p.saw));
          return { ...base, status: d.probes.some((p) => p.answered && p.kind !== 'port') ? 'unknown' : silent ? 'silent' : 'none' };
        }
        const found: ScanHost = { ...base, status: 'miner', driver: d.driver, model: d.model, firmware: d.firmware, confidence: d.confidence };
        if (o.noRead) return found;
        const left = timeoutMs - (Date.now() - started) - 50;
        const made = createDetected(d, 'scan', { ...(o.credentials ? { credentials: o.credentials } : {}), ...(o.portMap ? { portMap: o.portMap } : {}), quiet: true, timeouts: { connectMs: Math.max(10, Math.min(1000, left)), readMs: Math.max(10, left) } }, logger);
        if ('problem' in made) return { ...found, error: made.problem };
        const driver = made.driver;
        try {
          await driver.start();
          const r = await driver.read({ deadlineMs: Math.max(10, left), signal });
          const t = deviceTelemetry(driver, r);
          return {
            ...found,
            powerW: r.powerW,
            hashrateThs: typeof t.hashrateThs === 'number' ? t.hashrateThs : null,
            state: r.state,
            ...(r.error ? { error: `${r.error.code}: ${r.error.message}` } : {}),
          };
        } finally {
          // bounded: the driver's own deadlines apply, and nothing here waits on the device for long
          await driver.stop().catch(() => undefined);
        }
      },
      o.signal,
    );
  } catch (err) {
    const e = toRackpilotError(err);
    if (e.code === 'DEADLINE_EXCEEDED') return { ...base, status: 'timeout', error: `no complete answer within ${timeoutMs} ms` };
    return { ...base, status: 'none', error: `${e.code}: ${e.message}` };
  }
}

export async function scan(o: ScanOptions): Promise<{ hosts: ScanHost[]; summary: ScanSummary }> {
  const logger = o.logger ?? pino({ level: 'silent' });
  const t0 = Date.now();
  const results = await mapLimit(o.hosts, o.concurrency ?? 64, async (ip) => {
    const h = await scanOne(ip, o, logger);
    o.onHost?.(h);
    return h;
  });
  const miners = results.filter((h) => h.status === 'miner');
  const byDriver: Record<string, number> = {};
  for (const m of miners) if (m.driver) byDriver[m.driver] = (byDriver[m.driver] ?? 0) + 1;
  return {
    hosts: results,
    summary: {
      scanned: results.length,
      miners: miners.length,
      byDriver,
      unknown: results.filter((h) => h.status === 'unknown').length,
      silent: results.filter((h) => h.status === 'silent').length,
      timeouts: results.filter((h) => h.status === 'timeout').length,
      wallMs: Date.now() - t0,
    },
  };
}

const cell = (v: string | number | boolean | null | undefined): string => (v === null || v === undefined ? '-' : String(v));

/** One line per miner found, then the summary. */
export function formatScan(hosts: readonly ScanHost[], s: ScanSummary): string {
  const rows = hosts.filter((h) => h.status === 'miner').map((h) => [h.ip, cell(h.driver), cell(h.model), cell(h.firmware), h.powerW === null ? '-' : `${h.powerW} W`]);
  const head = ['IP', 'DRIVER', 'MODEL', 'FIRMWARE', 'POWER'];
  const widths = head.map((_, i) => Math.max(head[i]?.length ?? 0, ...rows.map((r) => r[i]?.length ?? 0)));
  const line = (r: string[]): string => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  const out = rows.length > 0 ? [line(head), ...rows.map(line)] : [];
  const fam = Object.entries(s.byDriver)
    .map(([k, v]) => `${v} ${k}`)
    .join(', ');
  out.push(
    `scanned ${s.scanned} address(es) in ${(s.wallMs / 1000).toFixed(1)} s: ${s.miners} miner(s)${fam ? ` (${fam})` : ''}, ${s.unknown} other device(s) answering, ${s.silent} silent, ${s.timeouts} host(s) timed out`,
  );
  return `${out.join('\n')}\n`;
}
