import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Reading } from '../contract.js';
import { actAndConfirm, type ConfirmSpec } from './confirm.js';
import { RackpilotError } from './errors.js';
import { expectCode } from '../../hil/testing/expect-code.js';

const reading = (state: Reading['state']): Reading => ({ ts: Date.now(), freshness: 'fresh', online: true, state, powerW: state === 'curtailed' ? 25 : 3000, fields: {} });

function spec(over: Partial<ConfirmSpec>): ConfirmSpec {
  return {
    deviceId: 'd1',
    what: 'curtail',
    want: 'state "curtailed"',
    send: () => Promise.resolve(),
    read: () => Promise.resolve(reading('curtailed')),
    confirmed: (r) => r.state === 'curtailed',
    readDeadlineMs: 500,
    pollMs: 10,
    now: Date.now,
    ...over,
  };
}

describe('actAndConfirm', () => {
  test('confirms by read-back and reports ack and confirmation times', async () => {
    let reads = 0;
    const r = await actAndConfirm(spec({ read: () => Promise.resolve(reading(++reads < 3 ? 'running' : 'curtailed')) }), { deadlineMs: 5000 });
    assert.equal(r.confirmed, true);
    assert.equal(reads, 3);
    assert.ok(r.ackMs <= r.tookMs);
  });

  test('a dropped connection on the write is retried within the deadline', async () => {
    let sends = 0;
    const r = await actAndConfirm(
      spec({
        send: () => (++sends < 3 ? Promise.reject(new RackpilotError('CONNECTION_CLOSED', 'reset')) : Promise.resolve()),
      }),
      { deadlineMs: 5000 },
    );
    assert.equal(r.confirmed, true);
    assert.equal(sends, 3);
  });

  test('a write that never gets through reports the transport cause, not NOT_CONFIRMED', async () => {
    const e = await expectCode(
      actAndConfirm(spec({ send: () => Promise.reject(new RackpilotError('CONNECT_REFUSED', 'refused here')) }), { deadlineMs: 400 }),
      'CONNECT_REFUSED',
      /^d1: curtail not acknowledged after \d+ attempt\(s\) within 400 ms; last: refused here$/,
    );
    assert.equal(e.retriable, true);
  });

  test('non-retriable write errors are not retried', async () => {
    let sends = 0;
    await expectCode(
      actAndConfirm(spec({ send: () => (sends++, Promise.reject(new RackpilotError('AUTH_FAILED', 'bad password'))) }), { deadlineMs: 2000 }),
      'AUTH_FAILED',
    );
    assert.equal(sends, 1);
  });

  test('no confirmation within the deadline is NOT_CONFIRMED naming the last fresh read-back', async () => {
    let n = 0;
    const read = (): Promise<Reading> => Promise.resolve(n++ % 2 === 0 ? reading('running') : { ...reading('unreachable'), freshness: 'stale' });
    await expectCode(
      actAndConfirm(spec({ read }), { deadlineMs: 200 }),
      'NOT_CONFIRMED',
      /^d1: curtail acknowledged after \d+ ms but the device did not reach state "curtailed" within 200 ms \(last read-back: state running, 3000 W\)$/,
    );
  });

  test('a caller abort cancels', async () => {
    const ctl = new AbortController();
    const p = actAndConfirm(spec({ read: () => Promise.resolve(reading('running')) }), { deadlineMs: 5000, signal: ctl.signal });
    setTimeout(() => ctl.abort(), 50);
    await expectCode(p, 'CANCELLED');
  });
});
