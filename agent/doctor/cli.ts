/**
 * `rackpilot doctor [--config FILE] [--json] [--timeout MS]`: checks the
 * config, the broker (and its TLS files), GPIO, serial ports, NVML, every
 * device, the clock, Node and the agent's files, and prints a pass/warn/fail
 * table (or, with --json, a list). Exit 0 when nothing failed (warnings
 * allowed), 1 on any failure, 2 on a usage error.
 */
import { parseArgs } from 'node:util';
import { loadConfigFile } from '../config.js';
import type { ClockProbes } from './clock.js';
import { DEFAULT_TIMEOUT_MS, runChecks } from './doctor.js';
import type { GpioCheckOptions } from './gpio.js';
import { formatTable, toJson } from './table.js';
import { fail, pass, type CheckResult } from './types.js';

export const DEFAULT_CONFIG_FILE = '/etc/rackpilot/config.yaml';

export const DOCTOR_USAGE = `usage: rackpilot doctor [--config FILE] [--json] [--timeout MS]
  --config, -c FILE  the agent's config (default ${DEFAULT_CONFIG_FILE})
  --json             print the checks as a JSON list
  --timeout MS       deadline of each network check: broker, each device (default ${DEFAULT_TIMEOUT_MS}, 100..120000)
Exit status: 0 nothing failed (warnings allowed), 1 a check failed, 2 usage error.
Run it as the agent's user (e.g. "sudo -u rackpilot rackpilot doctor") so file and device permissions are those the agent gets.
`;

export interface DoctorDeps {
  /** Where usage errors go (default process.stderr). */
  err?: NodeJS.WritableStream;
  clock?: ClockProbes;
  gpio?: GpioCheckOptions;
}

type Parsed = { ok: true; file: string; json: boolean; timeoutMs: number; help: boolean } | { ok: false; error: string };

function parse(args: string[]): Parsed {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      allowPositionals: false,
      strict: true,
      options: { config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, timeout: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
  let timeoutMs = DEFAULT_TIMEOUT_MS;
  if (values.timeout !== undefined) {
    const n = Number(values.timeout);
    if (!/^\d+$/.test(values.timeout) || n < 100 || n > 120_000) return { ok: false, error: `--timeout: expected milliseconds from 100 to 120000, got "${values.timeout}"` };
    timeoutMs = n;
  }
  if (values.config === '') return { ok: false, error: '--config: expected a file name' };
  return { ok: true, file: values.config ?? DEFAULT_CONFIG_FILE, json: values.json === true, timeoutMs, help: values.help === true };
}

function write(out: NodeJS.WritableStream, text: string): Promise<void> {
  return new Promise((resolve) => {
    if (!out.write(text)) out.once('drain', () => resolve());
    else resolve();
  });
}

/** Runs doctor; returns the exit code (the caller exits with it: a device's driver may leave a socket to time out). */
export async function runDoctor(args: string[], out: NodeJS.WritableStream, deps: DoctorDeps = {}): Promise<number> {
  const p = parse(args);
  if (!p.ok) {
    await write(deps.err ?? process.stderr, `doctor: ${p.error}\n${DOCTOR_USAGE}`);
    return 2;
  }
  if (p.help) {
    await write(out, DOCTOR_USAGE);
    return 0;
  }
  const res = loadConfigFile(p.file);
  let results: CheckResult[];
  let heading: string;
  if (!res.ok) {
    const missing = res.errors.length === 1 && /cannot read config file \(ENOENT\)/.test(res.errors[0] ?? '');
    const row = fail('config', `${p.file}: ${res.errors.length} error(s)${missing ? ' (no such file: pass --config FILE)' : ''}; fix them and run doctor again (other checks need the config)`);
    row.errors = res.errors;
    results = [row];
    heading = `rackpilot doctor: ${p.file}`;
  } else {
    const c = res.config;
    results = [pass('config', `${p.file}: valid (site ${c.site}, rack ${c.rack}, ${c.devices.length} device(s))`), ...(await runChecks({ config: c, configFile: p.file, timeoutMs: p.timeoutMs, clock: deps.clock, gpio: deps.gpio }))];
    heading = `rackpilot doctor: ${p.file} (site ${c.site}, rack ${c.rack})`;
  }
  await write(out, p.json ? toJson(results) : formatTable(results, heading));
  return results.some((r) => r.status === 'fail') ? 1 : 0;
}
