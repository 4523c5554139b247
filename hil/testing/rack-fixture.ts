/** A simulated rack for end-to-end tests: LuxOS simulators and an agent config on them. */
import { LuxosSim } from '../sim/luxos-sim.js';
import { validateConfig, type AgentConfig } from '../../agent/config.js';
import { tempDir } from './temp-dir.js';

export interface SimRack {
  sims: LuxosSim[];
  config(brokerUrl: string, site: string, rack: string): AgentConfig;
  /** The same config as plain data, for writing a YAML/JSON file. */
  raw(brokerUrl: string, site: string, rack: string): Record<string, unknown>;
  close(): Promise<void>;
}

export async function startSimRack(n: number, opts: { sleepDelayMs?: number; wakeRampMs?: number } = {}): Promise<SimRack> {
  const sims: LuxosSim[] = [];
  for (let i = 0; i < n; i++) {
    const sim = new LuxosSim({ sleepDelayMs: opts.sleepDelayMs ?? 300, wakeRampMs: opts.wakeRampMs ?? 500, miningW: 3000 + i * 10 });
    await sim.listen();
    sims.push(sim);
  }
  const raw = (brokerUrl: string, site: string, rack: string): Record<string, unknown> => ({
    site,
    rack,
    mqtt: { url: brokerUrl, reconnect: { minMs: 100, maxMs: 1000 }, keepaliveS: 5, connectTimeoutMs: 2000, publishTimeoutMs: 2000 },
    poll: { intervalMs: 300, deadlineMs: 2000, concurrency: 8 },
    actions: { deadlineMs: 10_000 },
    log: { level: 'silent' },
    // a fresh state directory per agent: a curtailment persisted by one test must not be re-asserted in another
    stateDir: tempDir('rp-rack-'),
    health: { port: 0 }, // an ephemeral port: agents of parallel tests never compete for 9108
    devices: sims.map((s, i) => ({ id: `m${i + 1}`, driver: 'luxos', host: '127.0.0.1', port: s.server.port, confirmPollMs: 50 })),
  });
  return {
    sims,
    raw,
    config: (brokerUrl, site, rack) => {
      const res = validateConfig(raw(brokerUrl, site, rack));
      if (!res.ok) throw new Error(res.errors.join('\n'));
      return res.config;
    },
    close: async () => {
      await Promise.all(sims.map((s) => s.close()));
    },
  };
}
