/**
 * Controller health: the rack controller's own CPU, memory, disk and
 * temperature. Static facts come from systeminformation once, at start-up
 * (it spawns processes: lscpu, dmidecode...); the periodic read() uses only
 * /proc, /sys and statfs, so no process is spawned per telemetry cycle.
 */
import type { Capabilities, DeviceDriver, DriverContext, FieldValue, Reading } from '../contract.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { ReadingTracker } from '../lib/reading.js';
import { join } from 'node:path';
import { cpuPct, diskUsage, findThermalZone, parseLoadavg, parseMeminfo, parseProcStat, parseUptime, readText, type CpuTimes } from './proc.js';
import { diskKey, type ControllerConfig } from './schema.js';

export interface ControllerOptions {
  /** Root of /proc (tests point it at a fixture tree). */
  procRoot?: string;
  /** Root of /sys. */
  sysRoot?: string;
  /** Gather static facts with systeminformation at start (default true). */
  facts?: boolean;
  /** Deadline of the start-up facts (default 10 s; they are left null when it passes). */
  factsDeadlineMs?: number;
}

interface Facts {
  cpuModel: string | null;
  cpuCores: number | null;
  os: string | null;
  kernel: string | null;
  arch: string | null;
  hostModel: string | null;
  memTotalMiB: number | null;
}

const NO_FACTS: Facts = { cpuModel: null, cpuCores: null, os: null, kernel: null, arch: null, hostModel: null, memTotalMiB: null };

const round = (v: number, digits = 1): number => Math.round(v * 10 ** digits) / 10 ** digits;

/** Static facts from systeminformation (spawns processes: start-up only). */
async function gatherFacts(): Promise<Facts> {
  const si = await import('systeminformation');
  const [cpu, os, mem, sys] = await Promise.all([si.cpu(), si.osInfo(), si.mem(), si.system()]);
  const str = (s: string | undefined): string | null => (s && s.trim() ? s.trim() : null);
  return {
    cpuModel: str([cpu.manufacturer, cpu.brand].filter(Boolean).join(' ')),
    cpuCores: Number.isFinite(cpu.cores) && cpu.cores > 0 ? cpu.cores : null,
    os: str([os.distro, os.release, os.codename ? `(${os.codename})` : ''].filter(Boolean).join(' ')),
    kernel: str(os.kernel),
    arch: str(os.arch),
    hostModel: str([sys.manufacturer, sys.model].filter((s) => s && s !== 'Default string').join(' ')),
    memTotalMiB: Number.isFinite(mem.total) && mem.total > 0 ? Math.round(mem.total / 1024 / 1024) : null,
  };
}

export class ControllerDriver implements DeviceDriver {
  readonly kind = 'controller' as const;
  readonly driverId = 'controller';
  readonly capabilities: Capabilities = { curtail: false, restore: false, powerTarget: null, profiles: false, switchOutlet: false };
  readonly id: string;
  private readonly tracker = new ReadingTracker();
  private readonly procRoot: string;
  private readonly sysRoot: string;
  private readonly disks: readonly { path: string; usedKey: string; freeKey: string }[];
  private prevCpu: CpuTimes | undefined;
  private tempPath: string | undefined;
  private facts: Facts = NO_FACTS;

  constructor(
    private readonly cfg: ControllerConfig,
    private readonly ctx: DriverContext,
    private readonly opts: ControllerOptions = {},
  ) {
    this.id = cfg.id;
    this.procRoot = opts.procRoot ?? '/proc';
    this.sysRoot = opts.sysRoot ?? '/sys';
    this.disks = cfg.mounts.map((path) => ({ path, usedKey: diskKey(path, 'UsedPct'), freeKey: diskKey(path, 'FreeMiB') }));
  }

  async start(): Promise<void> {
    this.prevCpu = await readText(join(this.procRoot, 'stat')).then(parseProcStat, () => undefined);
    this.tempPath = await findThermalZone(this.sysRoot, this.cfg.thermalZone);
    if (!this.tempPath && this.cfg.thermalZone !== undefined) {
      this.ctx.logger.warn({ thermalZone: this.cfg.thermalZone }, 'configured thermal zone not found: temperatureC stays null');
    }
    if (this.opts.facts !== false) {
      try {
        this.facts = await withDeadline(`${this.id} system facts`, this.opts.factsDeadlineMs ?? 10_000, () => gatherFacts());
      } catch (err) {
        this.ctx.logger.warn({ err: toRackpilotError(err).toJSON() }, 'static system facts unavailable');
      }
    }
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }

  private async sample(): Promise<Record<string, FieldValue>> {
    const p = this.procRoot;
    const [stat, meminfo, loadavg, uptime, temp, disks] = await Promise.all([
      readText(join(p, 'stat')),
      readText(join(p, 'meminfo')),
      readText(join(p, 'loadavg')).catch(() => ''),
      readText(join(p, 'uptime')).catch(() => ''),
      this.tempPath ? readText(this.tempPath).catch(() => '') : Promise.resolve(''),
      Promise.all(this.disks.map((d) => diskUsage(d.path).catch(() => undefined))),
    ]);
    const cpu = parseProcStat(stat);
    if (!cpu) throw new RackpilotError('MALFORMED_RESPONSE', `${this.id}: no aggregate "cpu" line in ${join(p, 'stat')}`);
    const pct = this.prevCpu ? cpuPct(this.prevCpu, cpu) : null;
    this.prevCpu = cpu;
    const mem = parseMeminfo(meminfo);
    const total = mem.get('MemTotal');
    const avail = mem.get('MemAvailable');
    const load = parseLoadavg(loadavg);
    const up = parseUptime(uptime);
    const milli = Number(temp.trim());
    const fields: Record<string, FieldValue> = {
      cpuPct: pct === null ? null : round(pct),
      load1: load?.[0] ?? null,
      load5: load?.[1] ?? null,
      load15: load?.[2] ?? null,
      memUsedPct: total && avail !== undefined ? round(((total - avail) / total) * 100) : null,
      memAvailableMiB: avail === undefined ? null : round(avail / 1024, 0),
      temperatureC: temp.trim() !== '' && Number.isFinite(milli) ? round(milli / 1000) : null,
      uptimeS: up === undefined ? null : Math.round(up),
    };
    this.disks.forEach((d, i) => {
      const u = disks[i];
      fields[d.usedKey] = u ? round(u.usedPct) : null;
      fields[d.freeKey] = u ? round(u.freeMiB, 0) : null;
    });
    Object.assign(fields, this.facts);
    return fields;
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const fields = await withDeadline(`${this.id} read`, opts.deadlineMs, () => this.sample(), opts.signal);
      return this.tracker.ok({ ts: this.ctx.now(), state: 'running', powerW: null, fields });
    } catch (err) {
      const e =
        err instanceof RackpilotError
          ? err
          : new RackpilotError('DEVICE_ERROR', `${this.id}: reading ${this.procRoot}: ${err instanceof Error ? err.message : String(err)}`, { device: this.id }, { cause: err });
      return this.tracker.failed(e, this.ctx.now());
    }
  }
}
