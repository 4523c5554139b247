/**
 * Export of the evidence log (agent/engine/evidence.ts) for a market
 * operator or an audit, across rotated files, power chunks reassembled.
 *
 * JSON: `{ "activations": [ { ...ActivationRecord, "power": { "t0", "stepMs", "w": [W|null…] } | null } ] }`
 *   (`power` is null when no chunk of it survived; a slot with no sample is null).
 * CSV, `table: 'power'` (default): one row per grid slot of each activation's window:
 *   activation,t_ms_from_signal,iso_time,power_w        (power_w empty: no sample)
 * CSV, `table: 'devices'`: one row per device of each activation (one row with empty device columns when none);
 *   every *_ms column is milliseconds from the activation's signal:
 *   activation,signal_iso,demand,source,kind,decided_ms,completed_ms,power_before_w,power_after_w,
 *   device,action,ok,dispatch_ms,ack_ms,confirm_ms,measured_w,steps
 *   `steps`: space-separated `STEP@MS:ok` or `STEP@MS:fail[:CODE]`.
 */
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { RackpilotError } from '../../drivers/lib/errors.js';
import { readEvidence, type ActivationRecord, type EvidenceContents, type PowerChunk } from './evidence.js';

export interface ExportOptions {
  /** Only this activation (an unknown id is an error naming the ones there are). */
  activation?: string;
  format: 'csv' | 'json';
  /** CSV only: which table (default `power`). */
  table?: 'power' | 'devices';
}

export interface PowerSeries {
  t0: number;
  stepMs: number;
  w: (number | null)[];
}

/** Slots in one reassembled window at most (an hour at 10 ms); a corrupt t0 cannot exhaust memory. */
const MAX_SLOTS = 400_000;

/** Joins an activation's chunks into one series (gaps between chunks are null); null without chunks. */
export function reassemble(chunks: readonly PowerChunk[] | undefined): PowerSeries | null {
  const first = chunks?.[0];
  if (!chunks || !first) return null;
  const stepMs = first.stepMs;
  const same = chunks.filter((c) => c.stepMs === stepMs);
  const t0 = Math.min(...same.map((c) => c.t0));
  const end = Math.max(...same.map((c) => c.t0 + c.w.length * stepMs));
  const n = Math.min(Math.round((end - t0) / stepMs), MAX_SLOTS);
  const w = new Array<number | null>(n).fill(null);
  for (const c of same) {
    const off = Math.round((c.t0 - t0) / stepMs);
    for (let k = 0; k < c.w.length && off + k < n; k++) w[off + k] = c.w[k] ?? null;
  }
  return { t0, stepMs, w };
}

/** The export of the evidence in `dir` as text (see the file comment for the formats). */
export function exportEvidence(dir: string, opts: ExportOptions): string {
  let contents: EvidenceContents;
  try {
    contents = readEvidence(dir);
  } catch (err) {
    throw new RackpilotError('CONFIG_INVALID', `cannot read the evidence folder ${dir}: ${(err as Error).message} (is evidence.dir right?)`, { dir });
  }
  let acts = contents.activations;
  if (opts.activation !== undefined) {
    acts = acts.filter((a) => a.id === opts.activation);
    if (acts.length === 0) {
      const ids = contents.activations.map((a) => a.id);
      const shown = ids.slice(-20).join(', ');
      throw new RackpilotError(
        'CONFIG_INVALID',
        ids.length === 0
          ? `no activation "${opts.activation}" in ${dir}: it holds no activations`
          : `no activation "${opts.activation}" in ${dir}; it holds ${ids.length}${ids.length > 20 ? ', the latest 20' : ''}: ${shown}`,
        { dir, activation: opts.activation },
      );
    }
  }
  if (opts.format === 'json') {
    return `${JSON.stringify({ activations: acts.map((a) => ({ ...a, power: reassemble(contents.power.get(a.id)) })) }, null, 2)}\n`;
  }
  return (opts.table ?? 'power') === 'power' ? powerCsv(acts, contents) : devicesCsv(acts);
}

function powerCsv(acts: readonly ActivationRecord[], contents: EvidenceContents): string {
  const out = ['activation,t_ms_from_signal,iso_time,power_w'];
  for (const a of acts) {
    const p = reassemble(contents.power.get(a.id));
    if (!p) continue;
    const id = csv(a.id);
    for (let k = 0; k < p.w.length; k++) {
      const t = p.t0 + k * p.stepMs;
      const v = p.w[k];
      out.push(`${id},${rel(t, a.signalAt)},${new Date(t).toISOString()},${v === null || v === undefined ? '' : num(v)}`);
    }
  }
  return `${out.join('\n')}\n`;
}

const DEVICE_HEADER =
  'activation,signal_iso,demand,source,kind,decided_ms,completed_ms,power_before_w,power_after_w,device,action,ok,dispatch_ms,ack_ms,confirm_ms,measured_w,steps';

function devicesCsv(acts: readonly ActivationRecord[]): string {
  const out = [DEVICE_HEADER];
  for (const a of acts) {
    const s = a.signalAt;
    const head = [
      csv(a.id),
      new Date(s).toISOString(),
      csv(a.trigger.demand),
      csv(a.trigger.source),
      a.trigger.kind,
      rel(a.decidedAt, s),
      a.completedAt === undefined ? '' : rel(a.completedAt, s),
      opt(a.powerBeforeW),
      opt(a.powerAfterW),
    ].join(',');
    if (a.devices.length === 0) out.push(`${head},,,,,,,,`);
    for (const d of a.devices) {
      const steps = d.steps.map((st) => `${st.step}@${rel(st.at, s)}:${st.ok ? 'ok' : `fail${st.error ? `:${st.error.code}` : ''}`}`).join(' ');
      out.push(
        [
          head,
          csv(d.id),
          csv(d.action),
          String(d.ok),
          rel(d.dispatchAt, s),
          d.ackAt === undefined ? '' : rel(d.ackAt, s),
          d.confirmAt === undefined ? '' : rel(d.confirmAt, s),
          opt(d.measuredW),
          csv(steps),
        ].join(','),
      );
    }
  }
  return `${out.join('\n')}\n`;
}

/** Milliseconds from `from`, to 0.1 ms. */
function rel(t: number, from: number): string {
  return num(Math.round((t - from) * 10) / 10);
}

function num(v: number): string {
  return String(Math.round(v * 1000) / 1000);
}

function opt(v: number | null | undefined): string {
  return v === null || v === undefined ? '' : num(v);
}

function csv(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

const EXPORT_USAGE = 'usage: rackpilot events export [--dir DIR | --config FILE] [--activation ID] [--format csv|json] [--table power|devices] [--out FILE]';

/**
 * `rackpilot events export …`: the evidence of `--dir` (or of `evidence.dir` in `--config`, else the
 * default folder) to stdout or `--out`. Returns the exit code: 0 done, 1 failed, 2 bad usage;
 * errors are one line on `err`.
 */
export async function runEventsExport(argv: string[], out: NodeJS.WritableStream, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const fail = (msg: string, code: number): number => {
    err.write(`rackpilot: events export: ${msg}\n`);
    return code;
  };
  let values: { dir?: string; config?: string; activation?: string; format?: string; table?: string; out?: string };
  try {
    values = parseArgs({
      args: argv,
      options: {
        dir: { type: 'string' },
        config: { type: 'string', short: 'c' },
        activation: { type: 'string' },
        format: { type: 'string' },
        table: { type: 'string' },
        out: { type: 'string', short: 'o' },
      },
    }).values;
  } catch (e) {
    return fail(`${(e as Error).message} (${EXPORT_USAGE})`, 2);
  }
  const format = values.format ?? 'csv';
  if (format !== 'csv' && format !== 'json') return fail(`--format: expected csv or json, got "${format}"`, 2);
  const table = values.table ?? 'power';
  if (table !== 'power' && table !== 'devices') return fail(`--table: expected power or devices, got "${table}"`, 2);
  if (values.table !== undefined && format === 'json') return fail('--table applies to --format csv only (json holds both)', 2);
  if (values.dir !== undefined && values.config !== undefined) return fail('give --dir or --config, not both', 2);

  let dir = values.dir;
  if (dir === undefined && values.config !== undefined) {
    const { loadConfigFile } = await import('../config.js');
    const res = loadConfigFile(values.config);
    if (!res.ok) return fail(`${values.config}: ${res.errors.join('; ')}`, 1);
    dir = res.config.evidence.dir ?? join(res.config.stateDir, 'evidence');
  }
  dir ??= '/var/lib/rackpilot/evidence';

  let text: string;
  try {
    text = exportEvidence(dir, { format, table, ...(values.activation !== undefined ? { activation: values.activation } : {}) });
  } catch (e) {
    return fail((e as Error).message, 1);
  }
  if (values.out !== undefined) {
    try {
      writeFileSync(values.out, text, { mode: 0o640 });
    } catch (e) {
      return fail(`cannot write ${values.out}: ${(e as Error).message}`, 1);
    }
    return 0;
  }
  try {
    await new Promise<void>((resolve, reject) => out.write(text, (e) => (e ? reject(e) : resolve())));
  } catch (e) {
    return fail(`cannot write the export: ${(e as Error).message}`, 1);
  }
  return 0;
}
