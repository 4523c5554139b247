/**
 * Cheap reads of the controller's health from /proc and /sys: no process is
 * spawned. Parsers are pure so tests can feed them fixed text.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';

export interface CpuTimes {
  busy: number;
  total: number;
}

/** The aggregate `cpu` line of /proc/stat: total jiffies and busy ones (all but idle and iowait). */
export function parseProcStat(text: string): CpuTimes | undefined {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) return undefined;
  // user nice system idle iowait irq softirq steal (guest and guest_nice are already in user and nice)
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (v.length < 4 || v.some((x) => !Number.isFinite(x))) return undefined;
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** CPU use in percent between two /proc/stat samples; null when no time passed. */
export function cpuPct(prev: CpuTimes, cur: CpuTimes): number | null {
  const dt = cur.total - prev.total;
  if (dt <= 0) return null;
  return Math.min(100, Math.max(0, ((cur.busy - prev.busy) / dt) * 100));
}

/** /proc/meminfo values in KiB by key. */
export function parseMeminfo(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const l of text.split('\n')) {
    const r = /^(\w+(?:\([^)]*\))?):\s+(\d+)/.exec(l);
    if (r?.[1] && r[2]) m.set(r[1], Number(r[2]));
  }
  return m;
}

export function parseLoadavg(text: string): [number, number, number] | undefined {
  const v = text.trim().split(/\s+/).slice(0, 3).map(Number);
  return v.length === 3 && v.every(Number.isFinite) ? [v[0] ?? 0, v[1] ?? 0, v[2] ?? 0] : undefined;
}

export function parseUptime(text: string): number | undefined {
  const v = Number(text.trim().split(/\s+/)[0]);
  return Number.isFinite(v) ? v : undefined;
}

/** Disk use like df: used / (used + available to unprivileged users). */
export async function diskUsage(path: string): Promise<{ usedPct: number; freeMiB: number }> {
  const s = await fsp.statfs(path);
  const used = (s.blocks - s.bfree) * s.bsize;
  const avail = s.bavail * s.bsize;
  const usedPct = used + avail > 0 ? (used / (used + avail)) * 100 : 0;
  return { usedPct, freeMiB: avail / 1024 / 1024 };
}

const CPU_ZONE = /cpu|x86_pkg_temp|soc|coretemp|k10temp|package/i;

/** The temperature file to read: the configured zone (index or type), else a CPU zone, else the first; undefined when none. */
export async function findThermalZone(sysRoot: string, want?: number | string): Promise<string | undefined> {
  const dir = join(sysRoot, 'class', 'thermal');
  let names: string[];
  try {
    names = (await fsp.readdir(dir)).filter((n) => /^thermal_zone\d+$/.test(n)).sort((a, b) => Number(a.slice(12)) - Number(b.slice(12)));
  } catch {
    return undefined;
  }
  const zones: { name: string; type: string }[] = [];
  for (const name of names) {
    const type = await fsp.readFile(join(dir, name, 'type'), 'utf8').then((t) => t.trim(), () => '');
    zones.push({ name, type });
  }
  let pick: { name: string } | undefined;
  if (typeof want === 'number') pick = zones.find((z) => z.name === `thermal_zone${want}`);
  else if (typeof want === 'string') pick = zones.find((z) => z.type === want);
  else pick = zones.find((z) => CPU_ZONE.test(z.type)) ?? zones[0];
  return pick ? join(dir, pick.name, 'temp') : undefined;
}

export async function readText(path: string): Promise<string> {
  return fsp.readFile(path, 'utf8');
}
