/**
 * The planner: turns a target into a plan (which device is curtailed, in
 * which order, for how much). Pure and O(n log n); it runs on every telemetry
 * cycle so that a plan is ready before a signal arrives.
 *
 * The hybrid policy (the default):
 * - Sheddable: not protected, `capabilities.curtail`, kind `asic` or `gpu`.
 *   An ASIC's curtail puts it to sleep; a GPU node's curtail caps it to its
 *   power floor (`powerTarget.minW`), never cuts it. Other kinds never appear.
 * - Dispatch order: every ASIC before any GPU (`classOrder` may put the GPUs'
 *   class first instead). ASICs by priority (lower
 *   first), then least efficient first (J/TH = powerW / hashrateThs from a
 *   fresh or stale reading; those without a figure after those with one),
 *   then id. GPUs by priority, then id.
 * - Expected saving: ASIC powerW * (1 - ASIC_SLEEP_RESIDUAL); GPU
 *   powerW - minW (0 when it has no power target). Unknown power: 0, said in
 *   the step's reason.
 * - `shedAll`: every sheddable device (sufficient). `shed`: those ids that are
 *   sheddable (others are ignored here; the engine reports them).
 * - Budget `maxW`: rack power P is the fresh meter sum when given, else the
 *   sum of fresh powerW of the ASICs and GPUs (unknown when none has one).
 *   Need = P - maxW, minus what the shed part of the target already saves.
 *   Devices are added in dispatch order until the saving covers the need, so
 *   GPUs only when ASICs are not enough. If everything is not enough,
 *   everything is in and `sufficient` is false. P unknown: fail safe, every
 *   sheddable ASIC (no GPU) and `sufficient` false.
 * - Devices in `alreadyShed` (and still sheddable) stay in the plan while the
 *   target is not empty, with savingW 0: their saving is already in P. An
 *   empty target gives an empty plan (restore is the ramp's business).
 * - Each device appears once; steps are in dispatch order.
 */
import type { Reading } from '../../drivers/contract.js';
import { isEmpty } from './demands.js';
import type { Plan, PlanDevice, PlanStep, Target } from './types.js';

/** What a sleeping ASIC still draws, as a fraction of its running power (control board, fans). */
export const ASIC_SLEEP_RESIDUAL = 0.05;

export interface PlanOptions {
  /** The rack meters' sum when fresh, else null. */
  meteredPowerW: number | null;
  /** Devices the engine has curtailed and not restored. */
  alreadyShed: ReadonlySet<string>;
  /** Priority classes in shed order (config `engine.classOrder`); default the hybrid policy: mining first, then GPUs. */
  classOrder?: readonly ('asic' | 'gpu')[];
}

const HYBRID: readonly ('asic' | 'gpu')[] = ['asic', 'gpu'];

export function isSheddable(d: PlanDevice): boolean {
  return !d.protected && d.capabilities.curtail && (d.kind === 'asic' || d.kind === 'gpu');
}

/** The reading's power when it is a usable figure (fresh or stale), else null. */
function knownPowerW(r: Reading | undefined): number | null {
  if (r === undefined || r.freshness === 'missing') return null;
  const p = r.powerW;
  return p !== null && Number.isFinite(p) && p >= 0 ? p : null;
}

/** J/TH from a fresh or stale reading, or null when power or hashrate is unknown or zero. */
export function joulesPerTh(r: Reading | undefined): number | null {
  const p = knownPowerW(r);
  if (p === null || p <= 0 || r === undefined) return null;
  const h = r.fields.hashrateThs;
  return typeof h === 'number' && Number.isFinite(h) && h > 0 ? p / h : null;
}

/** What curtailing the device is expected to save, in watts; null when its power is unknown. */
export function expectedSavingW(d: PlanDevice): number | null {
  const p = knownPowerW(d.reading);
  if (p === null) return null;
  if (d.kind === 'gpu') return d.capabilities.powerTarget === null ? 0 : Math.max(0, p - d.capabilities.powerTarget.minW);
  return p * (1 - ASIC_SLEEP_RESIDUAL);
}

interface Candidate {
  d: PlanDevice;
  asic: boolean;
  jth: number | null;
  /** null: unknown power. */
  saving: number | null;
  /** Why it is in the plan; undefined: not (yet) in. */
  reason: string | undefined;
}

function byDispatchOrder(asicFirst: boolean): (a: Candidate, b: Candidate) => number {
  return (a, b) => {
    if (a.asic !== b.asic) return a.asic === asicFirst ? -1 : 1;
    return withinClass(a, b);
  };
}

function withinClass(a: Candidate, b: Candidate): number {
  if (a.d.priority !== b.d.priority) return a.d.priority - b.d.priority;
  if (a.asic && a.jth !== b.jth) {
    if (a.jth === null) return 1;
    if (b.jth === null) return -1;
    return b.jth - a.jth;
  }
  return a.d.id < b.d.id ? -1 : a.d.id > b.d.id ? 1 : 0;
}

/** Rack power: the meter when given, else the sum of the loads' fresh power; null when unknown. */
export function rackPowerW(devices: readonly PlanDevice[], meteredPowerW: number | null): number | null {
  if (meteredPowerW !== null && Number.isFinite(meteredPowerW)) return meteredPowerW;
  let sum: number | null = null;
  for (const d of devices) {
    if ((d.kind !== 'asic' && d.kind !== 'gpu') || d.reading?.freshness !== 'fresh') continue;
    const p = d.reading.powerW;
    if (p !== null && Number.isFinite(p) && p >= 0) sum = (sum ?? 0) + p;
  }
  return sum;
}

const ALREADY_SHED = 'already shed';

function withPower(reason: string, c: Candidate): string {
  return c.saving === null ? `${reason}; power unknown, saving counted 0` : reason;
}

function budgetReason(c: Candidate): string {
  return withPower(c.asic ? (c.jth === null ? 'budget: no J/TH figure' : `budget: ${c.jth.toFixed(1)} J/TH`) : 'budget: gpu to floor', c);
}

export function plan(target: Target, devices: readonly PlanDevice[], opts: PlanOptions): Plan {
  const powerW = rackPowerW(devices, opts.meteredPowerW);
  if (isEmpty(target)) return { steps: [], powerW, expectedW: powerW, sufficient: true };

  const cands: Candidate[] = [];
  for (const d of devices) {
    if (!isSheddable(d)) continue;
    const asic = d.kind === 'asic';
    cands.push({ d, asic, jth: asic ? joulesPerTh(d.reading) : null, saving: expectedSavingW(d), reason: undefined });
  }
  cands.sort(byDispatchOrder((opts.classOrder ?? HYBRID)[0] !== 'gpu'));

  // The shed part of the target, and what is already shed.
  const subset = target.shedAll || target.shed.length === 0 ? null : new Set(target.shed);
  let saved = 0;
  for (const c of cands) {
    if (opts.alreadyShed.has(c.d.id)) {
      c.reason = ALREADY_SHED;
      continue;
    }
    if (target.shedAll) c.reason = withPower('shed-all', c);
    else if (subset?.has(c.d.id)) c.reason = withPower('shed', c);
    else continue;
    saved += c.saving ?? 0;
  }

  // The budget part: add in dispatch order until the need is covered.
  if (target.maxW !== null) {
    if (powerW === null) {
      for (const c of cands) if (c.asic && c.reason === undefined) c.reason = 'budget: rack power unknown, shedding all mining';
    } else {
      const need = powerW - target.maxW;
      for (const c of cands) {
        if (saved >= need) break;
        if (c.reason !== undefined) continue;
        c.reason = budgetReason(c);
        saved += c.saving ?? 0;
      }
    }
  }

  const steps: PlanStep[] = [];
  for (const c of cands) {
    if (c.reason === undefined) continue;
    const savingW = c.reason === ALREADY_SHED ? 0 : (c.saving ?? 0);
    steps.push({ device: c.d.id, action: 'curtail', savingW, reason: c.reason });
  }
  const expectedW = powerW === null ? null : powerW - saved;
  const sufficient = target.maxW === null || (expectedW !== null && expectedW <= target.maxW);
  return { steps, powerW, expectedW, sufficient };
}
