/**
 * What the edge node publishes, as data: the node's metrics (rack level) and
 * each device's, with names, datatypes and fixed aliases (the same in every
 * session, unique within the edge node). Values are computed from the
 * agent's view (readings, engine), and report-by-exception keeps the last
 * values sent to tell what changed.
 */
import type { DeviceDriver, DeviceKind, Reading } from '../../drivers/contract.js';
import type { RackState } from '../../protocol/messages.js';
import type { MetricValue, OutMetric, SparkplugType } from './codec.js';

export interface MetricDef {
  name: string;
  alias: number;
  type: SparkplugType;
}

export const REBIRTH = 'Node Control/Rebirth';
export const RACK_CURTAIL = 'Rack Control/Curtail';
export const RACK_BUDGET = 'Rack Control/Budget W';
export const DEVICE_CURTAIL = 'Control/Curtail';

/** The node's metrics (NBIRTH also carries `bdSeq`, without an alias). */
export const NODE_METRICS = {
  rebirth: { name: REBIRTH, alias: 1, type: 'Boolean' },
  version: { name: 'Properties/Agent Version', alias: 2, type: 'String' },
  writes: { name: 'Properties/Writes Accepted', alias: 3, type: 'Boolean' },
  state: { name: 'Rack/State', alias: 4, type: 'String' },
  powerW: { name: 'Rack/Power W', alias: 5, type: 'Double' },
  demands: { name: 'Rack/Active Demands', alias: 6, type: 'Int32' },
  online: { name: 'Rack/Devices Online', alias: 7, type: 'Int32' },
  curtail: { name: RACK_CURTAIL, alias: 8, type: 'Boolean' },
  budgetW: { name: RACK_BUDGET, alias: 9, type: 'Int32' },
} as const satisfies Record<string, MetricDef>;

export type NodeKey = keyof typeof NODE_METRICS;
export type NodeValues = Record<NodeKey, MetricValue>;

/** Reading fields published per device kind: field name -> metric name (all Double). */
const FIELD_METRICS: Partial<Record<DeviceKind, readonly (readonly [string, string])[]>> = {
  asic: [
    ['hashrateThs', 'Hashrate TH/s'],
    ['temperatureC', 'Temperature C'],
    ['powerTargetW', 'Power Target W'],
  ],
  gpu: [
    ['temperatureC', 'Temperature C'],
    ['powerTargetW', 'Power Target W'],
  ],
  meter: [['frequencyHz', 'Frequency Hz']],
};

/** Aliases of device i: DEVICE_ALIAS_BASE + i * DEVICE_ALIAS_STRIDE + k. */
const DEVICE_ALIAS_BASE = 1000;
const DEVICE_ALIAS_STRIDE = 32;

export interface DeviceMetric extends MetricDef {
  value(r: Reading, curtailHeld: boolean): MetricValue;
}

/** The metrics of one device, in a fixed order; its DBIRTH carries all of them. */
export function deviceMetrics(d: DeviceDriver, index: number): DeviceMetric[] {
  const base = DEVICE_ALIAS_BASE + index * DEVICE_ALIAS_STRIDE;
  const defs: Omit<DeviceMetric, 'alias'>[] = [
    { name: 'State', type: 'String', value: (r) => r.state },
    { name: 'Online', type: 'Boolean', value: (r) => r.online },
    { name: 'Power W', type: 'Double', value: (r) => r.powerW },
    ...(FIELD_METRICS[d.kind] ?? []).map(([field, name]) => ({
      name,
      type: 'Double' as const,
      value: (r: Reading): MetricValue => {
        const v = r.fields[field];
        return typeof v === 'number' && Number.isFinite(v) ? v : null;
      },
    })),
    ...(d.capabilities.curtail ? [{ name: DEVICE_CURTAIL, type: 'Boolean' as const, value: (_r: Reading, held: boolean) => held }] : []),
    { name: 'Properties/Kind', type: 'String', value: () => d.kind },
    { name: 'Properties/Driver', type: 'String', value: () => d.driverId },
  ];
  return defs.map((m, k) => ({ ...m, alias: base + k }));
}

/** Rack power: metered when a meter reads fresh, else the sum of the loads' fresh readings; null when unknown. */
export function rackPowerW(devices: readonly DeviceDriver[], latest: ReadonlyMap<string, Reading>): number | null {
  let metered: number | null = null;
  let loads = 0;
  let complete = true;
  for (const d of devices) {
    const r = latest.get(d.id);
    const fresh = r?.freshness === 'fresh' && r.powerW !== null ? r.powerW : null;
    if (d.kind === 'meter' && fresh !== null) metered = (metered ?? 0) + fresh;
    else if (d.kind === 'asic' || d.kind === 'gpu') {
      if (fresh === null) complete = false;
      else loads += fresh;
    }
  }
  return metered ?? (complete ? loads : null);
}

export interface RackView {
  state: RackState;
  demands: number;
  curtailHeld: boolean;
  budgetW: number;
  writesAccepted: boolean;
  version: string;
}

export function nodeValues(v: RackView, devices: readonly DeviceDriver[], latest: ReadonlyMap<string, Reading>): NodeValues {
  let online = 0;
  for (const d of devices) if (latest.get(d.id)?.online === true) online++;
  return {
    rebirth: false,
    version: v.version,
    writes: v.writesAccepted,
    state: v.state,
    powerW: rackPowerW(devices, latest),
    demands: v.demands,
    online,
    curtail: v.curtailHeld,
    budgetW: v.budgetW,
  };
}

/**
 * Report by exception: remembers the last value sent per alias; `changed`
 * returns the metrics whose value differs (and records them as sent).
 */
export class LastSent {
  private readonly last = new Map<number, MetricValue>();

  clear(): void {
    this.last.clear();
  }

  /** A birth: everything is sent, with names. */
  birth(metrics: readonly { def: MetricDef; value: MetricValue; timestamp: number }[]): OutMetric[] {
    return metrics.map(({ def, value, timestamp }) => {
      this.last.set(def.alias, value);
      return { name: def.name, alias: def.alias, type: def.type, value, timestamp };
    });
  }

  /** Data: only what changed since the last birth or data message, by alias alone. */
  changed(metrics: readonly { def: MetricDef; value: MetricValue; timestamp: number }[]): OutMetric[] {
    const out: OutMetric[] = [];
    for (const { def, value, timestamp } of metrics) {
      if (this.last.has(def.alias) && Object.is(this.last.get(def.alias), value)) continue;
      this.last.set(def.alias, value);
      out.push({ alias: def.alias, type: def.type, value, timestamp });
    }
    return out;
  }

  forget(aliases: readonly number[]): void {
    for (const a of aliases) this.last.delete(a);
  }
}
