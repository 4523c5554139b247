import { z } from 'zod';
import { idSchema } from '../lib/ids.js';
import { feedSchema, hostSchema, portSchema, timeoutsSchema } from '../lib/transports.js';

/** Default TCP port of `rackpilot gpu-node`. */
export const DEFAULT_GPU_NODE_PORT = 9400;

/** A GPU picked by its NVML UUID ("GPU-…") or its index. */
const gpuRefSchema = z.union([z.string().regex(/^GPU-[A-Za-z0-9-]{1,80}$/, 'expected a GPU UUID such as GPU-8f6c…'), z.number().int().min(0).max(63)]);

export const gpuConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('gpu'),
    name: z.string().max(128).optional(),
    /** The PDU outlet(s) feeding this server (hard cut when it ignores a soft curtail). */
    feed: feedSchema,
    /** `local`: NVML on this machine; `node`: a `rackpilot gpu-node` on the GPU server. */
    mode: z.enum(['local', 'node']).default('local'),
    /** local: path of libnvidia-ml (default: libnvidia-ml.so.1 from the loader path). */
    libraryPath: z.string().min(1).max(4096).optional(),
    /** node: the GPU server running `rackpilot gpu-node`. */
    host: hostSchema.optional(),
    port: portSchema.default(DEFAULT_GPU_NODE_PORT),
    timeouts: timeoutsSchema,
    /** node: the shared secret of the gpu-node (its --key-file); never logged. */
    key: z.string().min(16, 'expected a shared key of at least 16 characters').max(1024).optional(),
    /** Replies larger than this are refused (bytes, node mode). */
    maxResponseBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(256 * 1024),
    /** The GPUs this device stands for (UUIDs or indexes); default all GPUs of the server. */
    gpus: z.array(gpuRefSchema).min(1).max(64).optional(),
    /** Curtail caps each GPU to this many watts (never below its minimum constraint). */
    floorW: z.number().int().min(1).max(5_000).optional(),
    /** Curtail caps each GPU to this percentage of its default limit (when floorW is not set; default 50). */
    floorPct: z.number().min(1).max(100).optional(),
    /** Lock GPU clocks to this range (MHz) while capped (needs root, Volta or newer). */
    lockClocksMhz: z
      .object({ min: z.number().int().min(0).max(10_000), max: z.number().int().min(1).max(10_000) })
      .strict()
      .refine((c) => c.min <= c.max, { message: 'min must not exceed max', path: ['min'] })
      .optional(),
    /** Where the pre-curtail limits are remembered across restarts (one JSON file per device). */
    stateDir: z.string().min(1).max(4096).default('/var/lib/rackpilot'),
    /** Interval of read-back polls while confirming an action. */
    confirmPollMs: z.number().int().min(20).max(5000).default(200),
    /** Tries of a restore before it reports `restorePending` (each inside the action deadline). */
    restoreAttempts: z.number().int().min(1).max(10).default(3),
    /** While a restore is pending, read() retries it in the background at most this often (ms). */
    pendingRestoreRetryMs: z.number().int().min(50).max(3_600_000).default(30_000),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.mode === 'node') {
      if (c.host === undefined) ctx.addIssue({ code: 'custom', path: ['host'], message: 'mode "node" needs the host of the gpu-node' });
      if (c.key === undefined) ctx.addIssue({ code: 'custom', path: ['key'], message: 'mode "node" needs the shared key of the gpu-node' });
      if (c.libraryPath !== undefined) ctx.addIssue({ code: 'custom', path: ['libraryPath'], message: 'libraryPath is for mode "local" (the node has its own --library)' });
    } else {
      for (const k of ['host', 'key'] as const) {
        if (c[k] !== undefined) ctx.addIssue({ code: 'custom', path: [k], message: `${k} is for mode "node"; set mode: node to reach a gpu-node` });
      }
    }
    if (c.floorW !== undefined && c.floorPct !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['floorPct'], message: 'set floorW or floorPct, not both' });
    }
  });

export type GpuConfig = z.output<typeof gpuConfigSchema>;
