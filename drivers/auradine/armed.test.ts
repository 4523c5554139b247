/**
 * The armed curtail of the Auradine driver (armCurtail / fire / complete, see
 * ArmedAction) against the Auradine simulator (web API) over real HTTP on 127.0.0.1.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { DeviceDriver } from '../contract.js';
import { AuradineSim } from '../../hil/sim/auradine-sim.js';
import { fireArmed } from '../../hil/testing/armed.js';
import { tokenHttpArmedTests } from '../../hil/testing/armed-token-http.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { auradineDriver } from './index.js';
import { auradineConfigSchema } from './schema.js';
import { rigsClosedAfterEach } from '../../hil/testing/rigs.js';

const ACT = { deadlineMs: 8000 };
const READ = { deadlineMs: 5000 };

interface Rig {
  sim: AuradineSim;
  driver: DeviceDriver;
}
const rigs = rigsClosedAfterEach<Rig>();

async function rig(cfgOver: Record<string, unknown> = {}): Promise<Rig> {
  const sim = new AuradineSim({ sleepDelayMs: 100, wakeRampMs: 100, password: 'pw' });
  const { port, apiPort } = await sim.listen();
  const cfg = auradineConfigSchema.parse({
    id: 'a1',
    driver: 'auradine',
    host: '127.0.0.1',
    port,
    apiPort,
    password: 'pw',
    timeouts: { connectMs: 500, readMs: 1000 },
    confirmPollMs: 50,
    ...cfgOver,
  });
  const driver = auradineDriver.create(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
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

describe('auradine armed curtail', () => {
  test('not armed before a login gave a token', async () => {
    const { driver, sim } = await rig();
    assert.equal(driver.armCurtail?.(), undefined);
    assert.equal(sim.web.requests, 0, 'arming does no I/O');
  });

  test('fire() + complete(): one sleep on the warm connection, confirmed, no further login', async () => {
    const { driver, sim } = await warmRig();
    const connections = sim.web.connections;
    let connectionsAtStop = -1;
    const handle = sim.handle.bind(sim);
    sim.handle = (req) => {
      if (req.path === '/mode' && req.method === 'POST') connectionsAtStop = sim.web.connections;
      return handle(req);
    };
    const res = await fireArmed(driver).complete(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.state, 'curtailed');
    assert.ok(res.ackMs <= res.tookMs);
    assert.deepEqual(sim.actions, ['sleep on']);
    assert.equal(sim.logins, 1);
    assert.equal(connectionsAtStop, connections, 'the sleep went over the pooled connection');
  });

  test('arming again is cheap and keeps the encoded request', async () => {
    const { driver, sim } = await warmRig();
    const a = driver.armCurtail?.();
    const b = driver.armCurtail?.();
    assert.ok(a && b);
    await b.fire()!.complete(ACT);
    assert.deepEqual(sim.actions, ['sleep on']);
  });

  test('refusals are reported as the plain curtail reports them', async () => {
    const denied = await warmRig();
    const armed = denied.driver.armCurtail?.();
    denied.sim.behaviour.writesDenied = true;
    await expectCode(armed!.fire()!.complete(ACT), 'AUTH_FAILED', /^a1: .*refused POST \/mode \(HTTP 403: Permission denied\)/);
    const rejecting = await warmRig();
    const handle = rejecting.sim.handle.bind(rejecting.sim);
    rejecting.sim.handle = (req) => (req.method === 'POST' && req.path === '/mode' ? { body: { STATUS: [{ STATUS: 'E', Msg: 'Busy' }] } } : handle(req));
    await expectCode(rejecting.driver.armCurtail!()!.fire()!.complete(ACT), 'DEVICE_ERROR', /rejected POST \/mode: Busy/);
  });

  tokenHttpArmedTests({
    warmRig: () => warmRig(),
    web: (sim) => sim.web,
    logins: (sim) => sim.logins,
    curtailed: 'sleep on',
    restored: 'sleep off',
    read: READ,
  });
});
