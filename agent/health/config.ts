/**
 * The `health` config block: the agent's local HTTP endpoint for `/healthz`
 * and Prometheus `/metrics` (agent/health/README.md). On by default, bound to
 * loopback: a non-loopback address is allowed (a Prometheus server elsewhere)
 * but warned about at start, since the endpoint has no authentication.
 */
import { isIP } from 'node:net';
import { z } from 'zod';

/** 9108: in the Prometheus exporter range (9100-9999, which is fully allocated: change it if another exporter on the host has it). */
export const DEFAULT_HEALTH_PORT = 9108;

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export const healthConfigSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Address to bind: an IPv4/IPv6 address or a host name. */
    listen: z
      .string()
      .refine((h) => isIP(h) !== 0 || HOSTNAME.test(h), 'expected an IP address or host name such as 127.0.0.1, ::1 or localhost')
      .default('127.0.0.1'),
    /** TCP port; 0 picks a free one (tests: read it back with `agent.health.address()`). */
    port: z.number().int().min(0).max(65_535).default(DEFAULT_HEALTH_PORT),
    /** `/healthz` answers 503 when the event loop's p99 delay over the last window, or the delay measured at the request, is above this. */
    maxLoopLagMs: z.number().int().min(10).max(60_000).default(1_000),
  })
  .strict()
  .prefault({});

export type HealthConfig = z.output<typeof healthConfigSchema>;

/** Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost') || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  // IPv4-mapped IPv6 (::ffff:127.0.0.1)
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  return mapped?.[1] !== undefined && mapped[1].startsWith('127.');
}
