import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DeviceDriver, Reading } from '../../drivers/contract.js';
import type { ErrorCode } from '../../drivers/lib/errors.js';
import type { Fault } from '../sim/cgminer-server.js';

/** One row of a driver's fault matrix: the sim fault, and the error code read() must report for it. */
export interface FaultCase {
  fault: Fault;
  code: ErrorCode;
}

/** What each matrix test needs: a sim whose fault can be switched, and a driver pointed at it. */
export interface FaultRig<D extends Pick<DeviceDriver, 'read'> = Pick<DeviceDriver, 'read'>> {
  sim: { setFault(fault: Fault): void };
  driver: D;
}

export interface FaultMatrixOptions<D extends Pick<DeviceDriver, 'read'> = Pick<DeviceDriver, 'read'>> {
  /** Options for every read(). */
  read: { deadlineMs: number };
  /** Test name for a case; default `${kind} -> ${code}, stale after a good read`. */
  name?: (c: FaultCase) => string;
  /** Checks on the first (good) read, before the fault is set. */
  good?: (good: Reading) => void;
  /** Extra checks on the stale reading, beyond freshness/state/code. */
  bad?: (bad: Reading & { error: NonNullable<Reading['error']> }, good: Reading) => void;
  /** How to read once the fault is cleared; default `driver.read(opts.read)`. */
  reread?: (driver: D) => Promise<Reading>;
  /** Checks on the reading after the fault is cleared. */
  recovered: (again: Reading, good: Reading) => void;
  /**
   * Adds `a failure before any good read is "missing"`: with this fault set
   * first, read() is missing, offline, unreachable, with no values and `code`.
   */
  missing?: FaultCase;
}

/**
 * Registers, in the current describe(), one test per case: a good read, then
 * the sim fault; read() must not throw but report stale/unreachable data with
 * the case's error code; once the fault is cleared, the next read recovers.
 */
export function faultMatrix<D extends Pick<DeviceDriver, 'read'>>(
  cases: readonly FaultCase[],
  rig: () => Promise<FaultRig<D>>,
  opts: FaultMatrixOptions<D>,
): void {
  const name = opts.name ?? ((c: FaultCase) => `${c.fault.kind} -> ${c.code}, stale after a good read`);
  for (const c of cases) {
    test(name(c), async () => {
      const { sim, driver } = await rig();
      const good = await driver.read(opts.read);
      opts.good?.(good);
      sim.setFault(c.fault);
      const bad = await driver.read(opts.read);
      assert.equal(bad.freshness, 'stale');
      assert.equal(bad.state, 'unreachable');
      assert.equal(bad.error?.code, c.code, bad.error?.message);
      opts.bad?.(bad as Reading & { error: NonNullable<Reading['error']> }, good);
      sim.setFault({ kind: 'none' });
      const again = await (opts.reread ? opts.reread(driver) : driver.read(opts.read));
      opts.recovered(again, good);
    });
  }

  const missing = opts.missing;
  if (missing) {
    test('a failure before any good read is "missing"', async () => {
      const { sim, driver } = await rig();
      sim.setFault(missing.fault);
      const r = await driver.read(opts.read);
      assert.equal(r.freshness, 'missing');
      assert.equal(r.online, false);
      assert.equal(r.state, 'unreachable');
      assert.equal(r.powerW, null);
      assert.deepEqual(r.fields, {});
      assert.equal(r.error?.code, missing.code);
    });
  }
}
