import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { test } from 'node:test';
import { sleep, withDeadline } from './deadline.js';
import { RackpilotError } from './errors.js';

const codeOf = (err: unknown): string | undefined => (err instanceof RackpilotError ? err.code : undefined);

test('withDeadline: the work\'s result, its signal never aborted, no listener left on the parent', async () => {
  const parent = new AbortController();
  let seen: AbortSignal | undefined;
  const v = await withDeadline('read', 1_000, async (s) => {
    seen = s;
    await sleep(5);
    return 7;
  }, parent.signal);
  assert.equal(v, 7);
  assert.equal(seen?.aborted, false);
  assert.equal(getEventListeners(parent.signal, 'abort').length, 0);
});

test('withDeadline: the work\'s own error comes through as it was', async () => {
  const boom = new RackpilotError('MALFORMED_RESPONSE', 'garbage');
  await assert.rejects(withDeadline('read', 1_000, () => Promise.reject(boom)), (err) => err === boom);
  // a synchronous throw is a rejection too, not an exception at the call
  const p = withDeadline('read', 1_000, () => {
    throw boom;
  });
  await assert.rejects(p, (err) => err === boom);
});

test('withDeadline: past the deadline it rejects DEADLINE_EXCEEDED and aborts the work\'s signal with that error', async () => {
  let signal: AbortSignal | undefined;
  const started = performance.now();
  const err: unknown = await withDeadline('dev1 curtail', 30, (s) => {
    signal = s;
    return new Promise<never>(() => undefined); // a peer that never answers
  }).catch((e: unknown) => e);
  assert.equal(codeOf(err), 'DEADLINE_EXCEEDED');
  assert.match((err as Error).message, /dev1 curtail: no result within 30 ms/);
  assert.deepEqual((err as RackpilotError).context, { deadlineMs: 30 });
  assert.ok(performance.now() - started >= 25, 'not before the deadline');
  assert.equal(signal?.aborted, true);
  assert.equal(signal?.reason, err);
});

test('withDeadline: a result or a rejection after the deadline is dropped, with no unhandled rejection', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  try {
    const late = withDeadline('late', 10, () => sleep(40).then(() => Promise.reject(new Error('too late'))));
    await assert.rejects(late, (e) => codeOf(e) === 'DEADLINE_EXCEEDED');
    const lateOk = withDeadline('late ok', 10, () => sleep(40).then(() => 1));
    await assert.rejects(lateOk, (e) => codeOf(e) === 'DEADLINE_EXCEEDED');
    await sleep(60);
    assert.deepEqual(unhandled, []);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

test('withDeadline: the parent\'s abort cancels at once (CANCELLED), aborts the work\'s signal, and leaves no listener', async () => {
  const parent = new AbortController();
  let signal: AbortSignal | undefined;
  const p = withDeadline('dev2 restore', 10_000, (s) => {
    signal = s;
    return new Promise<never>(() => undefined);
  }, parent.signal);
  assert.equal(getEventListeners(parent.signal, 'abort').length, 1);
  parent.abort();
  const err: unknown = await p.catch((e: unknown) => e);
  assert.equal(codeOf(err), 'CANCELLED');
  assert.match((err as Error).message, /dev2 restore: cancelled/);
  assert.equal(signal?.aborted, true);
  assert.equal(getEventListeners(parent.signal, 'abort').length, 0);
});

test('withDeadline: a parent aborted before the start never runs the work', async () => {
  const parent = new AbortController();
  parent.abort();
  let ran = false;
  const err: unknown = await withDeadline('dev3 curtail', 1_000, () => {
    ran = true;
    return Promise.resolve(1);
  }, parent.signal).catch((e: unknown) => e);
  assert.equal(codeOf(err), 'CANCELLED');
  assert.match((err as Error).message, /cancelled before it started/);
  assert.equal(ran, false);
});

test('withDeadline: the timer goes when the work settles (nothing keeps the process up)', async () => {
  // a settled call must leave no timer behind: 200 calls with a 1 h deadline each
  const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  await Promise.all(Array.from({ length: 200 }, (_, i) => withDeadline(`n${i}`, 3_600_000, () => Promise.resolve(i))));
  const after = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  assert.equal(after, before);
});
