/**
 * LocalGpuBackend: the GPU driver's backend when the agent (or `rackpilot
 * gpu-node`) runs on the GPU server itself, over our NVML binding.
 *
 * Constructing it does no I/O; open() loads NVML. The methods are async
 * wrappers around the synchronous FFI calls (each is microseconds to about a
 * millisecond on real GPUs; NVML is thread-safe), so errors arrive as
 * rejections with RackpilotError and a `gpu` field in their context.
 */
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import type { GpuBackend, GpuInfo, GpuPowerState } from './backend.js';
import { openNvml, type Nvml, type NvmlDevice, type NvmlOptions } from './nvml.js';

export class LocalGpuBackend implements GpuBackend {
  private nvml: Nvml | null = null;
  /** UUID -> handle; handles stay valid while NVML is initialised. */
  private readonly handles = new Map<string, NvmlDevice>();

  constructor(private readonly options: NvmlOptions = {}) {}

  open(): Promise<void> {
    return settle(() => {
      this.nvml ??= openNvml(this.options);
    });
  }

  close(): Promise<void> {
    return settle(() => {
      this.handles.clear();
      this.nvml?.close();
      this.nvml = null;
    });
  }

  private session(): Nvml {
    if (!this.nvml) throw new RackpilotError('NOT_STARTED', 'local GPU backend is not open: call open() first');
    return this.nvml;
  }

  private handle(uuid: string): NvmlDevice {
    let h = this.handles.get(uuid);
    if (h === undefined) {
      h = this.session().handleByUuid(uuid);
      this.handles.set(uuid, h);
    }
    return h;
  }

  /** Runs one GPU's calls, adding the GPU to any error's message and context. */
  private onGpu<T>(uuid: string, fn: (n: Nvml, d: NvmlDevice) => T): Promise<T> {
    try {
      return Promise.resolve(fn(this.session(), this.handle(uuid)));
    } catch (err) {
      const e = toRackpilotError(err, { gpu: uuid });
      if (e.code === 'UNREACHABLE') this.handles.delete(uuid); // a lost GPU's handle is not reused
      return Promise.reject(new RackpilotError(e.code, `GPU ${uuid}: ${e.message}`, { ...e.context, gpu: uuid }, { cause: e }));
    }
  }

  list(): Promise<GpuInfo[]> {
    return settle(() => {
      const n = this.session();
      const out: GpuInfo[] = [];
      for (let index = 0; index < n.deviceCount(); index++) {
        try {
          const d = n.handleByIndex(index);
          const uuid = n.uuid(d);
          this.handles.set(uuid, d);
          out.push({ index, uuid, name: n.name(d), serial: orNull(() => n.serial(d)) });
        } catch (err) {
          // one lost GPU must not hide the others: list it, marked, with the error
          const e = toRackpilotError(err);
          out.push({ index, uuid: '', name: '', serial: null, lost: `${e.code}: ${e.message}` });
        }
      }
      return out;
    });
  }

  read(uuid: string): Promise<GpuPowerState> {
    return this.onGpu(uuid, (n, d) => {
      const c = n.constraints(d);
      const util = orNull(() => n.utilization(d).gpuPct);
      return {
        powerMw: n.powerInstantMw(d),
        averagePowerMw: n.powerAverageMw(d),
        limitMw: n.limitMw(d),
        enforcedLimitMw: n.enforcedLimitMw(d),
        defaultLimitMw: n.defaultLimitMw(d),
        minLimitMw: c.minMw,
        maxLimitMw: c.maxMw,
        energyMj: n.totalEnergyMj(d),
        temperatureC: orNull(() => n.temperatureC(d)),
        utilizationPct: util,
      };
    });
  }

  setPowerLimit(uuid: string, mw: number): Promise<void> {
    return this.onGpu(uuid, (n, d) => n.setLimitMw(d, mw));
  }

  setLockedClocks(uuid: string, minMhz: number, maxMhz: number): Promise<void> {
    return this.onGpu(uuid, (n, d) => n.setLockedClocks(d, minMhz, maxMhz));
  }

  resetLockedClocks(uuid: string): Promise<void> {
    return this.onGpu(uuid, (n, d) => n.resetLockedClocks(d));
  }
}

/** The value, or null when this GPU does not support the read (UNSUPPORTED); other errors throw. */
function orNull<T>(fn: () => T): T | null {
  try {
    return fn();
  } catch (err) {
    if (err instanceof RackpilotError && err.code === 'UNSUPPORTED') return null;
    throw err;
  }
}

/** Runs synchronous FFI work, turning a throw into a rejection. */
function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(toRackpilotError(err));
  }
}
