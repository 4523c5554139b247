import assert from 'node:assert/strict';
import { test } from 'node:test';
import { engineBench, formatReport } from './engine-bench.js';

test('bench curtail smoke: 4 simulated devices, 3 trials, every figure reported and the floor replayed', async () => {
  const r = await engineBench({ devices: 4, trials: 3, warmup: 1, pollMs: 5000, rssSeconds: 0, antminerAckMs: 0 });
  assert.equal(r.devices, 4);
  assert.deepEqual(r.families, { luxos: 1, antminer: 1, braiins: 1, 'whatsminer-v2': 1 });
  assert.ok(r.drivers, 'the drivers-only baseline ran');
  assert.equal(r.keepWarm, true);
  for (const [name, s] of Object.entries({ ...r.agent, ...r.floor, ...r.drivers })) {
    if (typeof s !== 'object' || !('p50' in s)) continue;
    assert.equal(s.n, 3, `${name}: a value for every trial`);
    for (const k of ['p50', 'p99', 'max'] as const) assert.ok(Number.isFinite(s[k]) && s[k] >= 0, `${name}.${k} is a time (${s[k]})`);
  }
  assert.equal(r.agent.incompleteTrials, 0, 'every device commanded and acknowledged in every trial');
  assert.equal(r.drivers.incompleteTrials, 0, 'every device commanded and acknowledged by its driver alone in every trial');
  // the engine calls the first driver before any command is on the wire, and the last no later than the last command
  assert.ok(r.agent.engineFirstCall.p50 <= r.agent.decision.p50);
  assert.ok(r.agent.engineLastCall.max <= r.agent.lastIssued.max);
  for (const [k, v] of Object.entries(r.perFamily)) assert.equal(v.driversAck.n, 3, `${k}: drivers-only acknowledgements`);
  // the floor replayed what the agent sent to every device, and the simulators answered as they answered the agent
  assert.equal(r.floor.incompleteTrials, 0);
  assert.equal(r.floor.mismatched, 0);
  assert.deepEqual(r.floor.problems, []);
  assert.match(r.floor.replay, /h2 1/, 'the Braiins device was replayed over HTTP/2');
  assert.deepEqual(Object.keys(r.perFamily).sort(), ['antminer', 'braiins', 'luxos', 'whatsminer-v2']);
  for (const ratio of [r.ratios.lastIssued.p50, r.ratios.lastIssued.p99, r.ratios.lastAck.p50, r.ratios.lastAck.p99]) assert.ok(Number.isFinite(ratio) && ratio > 0);
  assert.deepEqual(
    r.targets.map((t) => t.name),
    ['decision p99 (ms)', 'last issued / floor, p50', 'last issued / floor, p99', 'last ack / floor, p50', 'last ack / floor, p99'],
  );
  assert.equal(r.rss, undefined, 'no RSS phase when rssSeconds is 0');
  const text = formatReport(r);
  for (const line of [
    'engine: first driver call',
    'engine: last driver call',
    'agent: first command issued (decision)',
    'agent: last device acknowledged',
    'drivers only: last command issued',
    'drivers only: last device acknowledged',
    'floor: last answer received',
    'last acknowledged',
  ])
    assert.ok(text.includes(line), line);
});
