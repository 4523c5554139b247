/**
 * What the GPU driver needs from a GPU server, whichever way it is reached:
 * `LocalGpuBackend` (nvml.ts, the koffi binding, on the GPU server itself)
 * or the gpu-node client (the rack controller talking to `rackpilot
 * gpu-node` on the GPU server). Powers are in milliwatts as NVML reports them.
 * Every method may throw RackpilotError (codes from drivers/lib/errors.ts;
 * NVML return codes are mapped in nvml.ts).
 */
export interface GpuInfo {
  index: number;
  uuid: string;
  name: string;
  serial: string | null;
  /** Set when this GPU could not be opened while listing (e.g. GPU_IS_LOST): the error; uuid may then be ''. */
  lost?: string;
}

export interface GpuPowerState {
  /** Instantaneous power (NVML_FI_DEV_POWER_INSTANT), falling back to nvmlDeviceGetPowerUsage. */
  powerMw: number;
  /** 1-second average (NVML_FI_DEV_POWER_AVERAGE) when available, else null. */
  averagePowerMw: number | null;
  /** nvmlDeviceGetPowerManagementLimit: the limit set by software. */
  limitMw: number;
  /** nvmlDeviceGetEnforcedPowerLimit: after every limiter; read this back to confirm a cap. */
  enforcedLimitMw: number;
  defaultLimitMw: number;
  minLimitMw: number;
  maxLimitMw: number;
  /** Total energy since driver load, mJ. */
  energyMj: number;
  temperatureC: number | null;
  utilizationPct: number | null;
}

export interface GpuBackend {
  /** Opens the backend (loads NVML / checks the node is reachable). */
  open(): Promise<void>;
  close(): Promise<void>;
  list(): Promise<GpuInfo[]>;
  read(uuid: string): Promise<GpuPowerState>;
  setPowerLimit(uuid: string, mw: number): Promise<void>;
  /** Locks GPU clocks (MHz) while capped; optional on the hardware side (Volta+ and root). */
  setLockedClocks(uuid: string, minMhz: number, maxMhz: number): Promise<void>;
  resetLockedClocks(uuid: string): Promise<void>;
}
