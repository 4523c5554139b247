/**
 * The Braiins OS Public API (gRPC, package `braiins.bos.v1`) as this driver
 * uses it: the .proto subset under drivers/braiins/proto/ is loaded once per
 * process, and the shapes below describe the decoded messages (field names
 * kept in snake_case as on the wire, 64-bit integers as numbers, enums as
 * their names, absent messages as undefined).
 */
import { join } from 'node:path';
import { packageRoot } from '../lib/package-root.js';
import { loadSync, type MethodDefinition, type PackageDefinition } from '@grpc/proto-loader';

const PROTO_FILES = [
  'bos/version.proto',
  'bos/v1/authentication.proto',
  'bos/v1/actions.proto',
  'bos/v1/miner.proto',
  'bos/v1/cooling.proto',
  'bos/v1/performance.proto',
  'bos/v1/configuration.proto',
];

/**
 * drivers/braiins/proto/ under the package root (tsc does not copy .proto
 * files; package.json "files" ships them).
 */
export function protoDir(): string {
  try {
    return join(packageRoot(import.meta.url), 'drivers', 'braiins', 'proto');
  } catch (err) {
    throw new Error(`braiins driver: cannot locate the .proto files (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }
}

let cached: PackageDefinition | undefined;

export function braiinsPackage(): PackageDefinition {
  cached ??= loadSync(PROTO_FILES, {
    includeDirs: [protoDir()],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: false,
    oneofs: true,
  });
  return cached;
}

export type ServiceName =
  | 'braiins.bos.ApiVersionService'
  | 'braiins.bos.v1.AuthenticationService'
  | 'braiins.bos.v1.ActionsService'
  | 'braiins.bos.v1.MinerService'
  | 'braiins.bos.v1.CoolingService'
  | 'braiins.bos.v1.PerformanceService'
  | 'braiins.bos.v1.ConfigurationService';

export type AnyMethod = MethodDefinition<object, object>;

/** The method's definition (path, serializers) from the loaded package. */
export function methodOf(service: ServiceName, method: string): AnyMethod {
  const svc = braiinsPackage()[service];
  const m = svc && !('format' in svc) ? (svc as Record<string, AnyMethod>)[method] : undefined;
  if (!m) throw new Error(`braiins proto subset lacks ${service}/${method}`);
  return m;
}

// ---- decoded message shapes (only the fields this driver reads) ----

export interface Power {
  watt?: number;
}
export interface GigaHashrate {
  gigahash_per_second?: number;
}
export interface Temperature {
  degree_c?: number;
}

export type MinerStatus =
  | 'MINER_STATUS_UNSPECIFIED'
  | 'MINER_STATUS_NOT_STARTED'
  | 'MINER_STATUS_NORMAL'
  | 'MINER_STATUS_PAUSED'
  | 'MINER_STATUS_SUSPENDED'
  | 'MINER_STATUS_RESTRICTED';

export interface LoginResponse {
  token?: string;
  timeout_s?: number;
}

export interface GetMinerDetailsResponse {
  uid?: string;
  miner_identity?: { name?: string; miner_model?: string };
  bos_version?: { current?: string; major?: string; bos_plus?: boolean };
  hostname?: string;
  sticker_hashrate?: GigaHashrate;
  bosminer_uptime_s?: number;
  status?: MinerStatus;
}

export interface GetMinerStatsResponse {
  miner_stats?: {
    real_hashrate?: { last_5s?: GigaHashrate; last_15s?: GigaHashrate; last_30s?: GigaHashrate; last_1m?: GigaHashrate };
    nominal_hashrate?: GigaHashrate;
  };
  power_stats?: { approximated_consumption?: Power };
}

export interface GetCoolingStateResponse {
  fans?: { position?: number; rpm?: number; target_speed_ratio?: number }[];
  highest_temperature?: { id?: number; location?: string; temperature?: Temperature };
}

export interface GetTunerStateResponse {
  overall_tuner_state?: string;
  power_target_mode_state?: { current_target?: Power };
  hashrate_target_mode_state?: { current_target?: { terahash_per_second?: number } };
  mode_state?: string;
}

export interface GetConstraintsResponse {
  tuner_constraints?: { power_target?: { default?: Power; min?: Power; max?: Power } };
  hashboards_constraints?: { quick_ramping_time_s?: { default?: number; min?: number; max?: number } };
}

export interface SetPowerTargetResponse {
  power_target?: Power;
}

export interface QuickRampingResponse {
  up_s?: number;
  down_s?: number;
}

export const SAVE_AND_APPLY = 'SAVE_ACTION_SAVE_AND_APPLY';
