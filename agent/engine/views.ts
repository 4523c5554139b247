/** How the engine's demands and activations look on the wire (events, state) and in the evidence log. */
import type { ActivationRecord } from './evidence.js';
import type { ShedOutcome } from './executor.js';
import type { Demand } from './types.js';

export interface DemandView {
  key: string;
  source: Demand['source'];
  kind: Demand['kind'];
  maxW?: number;
  devices?: string[];
  since: string;
  startsAt?: string;
  until?: string;
  holdOffMs: number;
  commandId?: string | null;
}

export interface ActivationSummary {
  signalAt: string;
  decisionMs: number;
  lastDispatchMs: number;
  lastAckMs: number | null;
  lastConfirmMs: number | null;
  devices: number;
  failed: number;
  powerBeforeW: number | null;
  powerAfterW: number | null;
}

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

export function view(d: Demand): DemandView {
  return {
    key: d.key,
    source: d.source,
    kind: d.kind,
    ...(d.maxW !== undefined ? { maxW: d.maxW } : {}),
    ...(d.devices ? { devices: d.devices } : {}),
    since: iso(d.since),
    ...(d.startsAt !== undefined ? { startsAt: iso(d.startsAt) } : {}),
    ...(d.until !== undefined ? { until: iso(d.until) } : {}),
    holdOffMs: d.holdOffMs,
    ...(d.commandId !== undefined ? { commandId: d.commandId } : {}),
  };
}

export function triggerOf(d: Demand): ActivationRecord['trigger'] {
  return {
    demand: d.key,
    source: d.source,
    kind: d.kind,
    ...(d.maxW !== undefined ? { maxW: d.maxW } : {}),
    ...(d.key.startsWith('signal:') ? { signal: d.key.slice(7) } : {}),
    ...(d.value !== undefined ? { value: d.value } : {}),
    commandId: d.commandId ?? null,
  };
}

const r3 = (x: number): number => Math.round(x * 1000) / 1000;

function max(xs: readonly (number | undefined)[]): number | null {
  let m: number | null = null;
  for (const x of xs) if (x !== undefined && (m === null || x > m)) m = x;
  return m;
}

/** The timings of one activation, in ms from the signal (sub-millisecond). */
export function summarize(signalAt: number, decidedAt: number, outs: readonly ShedOutcome[], rec: ActivationRecord | undefined): ActivationSummary {
  const firstDispatch = outs.reduce((m, x) => Math.min(m, x.dispatchAt), Number.POSITIVE_INFINITY);
  const lastAck = max(outs.map((x) => x.ackAt));
  const lastConfirm = max(outs.map((x) => x.confirmAt));
  return {
    signalAt: iso(signalAt),
    decisionMs: r3(Math.max(0, (Number.isFinite(firstDispatch) ? firstDispatch : decidedAt) - signalAt)),
    lastDispatchMs: r3(Math.max(0, (max(outs.map((x) => x.dispatchAt)) ?? decidedAt) - signalAt)),
    lastAckMs: lastAck === null ? null : r3(lastAck - signalAt),
    lastConfirmMs: lastConfirm === null ? null : r3(lastConfirm - signalAt),
    devices: outs.length,
    failed: outs.filter((x) => !x.ok).length,
    powerBeforeW: rec?.powerBeforeW ?? null,
    powerAfterW: rec?.powerAfterW ?? null,
  };
}
