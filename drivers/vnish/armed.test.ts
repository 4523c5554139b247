/**
 * The armed curtail of the Vnish driver (armCurtail / fire / complete, see
 * ArmedAction) against the Vnish simulator over real HTTP on 127.0.0.1.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import { VnishSim } from '../../hil/sim/vnish-sim.js';
import { fireArmed } from '../../hil/testing/armed.js';
import { tokenHttpArmedTests } from '../../hil/testing/armed-token-http.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { vnishDriver } from './index.js';
import { vnishConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const ACT = { deadlineMs: 8000 };
const READ = { deadlineMs: 5000 };

interface Rig {
  sim: VnishSim;
  driver: DeviceDriver;
}
const rigs = rigsClosedAfterEach<Rig>();

async function rig(cfgOver: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new VnishSim({ sleepDelayMs: 100, wakeRampMs: 100, password: 'pw' });
  const { port } = await sim.listen();
  const cfg = vnishConfigSchema.parse({
    id: 'v1',
    driver: 'vnish',
    host: '127.0.0.1',
    port,
    password: 'pw',
    timeouts: { connectMs: 500, readMs: 1000 },
    confirmPollMs: 50,
    ...cfgOver,
  });
  const driver = vnishDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
  const r = { sim, driver };
  rigs.push(r);
  return r;
}

/** A rig with a token and a warm connection, as after a poll cycle. */
async function warmRig(cfgOver: Record<string, unknown> = {}): Promise<Rig> {
  const r = await rig(cfgOver);
  await r.driver.start();
  assert.equal((await r.driver.read(READ)).freshness, 'fresh');
  return r;
}

describe('vnish armed curtail', () => {
  test('not armed before an unlock gave a token', async () => {
    const { driver, sim } = await rig();
    assert.equal(driver.armCurtail?.(), undefined);
    assert.equal(sim.server.requests, 0, 'arming does no I/O');
  });

  test('fire() + complete(): one stop on the warm connection, confirmed, no further unlock', async () => {
    const { driver, sim } = await warmRig();
    const connections = sim.server.connections;
    let connectionsAtStop = -1;
    const handle = sim.handle.bind(sim);
    sim.handle = (req) => {
      if (req.path === '/api/v1/mining/stop') connectionsAtStop = sim.server.connections;
      return handle(req);
    };
    const res = await fireArmed(driver).complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.state, 'curtailed');
    assert.ok(res.ackMs <= res.tookMs);
    assert.deepEqual(sim.actions, ['mining/stop']);
    assert.equal(sim.unlocks, 1);
    assert.equal(connectionsAtStop, connections, 'the stop went over the pooled connection');
  });

  test('arming again is cheap and keeps the encoded request; curtailMethod "pause" arms pause', async () => {
    const { driver, sim } = await warmRig({ curtailMethod: 'pause' });
    const a = driver.armCurtail?.();
    const b = driver.armCurtail?.();
    assert.ok(a && b);
    await b.fire()!.complete(ACT);
    assert.deepEqual(sim.actions, ['mining/pause']);
  });

  test('refusals are reported as the plain curtail reports them', async () => {
    const denied = await warmRig();
    const armed = denied.driver.armCurtail?.();
    denied.sim.behaviour.writesDenied = true;
    await expectCode(armed!.fire()!.complete(ACT), 'AUTH_FAILED', /^v1: .*refused POST \/api\/v1\/mining\/stop \(HTTP 403: Forbidden\)/);
  });

  tokenHttpArmedTests({
    warmRig: () => warmRig(),
    web: (sim) => sim.server,
    logins: (sim) => sim.unlocks,
    curtailed: 'mining/stop',
    restored: 'mining/start',
    read: READ,
  });
});
