import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sleep } from './deadline.js';
import { SwitchOnSequencer } from './outlets.js';

test('switch-ons are spaced from when the previous write completed, even when it reached the PDU late', async () => {
  const seq = new SwitchOnSequencer(200);
  const log: { outlet: number; start: number; end: number }[] = [];
  const write = (outlet: number, takesMs: number) => async () => {
    const start = Date.now();
    await sleep(takesMs);
    log.push({ outlet, start, end: Date.now() });
  };
  // the first write is slow (queued behind a poll, retried): 300 ms, longer than the 200 ms spacing
  await Promise.all([seq.run(undefined, write(1, 300)), seq.run(undefined, write(2, 10))]);
  const [first, second] = log;
  assert.ok(first && second);
  assert.equal(first.outlet, 1);
  // a lower bound only: load can make the gap longer, never shorter
  assert.ok(second.start - first.end >= 195, `second switch-on ${second.start - first.end} ms after the first completed`);
});
