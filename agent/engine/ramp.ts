/**
 * The restore ramp's order and steps: devices whose outlet was cut first (their
 * outlets are re-energized before anything else), then GPUs (AI load wants
 * continuity), then ASICs most efficient first — the reverse of shedding.
 * Steps hold `stepDevices` devices, or, with `kwPerS`, as many devices as
 * fit in `kwPerS × stepIntervalMs` of expected load (at least one).
 */
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
