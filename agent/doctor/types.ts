/** What every `rackpilot doctor` check returns: one row of the table (or one object of --json). */
import type { FieldValue } from '../../drivers/contract.js';

export const CHECK_STATUSES = ['pass', 'warn', 'fail', 'skip'] as const;
export type CheckStatus = (typeof CHECK_STATUSES)[number];

export interface CheckResult {
  status: CheckStatus;
  /** Short name, e.g. `broker`, `device m1`, `serial meter1`. */
  check: string;
  /** What was found; for warn/fail, what is wrong and what to do. */
  detail: string;
  /** Machine-readable extras for --json (firmware, GPU count, error code...). */
  data?: Record<string, FieldValue>;
  /** Every error behind a fail (the config's), printed under its row. */
  errors?: string[];
}

export const pass = (check: string, detail: string, data?: Record<string, FieldValue>): CheckResult => ({ status: 'pass', check, detail, ...(data ? { data } : {}) });
export const warn = (check: string, detail: string, data?: Record<string, FieldValue>): CheckResult => ({ status: 'warn', check, detail, ...(data ? { data } : {}) });
export const fail = (check: string, detail: string, data?: Record<string, FieldValue>): CheckResult => ({ status: 'fail', check, detail, ...(data ? { data } : {}) });
export const skip = (check: string, detail: string): CheckResult => ({ status: 'skip', check, detail });

/** The errno code of a failed fs/net call, if any. */
export function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

/** `0640` style. */
export function octal(mode: number): string {
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
}
