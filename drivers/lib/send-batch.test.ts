import assert from 'node:assert/strict';
import { test } from 'node:test';
import { afterSends, answerTracker, BatchAnswers, sendBatch } from './send-batch.js';

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

test('BatchAnswers: settles once every exchange started in the batch ended, each counted once; outside a counting batch nothing is tracked', async () => {
  assert.equal(answerTracker(), undefined, 'no batch');
  sendBatch(() => assert.equal(answerTracker(), undefined, 'a batch that does not count'));
  const answers = new BatchAnswers();
  const ends: (() => void)[] = [];
  sendBatch(() => {
    for (let i = 0; i < 3; i++) ends.push(answerTracker() as () => void);
  }, answers);
  assert.equal(answers.count, 3);
  assert.equal(answerTracker(), undefined, 'none once the batch is over');
  let settled = false;
  void answers.all.then(() => (settled = true));
  ends[0]?.();
  ends[0]?.(); // twice counts once
  ends[1]?.();
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, 'one exchange still open');
  ends[2]?.();
  await answers.all;
  // a batch that started no exchange is answered at once
  const none = new BatchAnswers();
  sendBatch(() => undefined, none);
  await none.all;
  assert.equal(none.count, 0);
});

test('BatchAnswers: an exchange that ends inside the batch (a synchronous failure) does not settle it before the others are started', async () => {
  const answers = new BatchAnswers();
  let settled = false;
  void answers.all.then(() => (settled = true));
  let later!: () => void;
  sendBatch(() => {
    (answerTracker() as () => void)(); // ended at once
    later = answerTracker() as () => void;
  }, answers);
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false);
  later();
  await answers.all;
});
