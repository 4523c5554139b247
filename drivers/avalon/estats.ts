/**
 * Parses Canaan's bracketed `Key[value]` strings (the `MM ID0` value of
 * `estats`/`stats`): `Ver[1466-...] SYSTEMSTATU[Work: In Work, Hash Board: 3 ]
 * PS[0 1209 1187 297 3526 1188 3731] WALLPOWER[3731] GHSspd[199241.07] ...`.
 * Keys may hold spaces (`Nonce Mask[25]`), pairs may touch (`Elapsed[1]BOOTBY[2]`),
 * values may be empty, lists of numbers, or `nan`/`inf`.
 */
import type { Obj } from '../lib/cgminer/fields.js';

export function parseBracketed(s: string): Map<string, string> {
  const out = new Map<string, string>();
  const re = /([A-Za-z][A-Za-z0-9_ ]*?)\s*\[([^\]]*)\]/g;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const key = (m[1] ?? '').trim();
    if (key && !out.has(key)) out.set(key, (m[2] ?? '').trim());
  }
  return out;
}

/** Finite numbers of a space separated value (`nan`, `inf`, `%` suffixes dropped or stripped). */
export function numbers(v: string | undefined): number[] {
  if (v === undefined) return [];
  return v
    .split(/\s+/)
    .map((t) => Number.parseFloat(t))
    .filter((n) => Number.isFinite(n));
}

export function first(v: string | undefined): number | undefined {
  return numbers(v)[0];
}

/**
 * The bracketed map of an estats reply's STATS section: every `MM ID<n>`
 * string (later ones do not override earlier keys). Newer firmware that
 * sends `MM ID0:Summary` as an object with a `STATS` object is flattened.
 */
export function estatsMap(stats: Obj[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const item of stats) {
    for (const [k, v] of Object.entries(item)) {
      if (!k.startsWith('MM ID')) continue;
      if (typeof v === 'string') {
        for (const [kk, vv] of parseBracketed(v)) if (!out.has(kk)) out.set(kk, vv);
      } else if (v && typeof v === 'object' && !Array.isArray(v)) {
        const inner = (v as Obj).STATS;
        const src = inner && typeof inner === 'object' && !Array.isArray(inner) ? (inner as Obj) : (v as Obj);
        for (const [kk, vv] of Object.entries(src)) {
          if (out.has(kk)) continue;
          if (typeof vv === 'string' || typeof vv === 'number') out.set(kk, String(vv));
          else if (Array.isArray(vv)) out.set(kk, vv.filter((x) => typeof x === 'string' || typeof x === 'number').join(' '));
        }
      }
    }
  }
  return out;
}

/**
 * Wall power in watts: `WALLPOWER[...]` (newer firmware), else from `PS[...]`:
 * with 7+ fields the last one (equals WALLPOWER where both exist), with 6
 * fields the 5th (A10/A11 series). Inferred from captured replies; see api-facts.md.
 */
export function powerOf(m: Map<string, string>): number | undefined {
  const wall = first(m.get('WALLPOWER'));
  if (wall !== undefined) return wall;
  const ps = numbers(m.get('PS'));
  if (ps.length >= 7) return ps[ps.length - 1];
  if (ps.length === 6) return ps[4];
  return undefined;
}

/** "Work: In Idle, Hash Board: 3" -> "In Idle". */
export function workState(m: Map<string, string>): string | undefined {
  const s = m.get('SYSTEMSTATU');
  if (s === undefined) return undefined;
  const w = /Work:\s*([^,\]]+)/.exec(s);
  return w?.[1]?.trim();
}
