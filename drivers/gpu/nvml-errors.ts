/**
 * NVML return codes (nvml.h, nvmlReturn_t) and their mapping to
 * RackpilotError: what failed, on which call, and what to do about it.
 */
import { RackpilotError, type ErrorCode, type ErrorContext } from '../lib/errors.js';

/** The nvmlReturn_t values the binding names; any other code maps to DEVICE_ERROR. */
export const NVML_RETURN = {
  SUCCESS: 0,
  UNINITIALIZED: 1,
  INVALID_ARGUMENT: 2,
  NOT_SUPPORTED: 3,
  NO_PERMISSION: 4,
  NOT_FOUND: 6,
  INSUFFICIENT_SIZE: 7,
  DRIVER_NOT_LOADED: 9,
  TIMEOUT: 10,
  GPU_IS_LOST: 15,
  LIB_RM_VERSION_MISMATCH: 18,
  UNKNOWN: 999,
} as const;

const NAMES = new Map<number, string>(Object.entries(NVML_RETURN).map(([k, v]) => [v, k]));

/** "NVML_ERROR_NO_PERMISSION (4)" */
export function nvmlReturnName(ret: number): string {
  const n = NAMES.get(ret);
  return n === undefined ? `nvmlReturn ${ret}` : `NVML_${n === 'SUCCESS' ? '' : 'ERROR_'}${n} (${ret})`;
}

export interface NvmlCallInfo {
  /** The NVML function that failed, e.g. "nvmlDeviceSetPowerManagementLimit". */
  op: string;
  /** nvmlErrorString(ret), when the library could say. */
  text?: string;
  /** Extra words for INVALID_ARGUMENT (e.g. the constraints of a set limit). */
  invalidHint?: string;
  context?: ErrorContext;
}

function codeAndAdvice(ret: number, info: NvmlCallInfo): [ErrorCode, string] {
  switch (ret) {
    case NVML_RETURN.NO_PERMISSION:
      return info.op.startsWith('nvmlDeviceSet') || info.op.startsWith('nvmlDeviceReset')
        ? ['AUTH_FAILED', 'setting power limits and locked clocks needs root (or CAP_SYS_ADMIN): run the agent / gpu-node as root or grant it CAP_SYS_ADMIN']
        : ['AUTH_FAILED', 'this process may not read it: check the permissions of /dev/nvidia*'];
    case NVML_RETURN.GPU_IS_LOST:
      return ['UNREACHABLE', 'the GPU fell off the bus: see dmesg (Xid 79); the GPU needs a reset (nvidia-smi -r) or the host a reboot'];
    case NVML_RETURN.NOT_SUPPORTED:
      return ['UNSUPPORTED', 'this GPU or driver does not support it'];
    case NVML_RETURN.UNINITIALIZED:
      return ['NOT_STARTED', 'NVML is not initialised (was the Nvml session closed?)'];
    case NVML_RETURN.INVALID_ARGUMENT:
      return [info.invalidHint ? 'CONFIG_INVALID' : 'DEVICE_ERROR', info.invalidHint ?? 'NVML rejected an argument'];
    case NVML_RETURN.NOT_FOUND:
      return ['DEVICE_ERROR', 'no such GPU on this host (check the UUID with nvidia-smi -L)'];
    case NVML_RETURN.DRIVER_NOT_LOADED:
      return ['UNSUPPORTED', 'the NVIDIA kernel driver is not loaded (modprobe nvidia, or install the driver)'];
    case NVML_RETURN.LIB_RM_VERSION_MISMATCH:
      return ['UNSUPPORTED', 'libnvidia-ml and the loaded kernel driver differ in version: reboot after a driver upgrade'];
    case NVML_RETURN.TIMEOUT:
      return ['READ_TIMEOUT', 'the driver timed out; try again'];
    default:
      return ['DEVICE_ERROR', 'the driver reported an error'];
  }
}

/** The RackpilotError for a failed NVML call. */
export function nvmlError(ret: number, info: NvmlCallInfo): RackpilotError {
  const [code, advice] = codeAndAdvice(ret, info);
  const why = info.text ? `${nvmlReturnName(ret)}: ${info.text}` : nvmlReturnName(ret);
  return new RackpilotError(code, `${info.op} failed with ${why}; ${advice}`, { ...info.context, op: info.op, nvmlReturn: ret });
}

/** libnvidia-ml.so.1 could not be loaded. */
export function libraryNotFound(path: string, cause: unknown): RackpilotError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new RackpilotError(
    'UNSUPPORTED',
    `NVML library not found or not loadable (${path}): install the NVIDIA driver ` +
      `(e.g. "apt-get install nvidia-driver-<version>" or "nvidia-utils-<version>", which ship libnvidia-ml.so.1), ` +
      `or set the NVML library path when it lives elsewhere. (${detail})`,
    { libraryPath: path },
    { cause },
  );
}

/** A required NVML symbol is missing from the library. */
export function symbolMissing(path: string, symbol: string, cause?: unknown): RackpilotError {
  return new RackpilotError(
    'UNSUPPORTED',
    `${symbol} is missing from ${path}: the NVIDIA driver is too old for it; upgrade the driver`,
    { libraryPath: path, symbol },
    { cause },
  );
}
