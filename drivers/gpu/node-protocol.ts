/**
 * The gpu-node wire protocol: HTTP/1.1, every call a POST with a JSON body,
 * exactly the GpuBackend operations. Every request carries
 *   x-rp-ts:    epoch ms when it was signed
 *   x-rp-nonce: 32 hex chars, never reused
 *   x-rp-sig:   hex HMAC-SHA256(key, "POST\n" + path + "\n" + ts + "\n" + nonce + "\n" + body)
 * and every answer x-rp-sig = hex HMAC-SHA256(key, "RESP\n" + nonce + "\n" + status + "\n" + body),
 * so the agent knows the answer came from a node holding the key and belongs
 * to its request. Answers: `{ok: true, result}` or `{ok: false, error: {code, message}}`.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';

export const GPU_NODE_PATHS = {
  list: '/v1/list',
  read: '/v1/read',
  setPowerLimit: '/v1/set-power-limit',
  setLockedClocks: '/v1/set-locked-clocks',
  resetLockedClocks: '/v1/reset-locked-clocks',
} as const;

export type GpuNodeOp = keyof typeof GPU_NODE_PATHS;

export const HEADER_TS = 'x-rp-ts';
export const HEADER_NONCE = 'x-rp-nonce';
export const HEADER_SIG = 'x-rp-sig';

const uuid = z.string().min(1).max(96);
export const requestSchemas = {
  list: z.object({}).strict(),
  read: z.object({ uuid }).strict(),
  setPowerLimit: z.object({ uuid, mw: z.number().int().min(0).max(10_000_000) }).strict(),
  setLockedClocks: z.object({ uuid, minMhz: z.number().int().min(0).max(100_000), maxMhz: z.number().int().min(0).max(100_000) }).strict(),
  resetLockedClocks: z.object({ uuid }).strict(),
} as const satisfies Record<GpuNodeOp, z.ZodType>;

const nullableNum = z.number().nullable();
export const gpuInfoSchema = z.object({ index: z.number().int(), uuid: z.string(), name: z.string(), serial: z.string().nullable(), lost: z.string().optional() });
export const gpuPowerStateSchema = z.object({
  powerMw: z.number(),
  averagePowerMw: nullableNum,
  limitMw: z.number(),
  enforcedLimitMw: z.number(),
  defaultLimitMw: z.number(),
  minLimitMw: z.number(),
  maxLimitMw: z.number(),
  energyMj: z.number(),
  temperatureC: nullableNum,
  utilizationPct: nullableNum,
});

export const answerSchema = z.union([
  z.object({ ok: z.literal(true), result: z.unknown() }),
  z.object({ ok: z.literal(false), error: z.object({ code: z.string(), message: z.string() }) }),
]);

export function requestMac(key: string, path: string, ts: string, nonce: string, body: string): string {
  return createHmac('sha256', key).update(`POST\n${path}\n${ts}\n${nonce}\n`).update(body).digest('hex');
}

export function responseMac(key: string, nonce: string, status: number, body: string | Buffer): string {
  return createHmac('sha256', key).update(`RESP\n${nonce}\n${status}\n`).update(body).digest('hex');
}

/** Constant-time comparison of two hex MACs (false on any length or format mismatch). */
export function macEquals(a: string, b: string): boolean {
  if (!/^[0-9a-f]{64}$/.test(a) || !/^[0-9a-f]{64}$/.test(b)) return false;
  return timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));
}

export function signRequest(key: string, path: string, body: string, now: number): { ts: string; nonce: string; headers: Record<string, string> } {
  const ts = String(now);
  const nonce = randomBytes(16).toString('hex');
  return { ts, nonce, headers: { [HEADER_TS]: ts, [HEADER_NONCE]: nonce, [HEADER_SIG]: requestMac(key, path, ts, nonce, body) } };
}

/** gpu-node closes a kept-alive connection idle this long (ms). */
export const GPU_NODE_KEEPALIVE_MS = 5_000;
/** The client drops its idle sockets sooner, so it never sends on one the node is closing. */
export const GPU_NODE_CLIENT_IDLE_MS = 3_000;
