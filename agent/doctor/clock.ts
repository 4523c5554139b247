/**
 * Whether the system clock is synchronised (evidence timestamps and signed
 * commands' freshness depend on it): `timedatectl show -p NTPSynchronized
 * --value` when it answers; else the systemd-timesyncd flag file; else
 * `chronyc tracking`; else a warning that it cannot tell. The probes are
 * injectable for tests.
 */
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { pass, warn, type CheckResult } from './types.js';

export type ProbeRun = { status: 'ok'; stdout: string } | { status: 'missing' } | { status: 'failed'; message: string };

export interface ClockProbes {
  /** Runs a command with a deadline; `missing` when it is not installed. */
  run(cmd: string, args: readonly string[], timeoutMs: number): Promise<ProbeRun>;
  exists(path: string): Promise<boolean>;
}

export const TIMESYNCD_FLAG = '/run/systemd/timesync/synchronized';

export const systemClockProbes: ClockProbes = {
  run: (cmd, args, timeoutMs) =>
    new Promise((resolve) => {
      execFile(cmd, [...args], { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8', maxBuffer: 64 * 1024 }, (err, stdout, stderr) => {
        if (!err) return resolve({ status: 'ok', stdout });
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return resolve({ status: 'missing' });
        resolve({ status: 'failed', message: (stderr.trim() || err.message).split('\n')[0] ?? err.message });
      });
    }),
  exists: async (path) => {
    try {
      await fsp.access(path);
      return true;
    } catch {
      return false;
    }
  },
};

const WHY = 'evidence timestamps and signed commands need a synchronised clock';

export async function checkClock(probes: ClockProbes = systemClockProbes, timeoutMs = 2_000): Promise<CheckResult> {
  const name = 'clock';
  const seen: string[] = [];
  const t = await probes.run('timedatectl', ['show', '-p', 'NTPSynchronized', '--value'], timeoutMs);
  if (t.status === 'ok') {
    const v = t.stdout.trim();
    if (v === 'yes') return pass(name, 'synchronised (timedatectl: NTPSynchronized=yes)', { synchronized: true, source: 'timedatectl' });
    if (v === 'no') return warn(name, `not synchronised (timedatectl: NTPSynchronized=no): ${WHY}; enable NTP ("timedatectl set-ntp true") or install chrony`, { synchronized: false, source: 'timedatectl' });
    seen.push(`timedatectl answered "${v.slice(0, 40)}"`);
  } else seen.push(t.status === 'missing' ? 'no timedatectl' : `timedatectl failed (${t.message})`);
  if (await probes.exists(TIMESYNCD_FLAG)) return pass(name, `synchronised (systemd-timesyncd: ${TIMESYNCD_FLAG} exists)`, { synchronized: true, source: 'timesyncd' });
  const c = await probes.run('chronyc', ['tracking'], timeoutMs);
  if (c.status === 'ok') {
    const leap = /^Leap status\s*:\s*(.+)$/m.exec(c.stdout)?.[1]?.trim();
    if (leap !== undefined && leap !== 'Not synchronised') return pass(name, `synchronised (chronyc tracking: leap status ${leap})`, { synchronized: true, source: 'chrony' });
    if (leap === 'Not synchronised') return warn(name, `not synchronised (chronyc tracking: leap status Not synchronised): ${WHY}; check "chronyc sources"`, { synchronized: false, source: 'chrony' });
    seen.push('chronyc tracking gave no leap status');
  } else seen.push(c.status === 'missing' ? 'no chronyc' : `chronyc failed (${c.message})`);
  return warn(name, `cannot tell whether the clock is synchronised (${seen.join('; ')}): ${WHY}; enable systemd-timesyncd or install chrony`, { synchronized: null });
}
