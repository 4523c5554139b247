/**
 * Telemetry of a Braiins OS miner, from the gRPC API or, when that is
 * unreachable, from the legacy cgminer-style TCP API (BOSminer on 4028).
 * Pure functions: replies in, Sample out.
 */
import type { DeviceState, FieldValue } from '../contract.js';
import type { CgminerReply } from '../lib/cgminer/client.js';
import { maxOf, mean, num, sectionItems } from '../lib/cgminer/fields.js';
import type {
  GetCoolingStateResponse,
  GetMinerDetailsResponse,
  GetMinerStatsResponse,
  GetTunerStateResponse,
  MinerStatus,
} from './proto.js';

export const LEGACY_COMMANDS = ['summary', 'devs', 'temps', 'fans', 'tunerstatus'] as const;

export interface Parsed {
  state: DeviceState;
  powerW: number | null;
  fields: Record<string, FieldValue>;
}

const ths = (ghs: number | undefined): number | null => (ghs === undefined ? null : Math.round(ghs) / 1000);
const finite = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** "MINER_STATUS_PAUSED" -> "paused". */
function statusName(s: MinerStatus | undefined): string | null {
  return s ? s.replace(/^MINER_STATUS_/, '').toLowerCase() : null;
}

export function stateOf(status: MinerStatus | undefined, hashrateThs: number | null, powerW: number | null, sleepPowerMaxW: number): DeviceState {
  const hashing = hashrateThs !== null && hashrateThs > 0;
  const asleep = !hashing && powerW !== null && powerW <= sleepPowerMaxW;
  switch (status) {
    case 'MINER_STATUS_PAUSED':
      return asleep ? 'curtailed' : 'transitioning';
    case 'MINER_STATUS_NORMAL':
      return hashing ? 'running' : 'transitioning';
    case undefined:
      // the legacy API has no pause flag: judge by hashrate and power alone
      return hashing ? 'running' : asleep ? 'curtailed' : 'unknown';
    case 'MINER_STATUS_UNSPECIFIED':
    case 'MINER_STATUS_NOT_STARTED':
    case 'MINER_STATUS_SUSPENDED':
    case 'MINER_STATUS_RESTRICTED':
      return hashing ? 'running' : 'unknown';
  }
}

export function fromGrpc(
  r: {
    details: GetMinerDetailsResponse;
    stats: GetMinerStatsResponse;
    cooling: GetCoolingStateResponse;
    tuner: GetTunerStateResponse | undefined;
  },
  sleepPowerMaxW: number,
): Parsed {
  const rh = r.stats.miner_stats?.real_hashrate;
  const ghs = finite(rh?.last_5s?.gigahash_per_second) ?? finite(rh?.last_15s?.gigahash_per_second) ?? finite(rh?.last_1m?.gigahash_per_second);
  const hashrateThs = ths(ghs ?? (rh ? 0 : undefined));
  const powerW = finite(r.stats.power_stats?.approximated_consumption?.watt) ?? null;
  const rpm = mean((r.cooling.fans ?? []).map((f) => finite(f.rpm)));
  const target = finite(r.tuner?.power_target_mode_state?.current_target?.watt);
  return {
    state: stateOf(r.details.status, hashrateThs, powerW, sleepPowerMaxW),
    powerW,
    fields: {
      hashrateThs,
      nominalHashrateThs: ths(finite(r.stats.miner_stats?.nominal_hashrate?.gigahash_per_second)),
      temperatureC: finite(r.cooling.highest_temperature?.temperature?.degree_c) ?? null,
      fanRpm: rpm === undefined ? null : Math.round(rpm),
      minerStatus: statusName(r.details.status),
      powerTargetW: target ?? null,
      tunerState: r.tuner?.overall_tuner_state?.replace(/^TUNER_STATE_/, '').toLowerCase() ?? null,
      model: r.details.miner_identity?.miner_model || r.details.miner_identity?.name || null,
      firmware: r.details.bos_version?.current ?? null,
      source: 'grpc',
    },
  };
}

export function fromLegacy(r: Record<string, CgminerReply>, sleepPowerMaxW: number): Parsed {
  const summary = sectionItems(r.summary, 'SUMMARY')[0];
  const tuner = sectionItems(r.tunerstatus, 'TUNERSTATUS')[0];
  const temps = sectionItems(r.temps, 'TEMPS');
  const fans = sectionItems(r.fans, 'FANS');
  const devs = sectionItems(r.devs, 'DEVS');
  const mhs = num(summary, 'MHS 5s', 'MHS 1m', 'MHS av');
  const ghs = mhs === undefined ? num(summary, 'GHS 5s', 'GHS 1m', 'GHS av') : mhs / 1000;
  const hashrateThs = ths(ghs);
  const powerW = num(tuner, 'ApproximateMinerPowerConsumption') ?? null;
  const rpm = mean(fans.map((f) => num(f, 'RPM')));
  return {
    state: stateOf(undefined, hashrateThs, powerW, sleepPowerMaxW),
    powerW,
    fields: {
      hashrateThs,
      temperatureC: maxOf(temps.map((t) => maxOf([num(t, 'Chip'), num(t, 'Board')]))) ?? null,
      fanRpm: rpm === undefined ? null : Math.round(rpm),
      powerLimitW: num(tuner, 'PowerLimit') ?? null,
      boards: devs.length,
      source: 'legacy-api',
    },
  };
}
