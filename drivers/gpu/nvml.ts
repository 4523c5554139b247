/**
 * Our own NVML binding (koffi FFI over libnvidia-ml.so.1): the subset the GPU
 * driver needs, typed, synchronous (NVML calls are short and NVML is
 * thread-safe; LocalGpuBackend wraps them in async methods).
 *
 * State: a loaded library per path with an init reference count — the first
 * openNvml() loads the library and calls nvmlInit_v2, the last close() calls
 * nvmlShutdown and unloads it. Nothing else is global; scratch buffers belong
 * to each session. Powers are milliwatts, energy millijoules, as NVML reports.
 *
 * Failures are RackpilotError (nvml-errors.ts): library missing -> UNSUPPORTED
 * with how to install the driver, symbol missing -> UNSUPPORTED (old driver),
 * NO_PERMISSION -> AUTH_FAILED (root / CAP_SYS_ADMIN), GPU_IS_LOST ->
 * UNREACHABLE, set limit outside the constraints -> CONFIG_INVALID.
 */
import koffi, { type LibraryHandle } from 'koffi';
import { RackpilotError } from '../lib/errors.js';
import { libraryNotFound, NVML_RETURN, nvmlError, symbolMissing } from './nvml-errors.js';

export { NVML_RETURN } from './nvml-errors.js';

export const NVML_DEFAULT_LIBRARY = 'libnvidia-ml.so.1';
export const NVML_FI_DEV_POWER_AVERAGE = 185;
export const NVML_FI_DEV_POWER_INSTANT = 186;
export const NVML_TEMPERATURE_GPU = 0;

type Spec = Parameters<typeof koffi.out>[0];

/** nvmlDevice_t: an opaque pointer (koffi 3 gives pointers as BigInt). */
export type NvmlDevice = bigint;

// Types are registered once per process; they hold no library state.
const Device = koffi.pointer(koffi.opaque());
/** nvmlFieldValue_t exactly as in nvml.h (40 bytes on LP64). */
const FieldValue = koffi.struct({
  fieldId: 'uint32',
  scopeId: 'uint32',
  timestamp: 'int64',
  latencyUsec: 'int64',
  valueType: 'int',
  nvmlReturn: 'int',
  value: koffi.union({ dVal: 'double', siVal: 'int', uiVal: 'uint32', ulVal: 'ulong', ullVal: 'uint64', sllVal: 'int64' }),
});
const FV_SIZE = koffi.sizeof(FieldValue);
const FV_TYPE = koffi.offsetof(FieldValue, 'valueType');
const FV_RET = koffi.offsetof(FieldValue, 'nvmlReturn');
const FV_VALUE = koffi.offsetof(FieldValue, 'value');
const Utilization = koffi.struct({ gpu: 'uint32', memory: 'uint32' });

const NAME_BUFFER = 96; // NVML_DEVICE_NAME_V2_BUFFER_SIZE
const UUID_BUFFER = 96; // >= NVML_DEVICE_UUID_V2_BUFFER_SIZE (96)
const SERIAL_BUFFER = 30; // NVML_DEVICE_SERIAL_BUFFER_SIZE

type Ret = number;
type U32Out = (d: NvmlDevice, out: Uint32Array) => Ret;
type StrOut = (d: NvmlDevice, buf: Buffer, len: number) => Ret;
type HandleOut = [unknown];

interface Fns {
  init: () => Ret;
  shutdown: () => Ret;
  errorString: (ret: number) => string | null;
  count: (out: Uint32Array) => Ret;
  byIndex: (index: number, out: HandleOut) => Ret;
  byUuid: (uuid: string, out: HandleOut) => Ret;
  name: StrOut;
  uuid: StrOut;
  serial: StrOut;
  powerUsage: U32Out;
  /** Absent on old drivers; reads fall back to powerUsage. */
  fieldValues: ((d: NvmlDevice, n: number, values: Buffer) => Ret) | null;
  enforcedLimit: U32Out;
  limit: U32Out;
  defaultLimit: U32Out;
  constraints: (d: NvmlDevice, min: Uint32Array, max: Uint32Array) => Ret;
  setLimit: (d: NvmlDevice, mw: number) => Ret;
  setLockedClocks: ((d: NvmlDevice, min: number, max: number) => Ret) | null;
  resetLockedClocks: ((d: NvmlDevice) => Ret) | null;
  energy: ((d: NvmlDevice, out: BigUint64Array) => Ret) | null;
  temperature: (d: NvmlDevice, sensor: number, out: Uint32Array) => Ret;
  utilization: (d: NvmlDevice, out: Uint32Array) => Ret;
}

interface LoadedNvml {
  path: string;
  lib: LibraryHandle;
  fns: Fns;
  refs: number;
}

/** The only module state: loaded libraries (by path) and their init counts. */
const loaded = new Map<string, LoadedNvml>();

function bind(path: string, lib: LibraryHandle): Fns {
  const req = <T>(name: string, ret: Spec, args: Spec[]): T => {
    try {
      return lib.func(name, ret, args) as T;
    } catch (err) {
      throw symbolMissing(path, name, err);
    }
  };
  const opt = <T>(name: string, ret: Spec, args: Spec[]): T | null => {
    try {
      return lib.func(name, ret, args) as T;
    } catch {
      return null;
    }
  };
  const u32 = 'uint32_t *'; // typed arrays are passed in place (no copy)
  return {
    init: req('nvmlInit_v2', 'int', []),
    shutdown: req('nvmlShutdown', 'int', []),
    errorString: req('nvmlErrorString', 'const char *', ['int']),
    count: req('nvmlDeviceGetCount_v2', 'int', [u32]),
    byIndex: req('nvmlDeviceGetHandleByIndex_v2', 'int', ['uint32_t', koffi.out(koffi.pointer(Device))]),
    byUuid: req('nvmlDeviceGetHandleByUUID', 'int', ['const char *', koffi.out(koffi.pointer(Device))]),
    name: req('nvmlDeviceGetName', 'int', [Device, 'uint8_t *', 'uint32_t']),
    uuid: req('nvmlDeviceGetUUID', 'int', [Device, 'uint8_t *', 'uint32_t']),
    serial: req('nvmlDeviceGetSerial', 'int', [Device, 'uint8_t *', 'uint32_t']),
    powerUsage: req('nvmlDeviceGetPowerUsage', 'int', [Device, u32]),
    fieldValues: opt('nvmlDeviceGetFieldValues', 'int', [Device, 'int', koffi.pointer(FieldValue)]),
    enforcedLimit: req('nvmlDeviceGetEnforcedPowerLimit', 'int', [Device, u32]),
    limit: req('nvmlDeviceGetPowerManagementLimit', 'int', [Device, u32]),
    defaultLimit: req('nvmlDeviceGetPowerManagementDefaultLimit', 'int', [Device, u32]),
    constraints: req('nvmlDeviceGetPowerManagementLimitConstraints', 'int', [Device, u32, u32]),
    setLimit: req('nvmlDeviceSetPowerManagementLimit', 'int', [Device, 'uint32_t']),
    setLockedClocks: opt('nvmlDeviceSetGpuLockedClocks', 'int', [Device, 'uint32_t', 'uint32_t']),
    resetLockedClocks: opt('nvmlDeviceResetGpuLockedClocks', 'int', [Device]),
    energy: opt('nvmlDeviceGetTotalEnergyConsumption', 'int', [Device, 'uint64_t *']),
    temperature: req('nvmlDeviceGetTemperature', 'int', [Device, 'int', u32]),
    utilization: req('nvmlDeviceGetUtilizationRates', 'int', [Device, koffi.pointer(Utilization)]),
  };
}

export interface NvmlOptions {
  /** Path or soname of the NVML library (default libnvidia-ml.so.1, found by the dynamic loader). */
  libraryPath?: string;
}

/**
 * Loads NVML (first session for this path) and takes an init reference.
 * Throws UNSUPPORTED when the library or a required symbol is missing.
 */
export function openNvml(options: NvmlOptions = {}): Nvml {
  const path = options.libraryPath ?? NVML_DEFAULT_LIBRARY;
  let entry = loaded.get(path);
  if (!entry) {
    let lib: LibraryHandle;
    try {
      lib = koffi.load(path);
    } catch (err) {
      throw libraryNotFound(path, err);
    }
    try {
      entry = { path, lib, fns: bind(path, lib), refs: 0 };
    } catch (err) {
      lib.unload();
      throw err;
    }
    loaded.set(path, entry);
  }
  if (entry.refs === 0) {
    const ret = entry.fns.init();
    if (ret !== NVML_RETURN.SUCCESS) {
      loaded.delete(path);
      const text = entry.fns.errorString(ret) ?? undefined;
      entry.lib.unload();
      throw nvmlError(ret, { op: 'nvmlInit_v2', text, context: { libraryPath: path } });
    }
  }
  entry.refs++;
  return new Nvml(entry);
}

export interface PowerConstraints {
  minMw: number;
  maxMw: number;
}

export interface Utilization {
  gpuPct: number;
  memoryPct: number;
}

/** One init reference on a loaded NVML; close() gives it back. */
export class Nvml {
  private closed = false;
  private readonly u32 = new Uint32Array(2);
  private readonly u32b = new Uint32Array(1);
  private readonly u64 = new BigUint64Array(1);
  private readonly fields = Buffer.alloc(FV_SIZE * 2);
  private readonly str = Buffer.alloc(Math.max(NAME_BUFFER, UUID_BUFFER, SERIAL_BUFFER));
  private readonly handleOut: HandleOut = [null];
  /** Devices whose NVML_FI_DEV_POWER_INSTANT read said "not supported". */
  private readonly noInstant = new Set<NvmlDevice>();

  /** @internal use openNvml() */
  constructor(private readonly entry: LoadedNvml) {}

  get libraryPath(): string {
    return this.entry.path;
  }

  /** False on old drivers without nvmlDeviceGetFieldValues: power reads use nvmlDeviceGetPowerUsage. */
  get hasFieldValues(): boolean {
    return this.entry.fns.fieldValues !== null;
  }

  /** Gives back this session's init reference; the last one shuts NVML down and unloads it. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const e = this.entry;
    e.refs--;
    if (e.refs > 0) return;
    loaded.delete(e.path);
    e.fns.shutdown(); // nothing useful to do with a failure here
    e.lib.unload();
  }

  private fns(): Fns {
    if (this.closed) throw new RackpilotError('NOT_STARTED', 'NVML session is closed', { libraryPath: this.entry.path });
    return this.entry.fns;
  }

  private check(ret: Ret, op: string, invalidHint?: string): void {
    if (ret === NVML_RETURN.SUCCESS) return;
    const text = this.entry.fns.errorString(ret) ?? undefined;
    throw nvmlError(ret, { op, text, invalidHint });
  }

  private readU32(fn: U32Out, d: NvmlDevice, op: string): number {
    this.check(fn(d, this.u32b), op);
    return this.u32b[0] ?? 0;
  }

  private readStr(fn: StrOut, d: NvmlDevice, len: number, op: string): string {
    this.str.fill(0, 0, len);
    this.check(fn(d, this.str, len), op);
    const end = this.str.indexOf(0);
    return this.str.toString('utf8', 0, end < 0 || end > len ? len : end);
  }

  deviceCount(): number {
    const f = this.fns();
    this.check(f.count(this.u32b), 'nvmlDeviceGetCount_v2');
    return this.u32b[0] ?? 0;
  }

  handleByIndex(index: number): NvmlDevice {
    this.check(this.fns().byIndex(index, this.handleOut), 'nvmlDeviceGetHandleByIndex_v2');
    return this.handleOut[0] as NvmlDevice;
  }

  handleByUuid(uuid: string): NvmlDevice {
    this.check(this.fns().byUuid(uuid, this.handleOut), 'nvmlDeviceGetHandleByUUID');
    return this.handleOut[0] as NvmlDevice;
  }

  name(d: NvmlDevice): string {
    return this.readStr(this.fns().name, d, NAME_BUFFER, 'nvmlDeviceGetName');
  }

  uuid(d: NvmlDevice): string {
    return this.readStr(this.fns().uuid, d, UUID_BUFFER, 'nvmlDeviceGetUUID');
  }

  /** Board serial; NOT_SUPPORTED on consumer boards (UNSUPPORTED error). */
  serial(d: NvmlDevice): string {
    return this.readStr(this.fns().serial, d, SERIAL_BUFFER, 'nvmlDeviceGetSerial');
  }

  /**
   * Reads one power field; null when the driver lacks the function or the
   * field (NOT_SUPPORTED / INVALID_ARGUMENT for the field). Other errors throw.
   */
  private powerField(d: NvmlDevice, fieldId: number): number | null {
    const fv = this.fns().fieldValues;
    if (!fv) return null;
    const b = this.fields;
    b.fill(0, 0, FV_SIZE);
    b.writeUInt32LE(fieldId, 0);
    const ret = fv(d, 1, b);
    if (ret === NVML_RETURN.NOT_SUPPORTED) return null;
    this.check(ret, 'nvmlDeviceGetFieldValues');
    const fret = b.readInt32LE(FV_RET);
    if (fret === NVML_RETURN.NOT_SUPPORTED || fret === NVML_RETURN.INVALID_ARGUMENT) return null;
    this.check(fret, `nvmlDeviceGetFieldValues(field ${fieldId})`);
    return decodeValue(b, b.readInt32LE(FV_TYPE), FV_VALUE);
  }

  /** Instantaneous power (field 186), else nvmlDeviceGetPowerUsage (a 1 s average on Ampere and newer). */
  powerInstantMw(d: NvmlDevice): number {
    if (!this.noInstant.has(d)) {
      const v = this.powerField(d, NVML_FI_DEV_POWER_INSTANT);
      if (v !== null) return v;
      this.noInstant.add(d);
    }
    return this.readU32(this.fns().powerUsage, d, 'nvmlDeviceGetPowerUsage');
  }

  /** 1 s average power (field 185); null where the driver cannot say. */
  powerAverageMw(d: NvmlDevice): number | null {
    return this.powerField(d, NVML_FI_DEV_POWER_AVERAGE);
  }

  /** nvmlDeviceGetPowerUsage as is. */
  powerUsageMw(d: NvmlDevice): number {
    return this.readU32(this.fns().powerUsage, d, 'nvmlDeviceGetPowerUsage');
  }

  /** The limit after every limiter (including out-of-band): read it back to confirm a cap. */
  enforcedLimitMw(d: NvmlDevice): number {
    return this.readU32(this.fns().enforcedLimit, d, 'nvmlDeviceGetEnforcedPowerLimit');
  }

  limitMw(d: NvmlDevice): number {
    return this.readU32(this.fns().limit, d, 'nvmlDeviceGetPowerManagementLimit');
  }

  defaultLimitMw(d: NvmlDevice): number {
    return this.readU32(this.fns().defaultLimit, d, 'nvmlDeviceGetPowerManagementDefaultLimit');
  }

  constraints(d: NvmlDevice): PowerConstraints {
    const max = this.u32b;
    const min = this.u32.subarray(0, 1);
    this.check(this.fns().constraints(d, min, max), 'nvmlDeviceGetPowerManagementLimitConstraints');
    return { minMw: min[0] ?? 0, maxMw: max[0] ?? 0 };
  }

  /**
   * Sets the software power limit (root or CAP_SYS_ADMIN; not persistent
   * across reboot or driver reload). Outside the constraints: CONFIG_INVALID
   * naming them.
   */
  setLimitMw(d: NvmlDevice, mw: number): void {
    const ret = this.fns().setLimit(d, mw);
    if (ret === NVML_RETURN.INVALID_ARGUMENT) {
      let hint = `power limit ${mw} mW rejected`;
      try {
        const c = this.constraints(d);
        hint = `power limit ${(mw / 1000).toFixed(1)} W is outside the GPU's constraints ${c.minMw / 1000}..${c.maxMw / 1000} W`;
      } catch {
        // keep the plain hint
      }
      this.check(ret, 'nvmlDeviceSetPowerManagementLimit', hint);
    }
    this.check(ret, 'nvmlDeviceSetPowerManagementLimit');
  }

  /** Locks GPU clocks to [minMhz, maxMhz] (root, Volta and newer). */
  setLockedClocks(d: NvmlDevice, minMhz: number, maxMhz: number): void {
    const fn = this.fns().setLockedClocks;
    if (!fn) throw symbolMissing(this.entry.path, 'nvmlDeviceSetGpuLockedClocks');
    this.check(fn(d, minMhz, maxMhz), 'nvmlDeviceSetGpuLockedClocks', `locked clocks ${minMhz}..${maxMhz} MHz rejected (min > max, or outside the GPU's supported clocks)`);
  }

  resetLockedClocks(d: NvmlDevice): void {
    const fn = this.fns().resetLockedClocks;
    if (!fn) throw symbolMissing(this.entry.path, 'nvmlDeviceResetGpuLockedClocks');
    this.check(fn(d), 'nvmlDeviceResetGpuLockedClocks');
  }

  /** Energy since the driver was loaded, mJ (Volta and newer). */
  totalEnergyMj(d: NvmlDevice): number {
    const fn = this.fns().energy;
    if (!fn) throw symbolMissing(this.entry.path, 'nvmlDeviceGetTotalEnergyConsumption');
    this.check(fn(d, this.u64), 'nvmlDeviceGetTotalEnergyConsumption');
    return Number(this.u64[0] ?? 0n);
  }

  /** GPU die temperature (NVML_TEMPERATURE_GPU), °C. */
  temperatureC(d: NvmlDevice): number {
    this.check(this.fns().temperature(d, NVML_TEMPERATURE_GPU, this.u32b), 'nvmlDeviceGetTemperature');
    return this.u32b[0] ?? 0;
  }

  utilization(d: NvmlDevice): Utilization {
    this.check(this.fns().utilization(d, this.u32), 'nvmlDeviceGetUtilizationRates');
    return { gpuPct: this.u32[0] ?? 0, memoryPct: this.u32[1] ?? 0 };
  }
}

/** nvmlValue_t by nvmlValueType_t (0 double, 1 uint, 2 ulong, 3 ull, 4 sll, 5 int, 6 ushort). */
function decodeValue(b: Buffer, type: number, off: number): number {
  switch (type) {
    case 0:
      return b.readDoubleLE(off);
    case 1:
      return b.readUInt32LE(off);
    case 2:
    case 3:
      return Number(b.readBigUInt64LE(off));
    case 4:
      return Number(b.readBigInt64LE(off));
    case 5:
      return b.readInt32LE(off);
    case 6:
      return b.readUInt16LE(off);
    default:
      throw new RackpilotError('MALFORMED_RESPONSE', `nvmlDeviceGetFieldValues returned unknown value type ${type}`, { valueType: type });
  }
}
