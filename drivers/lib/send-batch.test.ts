import assert from 'node:assert/strict';
import { test } from 'node:test';
import { afterSends, sendBatch } from './send-batch.js';

test('inside a batch the deferred work runs after every send, in order, before the batch returns', () => {
  const log: string[] = [];
  const out = sendBatch(() => {
    for (const d of ['a', 'b']) {
      log.push(`send ${d}`);
      afterSends(() => log.push(`listen ${d}`));
    }
    return 42;
  });
  assert.equal(out, 42);
  assert.deepEqual(log, ['send a', 'send b', 'listen a', 'listen b']);
});

test('outside a batch the work runs at once; a nested batch leaves its work to the outer one', () => {
  const log: string[] = [];
  afterSends(() => log.push('now'));
  assert.deepEqual(log, ['now']);
  sendBatch(() => {
    sendBatch(() => afterSends(() => log.push('inner')));
    log.push('outer sends done');
  });
  assert.deepEqual(log, ['now', 'outer sends done', 'inner']);
});

test('a failing piece of work is reported as a warning and the others still run; a throwing send still runs what was deferred', async () => {
  const log: string[] = [];
  const warned = new Promise<string>((resolve) => process.once('warning', (w) => resolve(w.message)));
  sendBatch(() => {
    afterSends(() => {
      throw new Error('listener bug');
    });
    afterSends(() => log.push('second'));
  });
  assert.deepEqual(log, ['second']);
  assert.match(await warned, /listener bug/);
  assert.throws(() =>
    sendBatch(() => {
      afterSends(() => log.push('after a throw'));
      throw new Error('send bug');
    }),
  );
  assert.deepEqual(log, ['second', 'after a throw']);
  afterSends(() => log.push('no batch left open'));
  assert.equal(log.at(-1), 'no batch left open');
});
