/**
 * What the health endpoint reads from the agent: public fields and getters
 * only, read at request/scrape time (nothing is pushed from the hot path but
 * the poll cycle's duration and command results, see HealthEndpoint).
 */
import type { DeviceDriver, Reading } from '../../drivers/contract.js';
import type { RackState } from '../../protocol/messages.js';
import type { Engine } from '../engine/engine.js';
import type { MqttBridge } from '../mqtt-bridge.js';
import type { Spool } from '../spool.js';
import type { SpoolStats } from '../spool/config.js';

export interface HealthSources {
  site: string;
  rack: string;
  version: string;
  devices: readonly Pick<DeviceDriver, 'id' | 'kind'>[];
  /** The poller's latest reading per device id. */
  latest: ReadonlyMap<string, Reading>;
  /** How long each device's latest poll read took, ms. */
  readMs: ReadonlyMap<string, number>;
  poll: { intervalMs: number; deadlineMs: number };
  engine: Pick<Engine, 'demands' | 'shed'>;
  /** The rack state as published (the engine's, or inferred from readings before it acted). */
  rackState(): RackState;
  bridge: Pick<MqttBridge, 'connected' | 'connectedChangedAt' | 'stats' | 'queued'>;
  spool: Pick<Spool, 'stats'>;
  /** Whether the spool opened (an unusable one is left out: messages published offline are dropped). */
  spoolOpen(): boolean;
}

/** Spool.stats(), or undefined when the spool is not in use (it failed to open, or is not open yet). */
export function spoolStats(s: HealthSources): SpoolStats | undefined {
  if (!s.spoolOpen()) return undefined;
  try {
    return s.spool.stats();
  } catch {
    return undefined;
  }
}
