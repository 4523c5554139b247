/** Helpers to pull typed values out of loosely typed cgminer replies. */
import type { CgminerReply } from './client.js';

export type Obj = Record<string, unknown>;

/** The objects of a reply section such as `SUMMARY` or `TEMPS` (empty when absent). */
export function sectionItems(reply: CgminerReply | undefined, name: string): Obj[] {
  const sec = reply?.[name];
  if (!Array.isArray(sec)) return [];
  return sec.filter((x): x is Obj => !!x && typeof x === 'object' && !Array.isArray(x));
}

/** First finite number among `keys` of `obj` (numeric strings such as "3250 W" accepted). */
export function num(obj: Obj | undefined, ...keys: string[]): number | undefined {
  if (!obj) return undefined;
  for (const k of keys) {
    const v = obj[k];
    if (typeof v === 'number' && Number.isFinite(v)) return v;
    if (typeof v === 'string') {
      const n = Number.parseFloat(v);
      if (Number.isFinite(n)) return n;
    }
  }
  return undefined;
}

export function str(obj: Obj | undefined, ...keys: string[]): string | undefined {
  if (!obj) return undefined;
  for (const k of keys) {
    const v = obj[k];
    if (typeof v === 'string') return v;
  }
  return undefined;
}

export function bool(obj: Obj | undefined, ...keys: string[]): boolean | undefined {
  if (!obj) return undefined;
  for (const k of keys) {
    const v = obj[k];
    if (typeof v === 'boolean') return v;
    if (v === 'true') return true;
    if (v === 'false') return false;
  }
  return undefined;
}

export function maxOf(values: (number | undefined)[]): number | undefined {
  let m: number | undefined;
  for (const v of values) if (v !== undefined && (m === undefined || v > m)) m = v;
  return m;
}

export function mean(values: (number | undefined)[]): number | undefined {
  let sum = 0;
  let n = 0;
  for (const v of values) {
    if (v !== undefined) {
      sum += v;
      n++;
    }
  }
  return n === 0 ? undefined : sum / n;
}
