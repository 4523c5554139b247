import assert from 'node:assert/strict';
import { test } from 'node:test';
import { afterSends, answerBatch, answerTracker, BatchAnswers, sendBatch } from './send-batch.js';

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

test('BatchAnswers.later: the put-off work runs when the last answer is in, in order; after that, at once', () => {
  const answers = new BatchAnswers();
  const log: string[] = [];
  let a!: () => void;
  let b!: () => void;
  sendBatch(() => {
    a = answerTracker() as () => void;
    b = answerTracker() as () => void;
    assert.equal(answerBatch(), answers, 'the batch running its sends');
  }, answers);
  assert.equal(answerBatch(), undefined, 'none once the batch is over');
  a();
  answers.later(() => log.push('a done'));
  assert.equal(log.length, 0, 'one answer still out');
  b();
  assert.deepEqual(log, ['a done'], 'run as the last answer came in');
  answers.later(() => log.push('late'));
  assert.deepEqual(log, ['a done', 'late']);
});

test('BatchAnswers.later: an answer that never comes holds the put-off work laterMaxMs at most; a failing piece does not stop the others', async () => {
  const answers = new BatchAnswers(40);
  const log: string[] = [];
  let a!: () => void;
  sendBatch(() => {
    a = answerTracker() as () => void;
    answerTracker(); // never answered
  }, answers);
  const warned = new Promise<string>((resolve) => process.once('warning', (w) => resolve(w.message)));
  const t0 = performance.now();
  a();
  answers.later(() => {
    throw new Error('bookkeeping bug');
  });
  answers.later(() => log.push(`ran after ${Math.round(performance.now() - t0)} ms`));
  // the cap's timer does not keep a process alive (unref): this test does
  const keepAlive = setTimeout(() => undefined, 5_000);
  for (let i = 0; i < 200 && log.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
  clearTimeout(keepAlive);
  assert.equal(log.length, 1, 'ran without the missing answer');
  assert.ok(performance.now() - t0 >= 35, log[0]);
  assert.match(await warned, /bookkeeping bug/);
});
