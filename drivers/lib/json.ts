/** Tolerant readers for JSON answers of web APIs: wrong types become undefined, never throw. */

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The object at `v`, or an empty one. */
export function obj(v: unknown): Obj {
  return isObj(v) ? v : {};
}

/** The objects in array `v` (other entries dropped), or []. */
export function objs(v: unknown): Obj[] {
  return Array.isArray(v) ? v.filter(isObj) : [];
}

/** A finite number from a number or a numeric string (units like "3250W" stripped). */
export function num(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'string') {
    const m = /^\s*(-?\d+(?:\.\d+)?)\s*[A-Za-z%]*\s*$/.exec(v);
    return m?.[1] !== undefined ? Number(m[1]) : undefined;
  }
  return undefined;
}

export function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

export function maxOf(values: (number | undefined)[]): number | undefined {
  const v = values.filter((x): x is number => x !== undefined);
  return v.length ? Math.max(...v) : undefined;
}

export function meanOf(values: (number | undefined)[]): number | undefined {
  const v = values.filter((x): x is number => x !== undefined);
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : undefined;
}
