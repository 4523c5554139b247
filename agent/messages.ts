/** Builds the v1 contract's messages from the agent's view of the rack. */
import type { DeviceDriver, Reading } from '../drivers/contract.js';
import type { SignalStatus } from './signals.js';
import type { DeviceTelemetry, RackState, StateMessage, StatusMessage, TelemetryMessage } from '../protocol/messages.js';

export interface RackIdentity {
  site: string;
  rack: string;
}

export function statusMessage(id: RackIdentity, online: boolean, reason: StatusMessage['reason'], version: string, at = Date.now()): StatusMessage {
  return { online, ts: new Date(at).toISOString(), site: id.site, rack: id.rack, agentVersion: version, protocol: 'v1', reason };
}

export function deviceTelemetry(d: DeviceDriver, r: Reading | undefined): DeviceTelemetry {
  if (!r) {
    return {
      id: d.id,
      kind: d.kind,
      driver: d.driverId,
      online: false,
      state: 'unknown',
      freshness: 'missing',
      powerW: null,
      sampledAt: new Date(0).toISOString(),
    };
  }
  const common = {
    id: d.id,
    kind: d.kind,
    driver: d.driverId,
    online: r.online,
    state: r.state,
    freshness: r.freshness,
    powerW: r.powerW,
    sampledAt: new Date(r.ts).toISOString(),
    ...(r.error ? { error: r.error } : {}),
  };
  // common keys first and winning over any same-named driver field; the cast is because
  // the schema's catchall (kind-specific primitives) makes TS reject `error`, an object
  return { ...common, ...r.fields, ...common } as DeviceTelemetry;
}

/** Devices that draw the rack's load (their reported power is summed); meters and PDUs only measure it. */
const LOAD_KINDS: ReadonlySet<string> = new Set(['asic', 'gpu']);

export function telemetryMessage(
  id: RackIdentity,
  devices: readonly DeviceDriver[],
  readings: ReadonlyMap<string, Reading>,
  seq: number,
  intervalMs: number,
  at = Date.now(),
): TelemetryMessage {
  let online = 0;
  let curtailed = 0;
  let powerW = 0;
  let powerComplete = true;
  let meteredW: number | null = null;
  const list = devices.map((d) => {
    const t = deviceTelemetry(d, readings.get(d.id));
    if (t.online) online++;
    if (t.state === 'curtailed') curtailed++;
    if (LOAD_KINDS.has(d.kind)) {
      // the loads' own reports; meters and PDUs measure the same power again
      if (t.freshness === 'fresh' && t.powerW !== null) powerW += t.powerW;
      else powerComplete = false;
    } else if (d.kind === 'meter' && t.freshness === 'fresh' && t.powerW !== null) {
      meteredW = (meteredW ?? 0) + t.powerW;
    }
    return t;
  });
  return {
    ts: new Date(at).toISOString(),
    site: id.site,
    rack: id.rack,
    seq,
    intervalMs,
    summary: { devices: devices.length, online, curtailed, powerW, powerComplete, meteredPowerW: meteredW },
    devices: list,
  };
}

export function stateMessage(
  id: RackIdentity,
  state: RackState,
  since: number,
  commandId: string | null,
  devices: readonly DeviceDriver[],
  readings: ReadonlyMap<string, Reading>,
  signals: readonly SignalStatus[] = [],
  at = Date.now(),
  engine?: { demands: StateMessage['demands']; holdOffUntil: number | null; shed: string[] },
): StateMessage {
  return {
    ts: new Date(at).toISOString(),
    site: id.site,
    rack: id.rack,
    state,
    since: new Date(since).toISOString(),
    commandId,
    devices: devices.map((d) => ({ id: d.id, state: readings.get(d.id)?.state ?? 'unknown' })),
    ...(signals.length > 0 ? { signals: signals.map((x) => ({ id: x.id, raised: x.raised, since: new Date(x.since).toISOString() })) } : {}),
    ...(engine
      ? { demands: engine.demands, holdOffUntil: engine.holdOffUntil === null ? null : new Date(engine.holdOffUntil).toISOString(), shed: engine.shed }
      : {}),
  };
}
