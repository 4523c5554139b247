/** The pass/warn/fail table printed by `rackpilot doctor`, and its --json form. */
import type { CheckResult, CheckStatus } from './types.js';

const LABEL: Record<CheckStatus, string> = { pass: 'PASS', warn: 'WARN', fail: 'FAIL', skip: 'SKIP' };

/** Counts by status. */
export function summarize(results: readonly CheckResult[]): Record<CheckStatus, number> {
  const n: Record<CheckStatus, number> = { pass: 0, warn: 0, fail: 0, skip: 0 };
  for (const r of results) n[r.status]++;
  return n;
}

/** One row per check: status, check name, detail; every config error under its row. */
export function formatTable(results: readonly CheckResult[], heading?: string): string {
  const width = Math.max(5, ...results.map((r) => r.check.length));
  const out: string[] = [];
  if (heading) out.push(heading, '');
  out.push(`STATUS  ${'CHECK'.padEnd(width)}  DETAIL`);
  for (const r of results) {
    out.push(`${LABEL[r.status].padEnd(6)}  ${r.check.padEnd(width)}  ${r.detail}`);
    for (const l of r.errors ?? []) out.push(`${' '.repeat(8 + width + 2)}  ${l}`);
  }
  const n = summarize(results);
  out.push('', `${n.pass} passed, ${n.warn} warning(s), ${n.fail} failed${n.skip > 0 ? `, ${n.skip} skipped` : ''}`);
  return `${out.join('\n')}\n`;
}

/** The list printed by `--json`: `[{check, status, detail, ...data, lines?}]`. */
export function toJson(results: readonly CheckResult[]): string {
  return `${JSON.stringify(results.map((r) => ({ check: r.check, status: r.status, detail: r.detail, ...(r.data ?? {}), ...(r.errors ? { errors: r.errors } : {}) })))}\n`;
}
