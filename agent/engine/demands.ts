/**
 * Demands combine into one target; the most restrictive wins.
 *
 * A demand counts only while it is active: `startsAt` absent or reached, and
 * `until` absent or still ahead (`until` is exclusive). Among the active ones:
 * - any whole-rack shed (kind `shed`, no `devices`) => `shedAll`;
 * - subset sheds (kind `shed` with `devices`, even an empty list) => the union
 *   of their ids in `shed`, sorted and deduplicated (empty when `shedAll`);
 * - budgets => the lowest `maxW`. A budget without a finite `maxW` is ignored
 *   (the schemas that build demands reject it before it gets here).
 *
 * Everything here is pure and O(number of demands) apart from sorting the
 * subset ids; `combine` runs on every demand change.
 */
import type { Demand, Target } from './types.js';

/** Whether the demand holds load down at `now`. */
export function isActive(d: Demand, now: number): boolean {
  return (d.startsAt === undefined || d.startsAt <= now) && (d.until === undefined || d.until > now);
}

/** The combined target of the demands active at `now`. */
export function combine(demands: Iterable<Demand>, now: number): Target {
  let shedAll = false;
  let maxW: number | null = null;
  let subset: Set<string> | undefined;
  for (const d of demands) {
    if (!isActive(d, now)) continue;
    if (d.kind === 'shed') {
      if (d.devices === undefined) shedAll = true;
      else if (!shedAll) {
        subset ??= new Set();
        for (const id of d.devices) subset.add(id);
      }
    } else if (d.maxW !== undefined && Number.isFinite(d.maxW) && (maxW === null || d.maxW < maxW)) {
      maxW = d.maxW;
    }
  }
  const shed = shedAll || subset === undefined ? [] : [...subset].sort();
  return { shedAll, shed, maxW };
}

/**
 * How long until the engine's next tick (ms, 0: at once), or null when no
 * start or end is ahead: the first one after `tickedAt`, the time the last
 * tick acted for, not after `now`. Whatever fell between the two (a timer
 * that fired a millisecond early, so that its tick saw a start or an end
 * still ahead that the clock has passed since) is due at once, never
 * skipped.
 */
export function nextTickIn(demands: Iterable<Demand>, tickedAt: number, now: number): number | null {
  const next = nextChange(demands, tickedAt);
  return next === null ? null : Math.max(0, next - now);
}

/** The earliest `startsAt` or `until` after `now` (when the target may change by itself), or null. */
export function nextChange(demands: Iterable<Demand>, now: number): number | null {
  let next: number | null = null;
  for (const d of demands) {
    if (d.startsAt !== undefined && d.startsAt > now && (next === null || d.startsAt < next)) next = d.startsAt;
    if (d.until !== undefined && d.until > now && (next === null || d.until < next)) next = d.until;
  }
  return next;
}

export function targetsEqual(a: Target, b: Target): boolean {
  if (a.shedAll !== b.shedAll || a.maxW !== b.maxW || a.shed.length !== b.shed.length) return false;
  for (let i = 0; i < a.shed.length; i++) if (a.shed[i] !== b.shed[i]) return false;
  return true;
}

/** True when the target asks for nothing (load may come back). */
export function isEmpty(t: Target): boolean {
  return !t.shedAll && t.shed.length === 0 && t.maxW === null;
}

/** The longest hold-off among the demands (0 for none): how long load must wait after they clear. */
export function maxHoldOffMs(demands: Iterable<Demand>): number {
  let ms = 0;
  for (const d of demands) if (d.holdOffMs > ms) ms = d.holdOffMs;
  return ms;
}

/** The demands currently known, by key. A demand with the same key replaces the earlier one. */
export class DemandSet {
  private readonly byKey = new Map<string, Demand>();

  /** Adds or replaces `d`; returns whether the target at `now` changed. */
  add(d: Demand, now: number): boolean {
    const before = this.activeTarget(now);
    this.byKey.set(d.key, d);
    return !targetsEqual(before, this.activeTarget(now));
  }

  /** Removes the demand with this key; returns it, or undefined when there was none. */
  remove(key: string): Demand | undefined {
    const d = this.byKey.get(key);
    if (d !== undefined) this.byKey.delete(key);
    return d;
  }

  /** Removes and returns the demands whose `until` has passed at `now`. */
  expire(now: number): Demand[] {
    const gone: Demand[] = [];
    for (const d of this.byKey.values()) if (d.until !== undefined && d.until <= now) gone.push(d);
    for (const d of gone) this.byKey.delete(d.key);
    return gone;
  }

  has(key: string): boolean {
    return this.byKey.has(key);
  }

  get(key: string): Demand | undefined {
    return this.byKey.get(key);
  }

  /** Every demand, active or not, in insertion order. */
  list(): Demand[] {
    return [...this.byKey.values()];
  }

  get size(): number {
    return this.byKey.size;
  }

  activeTarget(now: number): Target {
    return combine(this.byKey.values(), now);
  }

  /** When the target may change by itself (a window opening or a demand expiring), or null. */
  nextChange(now: number): number | null {
    return nextChange(this.byKey.values(), now);
  }
}
