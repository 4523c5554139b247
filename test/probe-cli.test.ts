/**
 * `rackpilot probe HOST` end to end: the CLI process against the LuxOS
 * simulator on 127.0.33.x (loopback only).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LuxosSim } from '../hil/sim/luxos-sim.js';
import { freePort } from '../hil/testing/ports.js';
import { repoRoot } from '../hil/testing/root.js';

const cli = join(repoRoot(), 'dist', 'agent', 'cli.js');
const SECRET = 'hunter2-not-printed';

function run(args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number; out: string; err: string }>((resolve) => {
    execFile(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } }, (e, out, err) =>
      resolve({ code: typeof e?.code === 'number' ? e.code : 0, out, err }),
    );
  });
}

describe('rackpilot probe', () => {
  let sim: LuxosSim;
  let apiPort = 0;
  let httpPort = 0;
  before(async () => {
    sim = new LuxosSim({ host: '127.0.33.10', model: 'Antminer S19 XP' });
    apiPort = (await sim.listen()).port;
    httpPort = await freePort();
  });
  after(() => sim.close());

  test('--json prints one object with driver, model, firmware and protocol telemetry; exit 0; the password is never printed', async () => {
    const r = await run(['probe', '127.0.33.10', '--api-port', String(apiPort), '--http-port', String(httpPort), '--json', '--password', SECRET, '--user', 'root']);
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trim().split('\n');
    assert.equal(lines.length, 1, 'a single JSON object');
    const j = JSON.parse(lines[0] ?? '') as Record<string, unknown> & { telemetry: Record<string, unknown> };
    assert.equal(j.driver, 'luxos');
    assert.equal(j.model, 'Antminer S19 XP');
    assert.equal(j.firmware, 'LUXminer 2024.11.1-sim');
    assert.equal(j.identified, true);
    const t = j.telemetry;
    assert.equal(t.powerW, 3250);
    assert.equal(t.hashrateThs, 110);
    assert.equal(typeof t.temperatureC, 'number');
    assert.equal(t.state, 'running');
    assert.equal(t.online, true);
    assert.equal(t.freshness, 'fresh');
    assert.ok(!r.out.includes(SECRET) && !r.err.includes(SECRET));
    assert.equal(sim.activeSession, undefined, 'a one-off probe does not hold the LuxOS session');
  });

  test('the human summary names family, model, firmware and power; RACKPILOT_MINER_PASSWORD is not printed either', async () => {
    const r = await run(['probe', '127.0.33.10', '--api-port', String(apiPort), '--http-port', String(httpPort)], { RACKPILOT_MINER_PASSWORD: SECRET });
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /127\.0\.33\.10: luxos \(high confidence\)/);
    assert.match(r.out, /model\s+Antminer S19 XP/);
    assert.match(r.out, /firmware\s+LUXminer 2024\.11\.1-sim/);
    assert.match(r.out, /power\s+3250 W/);
    assert.ok(!r.out.includes(SECRET) && !r.err.includes(SECRET));
  });

  test('an unreachable host: exit 1 with what each probe saw', async () => {
    const r = await run(['probe', '127.0.33.11', '--api-port', String(apiPort), '--http-port', String(httpPort)]);
    assert.equal(r.code, 1);
    assert.match(r.out, /127\.0\.33\.11: unknown \(no known firmware family answered/);
    assert.match(r.out, /api version \(port \d+\): CONNECT_REFUSED/);
    const j = await run(['probe', '127.0.33.11', '--api-port', String(apiPort), '--http-port', String(httpPort), '--json']);
    assert.equal(j.code, 1);
    const o = JSON.parse(j.out) as { identified: boolean; driver: unknown; probes: unknown[] };
    assert.equal(o.identified, false);
    assert.equal(o.driver, null);
    assert.ok(o.probes.length >= 3);
  });

  test('bad arguments exit 2 with usage', async () => {
    const r = await run(['probe']);
    assert.equal(r.code, 2);
    assert.match(r.err, /usage: rackpilot probe HOST/);
    const p = await run(['probe', '127.0.33.10', '--api-port', '99999']);
    assert.equal(p.code, 2);
    assert.match(p.err, /--api-port/);
  });
});
