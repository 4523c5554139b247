import assert from 'node:assert/strict';
import { RackpilotError, type ErrorCode } from '../../drivers/lib/errors.js';

/** Awaits `p`, asserting it rejects with a RackpilotError of `code` (and `message`, if given). */
export async function expectCode(p: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<RackpilotError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RackpilotError, `expected RackpilotError, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}, but the call succeeded`);
}
