/**
 * Helpers of the drivers' armed-curtail tests (armed.test.ts next to each
 * driver): arm and fire in one step, and reduce an action to how it ended
 * so the armed and the plain curtail can be compared fault by fault.
 */
import assert from 'node:assert/strict';
import type { ActionResult, DeviceDriver, FiredAction } from '../../drivers/contract.js';
import { RackpilotError } from '../../drivers/lib/errors.js';

/** Arms the driver's curtail and fires it; fails the test when either gives nothing. */
export function fireArmed(driver: DeviceDriver): FiredAction {
  const armed = driver.armCurtail?.();
  assert.ok(armed, `${driver.id}: armed`);
  const fired = armed.fire();
  assert.ok(fired, `${driver.id}: fired`);
  return fired;
}

/** How an action ended: "ok", or its error code. */
export async function outcome(run: () => Promise<ActionResult>): Promise<string> {
  try {
    await run();
    return 'ok';
  } catch (err) {
    return err instanceof RackpilotError ? err.code : String(err);
  }
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const openSockets = (): number => process.getActiveResourcesInfo().filter((x) => x === 'TCPSocketWrap').length;

/**
 * With the device silent (the caller set that up): an armed curtail ends
 * near its deadline in a timeout, and one aborted while it waits ends
 * CANCELLED with every socket it opened closed again.
 */
export async function armedSilentThenAborted(driver: DeviceDriver): Promise<void> {
  const t0 = Date.now();
  const code = await outcome(() => fireArmed(driver).complete({ deadlineMs: 600 }));
  assert.ok(['READ_TIMEOUT', 'NOT_CONFIRMED', 'DEADLINE_EXCEEDED'].includes(code), `a silent device: ${code}`);
  assert.ok(Date.now() - t0 < 3000, 'settles near the deadline');

  await delay(50);
  const baseline = openSockets();
  const fired = fireArmed(driver);
  const ctl = new AbortController();
  setTimeout(() => ctl.abort(), 50);
  assert.equal(await outcome(() => fired.complete({ deadlineMs: 30_000, signal: ctl.signal })), 'CANCELLED');
  for (let i = 0; i < 100 && openSockets() > baseline; i++) await delay(10);
  assert.ok(openSockets() <= baseline, `${openSockets()} sockets open, ${baseline} before`);
}
