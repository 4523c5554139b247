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
