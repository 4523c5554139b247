/**
 * The restore ramp's order and steps: devices whose outlet was cut first (their
 * outlets are re-energized before anything else), then GPUs (AI load wants
 * continuity), then ASICs most efficient first — the reverse of shedding.
 * Steps hold `stepDevices` devices, or, with `kwPerS`, as many devices as
 * fit in `kwPerS × stepIntervalMs` of expected load (at least one).
 */
import { sleep } from '../../drivers/lib/deadline.js';
import type { AbortGroup } from '../abort-group.js';
import { restoreDevice, type DeviceHandle, type ExecOptions, type ShedOutcome } from './executor.js';
import type { ShedRecord } from './state-store.js';
export interface RampDevice {
  id: string;
  kind: string;
  cut: boolean;
  /** Load expected back, watts (the draw before it was shed; 0 when unknown). */
  loadW: number;
  /** Position in the shed order (lower = shed earlier = restored later). */
  shedRank: number;
}

export interface RampOptions {
  stepDevices: number;
  stepIntervalMs: number;
  kwPerS?: number | undefined;
}

export function rampSteps(devices: readonly RampDevice[], o: RampOptions): string[][] {
  const order = [...devices].sort(
    (a, b) => Number(b.cut) - Number(a.cut) || Number(b.kind === 'gpu') - Number(a.kind === 'gpu') || b.shedRank - a.shedRank || a.id.localeCompare(b.id),
  );
  const steps: string[][] = [];
  const budgetW = o.kwPerS === undefined ? undefined : o.kwPerS * 1000 * Math.max(1, o.stepIntervalMs / 1000);
  let cur: string[] = [];
  let curW = 0;
  for (const d of order) {
    const full = budgetW === undefined ? cur.length >= o.stepDevices : cur.length > 0 && curW + d.loadW > budgetW;
    if (full) {
      steps.push(cur);
      cur = [];
      curW = 0;
    }
    cur.push(d.id);
    curW += d.loadW;
  }
  if (cur.length > 0) steps.push(cur);
  return steps;
}

export interface RestoreContext<S> {
  steps: readonly (readonly string[])[];
  handles: ReadonlyMap<string, DeviceHandle>;
  /** Devices held down; a device leaves it when its restore starts, and comes back if the restore fails. */
  shed: Map<string, S>;
  failed: Set<string>;
  opts: ExecOptions;
  /** Each restore gets its own signal from it (aborted when the ramp is stopped). */
  group: AbortGroup;
  stepIntervalMs: number;
  /** Aborted when a new demand stops the ramp. */
  signal: AbortSignal;
  /** After step i of n was started. */
  onStep: (i: number, n: number) => void;
}

/** Runs the ramp's steps `stepIntervalMs` apart; stops starting steps when `signal` aborts. */
export async function restoreInSteps<S extends ShedRecord>(c: RestoreContext<S>): Promise<ShedOutcome[]> {
  const jobs: Promise<ShedOutcome>[] = [];
  for (let i = 0; i < c.steps.length; i++) {
    if (c.signal.aborted) break;
    for (const id of c.steps[i] ?? []) {
      const h = c.handles.get(id);
      if (!h) continue;
      const rec = c.shed.get(id);
      // from here the device may be running again: a new demand must shed it afresh
      c.shed.delete(id);
      c.failed.delete(id);
      jobs.push(
        restoreDevice(h, rec, c.opts, c.group.signal()).then((out) => {
          if (!out.ok && !c.signal.aborted && rec) {
            c.shed.set(id, rec); // still held down as far as we know: the next restore retries it
            c.failed.add(id);
          }
          return out;
        }),
      );
    }
    c.onStep(i, c.steps.length);
    if (i < c.steps.length - 1) await sleep(c.stepIntervalMs, c.signal).catch(() => undefined);
  }
  try {
    return await Promise.all(jobs);
  } finally {
    c.group.dispose();
  }
}
