/**
 * The `/healthz` report. HTTP 503 only when the agent is not ready (starting
 * or stopping) or its event loop lags past `health.maxLoopLagMs`: those are
 * the states where it cannot curtail in time. A lost broker, stale devices or
 * an unusable spool are reported as `degraded` with HTTP 200: the agent keeps
 * curtailing locally on its own signals (and sheds on central-lost), so a
 * restart by a supervisor would not help and could hurt.
 */
import { isActive } from '../engine/demands.js';
import type { RackState } from '../../protocol/messages.js';
import type { Freshness, DeviceKind, DeviceState } from '../../drivers/contract.js';
import type { LoopLagWindow } from './loop-lag.js';
import { spoolStats, type HealthSources } from './sources.js';

export type BrokerState = 'connected' | 'connecting' | 'disconnected';

export interface StaleDevice {
  id: string;
  kind: DeviceKind;
  freshness: Freshness;
  state: DeviceState;
  /** Age of the latest reading's values, ms (null: never read). */
  ageMs: number | null;
}

export interface HealthReport {
  /** ok: 200; degraded: 200, something to look at; unhealthy: 503. */
  status: 'ok' | 'degraded' | 'unhealthy';
  /** Agent.start() has completed and stop() has not begun. */
  ready: boolean;
  /** Why the status is not ok, one short line each. */
  reasons: string[];
  ts: string;
  version: string;
  site: string;
  rack: string;
  uptimeS: number;
  broker: {
    state: BrokerState;
    /** When the state began (ISO time; agent construction for `connecting`). */
    since: string;
    connects: number;
    /** Messages waiting in memory to be sent. */
    queued: number;
  };
  eventLoop: LoopLagWindow & {
    /** Delay measured while answering this request, ms. */
    lagMs: number;
    maxLoopLagMs: number;
  };
  devices: { total: number; staleAfterMs: number; stale: StaleDevice[] };
  curtailment: {
    rackState: RackState;
    /** Demands holding load down now (scheduled ones not yet started excluded). */
    activeDemands: number;
    /** Every demand held, scheduled ones included. */
    demands: number;
    shedDevices: number;
  };
  /** Store-and-forward buffer; null when it could not be opened. */
  spool: { pendingTelemetry: number; pendingEvents: number; diskBytes: number } | null;
}

export function brokerState(s: HealthSources): BrokerState {
  if (s.bridge.connected) return 'connected';
  return s.bridge.stats.connects === 0 ? 'connecting' : 'disconnected';
}

/** A device is stale when its latest reading is not fresh, or its values are older than this (a stuck poll cycle). */
export function staleAfterMs(poll: HealthSources['poll']): number {
  return 3 * poll.intervalMs + poll.deadlineMs;
}

export function staleDevices(s: HealthSources, now: number): StaleDevice[] {
  const limit = staleAfterMs(s.poll);
  const out: StaleDevice[] = [];
  for (const d of s.devices) {
    const r = s.latest.get(d.id);
    if (!r) {
      out.push({ id: d.id, kind: d.kind, freshness: 'missing', state: 'unknown', ageMs: null });
      continue;
    }
    const ageMs = Math.max(0, now - r.ts);
    if (r.freshness !== 'fresh' || ageMs > limit) out.push({ id: d.id, kind: d.kind, freshness: r.freshness, state: r.state, ageMs });
  }
  return out;
}

export function activeDemandCount(s: HealthSources, now: number): number {
  let n = 0;
  for (const d of s.engine.demands.list()) if (isActive(d, now)) n++;
  return n;
}

export interface ReportInput {
  ready: boolean;
  startedAt: number;
  maxLoopLagMs: number;
  loop: LoopLagWindow;
  lagMs: number;
}

export function healthReport(s: HealthSources, o: ReportInput, now = Date.now()): HealthReport {
  const reasons: string[] = [];
  let unhealthy = false;
  if (!o.ready) {
    unhealthy = true;
    reasons.push('agent not ready (starting or stopping)');
  }
  const loopLag = Math.max(o.lagMs, o.loop.p99Ms ?? 0);
  if (loopLag > o.maxLoopLagMs) {
    unhealthy = true;
    reasons.push(`event loop lag ${loopLag} ms is above health.maxLoopLagMs (${o.maxLoopLagMs} ms)`);
  }
  const broker = brokerState(s);
  if (broker !== 'connected') reasons.push(`broker ${broker}: curtailing locally, telemetry and events spooled`);
  const stale = staleDevices(s, now);
  if (stale.length > 0) reasons.push(`${stale.length} device(s) without fresh readings`);
  const sp = spoolStats(s);
  if (!sp && o.ready) reasons.push('spool unusable: messages published while offline are dropped');
  return {
    status: unhealthy ? 'unhealthy' : reasons.length > 0 ? 'degraded' : 'ok',
    ready: o.ready,
    reasons,
    ts: new Date(now).toISOString(),
    version: s.version,
    site: s.site,
    rack: s.rack,
    uptimeS: Math.round((now - o.startedAt) / 1000),
    broker: { state: broker, since: new Date(s.bridge.connectedChangedAt).toISOString(), connects: s.bridge.stats.connects, queued: s.bridge.queued },
    eventLoop: { ...o.loop, lagMs: o.lagMs, maxLoopLagMs: o.maxLoopLagMs },
    devices: { total: s.devices.length, staleAfterMs: staleAfterMs(s.poll), stale },
    curtailment: { rackState: s.rackState(), activeDemands: activeDemandCount(s, now), demands: s.engine.demands.size, shedDevices: s.engine.shed.size },
    spool: sp ? { pendingTelemetry: sp.pending.telemetry, pendingEvents: sp.pending.events, diskBytes: sp.diskBytes } : null,
  };
}
