/**
 * Every family of the simulator catalog is identified by detect() and read
 * by `probeHost` with its own driver. The per-family port roles below are
 * test data (which of a simulator's ephemeral ports plays the API port, the
 * web port, or a family port such as 4433/50051). Loopback only (127.0.35.x).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { probeHost } from '../agent/probe.js';
import { SIM_CATALOG, SIM_PASSWORD } from '../hil/sim/catalog.js';
import { freePort } from '../hil/testing/ports.js';

type Block = Record<string, unknown> & { port: number };
const portOf = (b: Block, k: 'apiPort' | 'webPort'): number | undefined => {
  const v = b[k];
  return typeof v === 'number' ? v : undefined;
};
/** family -> which ports to probe as api / http, and family ports to map. */
const ROLES: Record<string, (b: Block) => { apiPort?: number; httpPort?: number; portMap?: Record<number, number> }> = {
  luxos: (b) => ({ apiPort: b.port }),
  antminer: (b) => ({ apiPort: b.port, httpPort: portOf(b, 'webPort') }),
  braiins: (b) => ({ apiPort: portOf(b, 'apiPort'), portMap: { 50051: b.port } }),
  'whatsminer-v2': (b) => ({ apiPort: b.port }),
  'whatsminer-v3': (b) => ({ portMap: { 4433: b.port } }),
  avalon: (b) => ({ apiPort: b.port }),
  vnish: (b) => ({ httpPort: b.port }),
  epic: (b) => ({ apiPort: b.port }),
  // Auradine's driver talks to 8080 (its default), so the sim's web port is also mapped as 8080
  auradine: (b) => ({ apiPort: portOf(b, 'apiPort'), httpPort: b.port, portMap: { 8080: b.port } }),
};

describe('detect every simulated family', () => {
  SIM_CATALOG.forEach((entry, i) => {
    test(`${entry.family}`, async () => {
      const started = await entry.start({ host: `127.0.35.${10 + i}`, fast: true });
      try {
        const block = started.device('x') as unknown as Block;
        const roles = ROLES[entry.family];
        assert.ok(roles, `no port roles for ${entry.family}`);
        const closed = await freePort(started.host);
        const r = roles(block);
        const res = await probeHost({
          host: started.host,
          apiPort: r.apiPort ?? closed,
          httpPort: r.httpPort ?? closed,
          portMap: { 4433: closed, 50051: closed, ...r.portMap },
          credentials: { password: SIM_PASSWORD },
          probeTimeoutMs: 1500,
        });
        assert.equal(res.detection.driver, entry.family, JSON.stringify(res.detection.probes));
        assert.ok(res.telemetry, res.problem ?? 'no telemetry');
        assert.equal(res.telemetry.online, true, JSON.stringify(res.telemetry));
        assert.equal(typeof res.telemetry.powerW, 'number');
      } finally {
        await started.close();
      }
    });
  });
});
