/**
 * Figures for the benchmarks: one high-resolution clock (fractional epoch
 * milliseconds) that every timestamp of a bench run is taken with, and
 * p50 / p99 / max over trials.
 */

/** Fractional epoch milliseconds from the monotonic high-resolution clock. */
export function hrNow(): number {
  return performance.timeOrigin + performance.now();
}

export interface Summary {
  p50: number;
  p99: number;
  max: number;
  /** Trials that produced a value. */
  n: number;
}

/** Nearest-rank quantile of sorted values (q in 0..1); NaN when empty. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] ?? NaN;
}

/** p50 / p99 / max of the finite values (a trial with no value is left out and not counted). */
export function summarize(xs: readonly number[]): Summary {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return { p50: quantile(s, 0.5), p99: quantile(s, 0.99), max: s.at(-1) ?? NaN, n: s.length };
}

/** Milliseconds with a precision that suits their size. */
export function fmtMs(x: number): string {
  if (!Number.isFinite(x)) return '-';
  return x < 1 ? x.toFixed(3) : x < 100 ? x.toFixed(2) : x.toFixed(0);
}

export function fmtSummary(s: Summary): string {
  return `${fmtMs(s.p50)} / ${fmtMs(s.p99)} / ${fmtMs(s.max)}`;
}

/** a / b, NaN when either is not a positive finite number. */
export function ratio(a: number, b: number): number {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : NaN;
}

/** Lays rows out as an aligned text table (first row: headers). */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map((r, ri) => {
      const line = r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
      return ri === 0 ? `${line}\n${widths.map((w) => '-'.repeat(w)).join('  ')}` : line;
    })
    .join('\n');
}
