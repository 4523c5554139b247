import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DemandSet, combine, isActive, isEmpty, maxHoldOffMs, nextChange, nextTickIn, targetsEqual } from './demands.js';
import { NO_TARGET, type Demand } from './types.js';

const T0 = 1_700_000_000_000;

function shed(key: string, extra: Partial<Demand> = {}): Demand {
  return { key, source: 'command', kind: 'shed', since: T0, holdOffMs: 0, ...extra };
}

function budget(key: string, maxW: number, extra: Partial<Demand> = {}): Demand {
  return { key, source: 'signal', kind: 'budget', maxW, since: T0, holdOffMs: 0, ...extra };
}

test('no demands: the empty target', () => {
  const t = combine([], T0);
  assert.deepEqual(t, NO_TARGET);
  assert.ok(isEmpty(t));
});

test('shed plus budget: both kept', () => {
  const t = combine([shed('signal:f', { source: 'signal' }), budget('budget:a', 5000)], T0);
  assert.deepEqual(t, { shedAll: true, shed: [], maxW: 5000 });
  assert.ok(!isEmpty(t));
});

test('two budgets: the lowest wins', () => {
  assert.equal(combine([budget('budget:a', 8000), budget('budget:b', 3000), budget('budget:c', 6000)], T0).maxW, 3000);
});

test('a budget without a finite maxW is ignored', () => {
  const bad: Demand = { key: 'budget:x', source: 'command', kind: 'budget', since: T0, holdOffMs: 0 };
  assert.equal(combine([bad, budget('budget:y', Number.NaN)], T0).maxW, null);
});

test('subset sheds are unioned, sorted, deduplicated', () => {
  const t = combine([shed('command:1', { devices: ['s9-3', 'm30-1'] }), shed('command:2', { devices: ['m30-1', 'a1'] })], T0);
  assert.deepEqual(t, { shedAll: false, shed: ['a1', 'm30-1', 's9-3'], maxW: null });
});

test('a subset shed under a whole-rack shed: shedAll, empty subset', () => {
  const demands = [shed('command:1', { devices: ['b'] }), shed('central-lost', { source: 'central-lost' }), shed('command:2', { devices: ['a'] })];
  assert.deepEqual(combine(demands, T0), { shedAll: true, shed: [], maxW: null });
});

test('a scheduled window not yet started does not count; it does once started', () => {
  const d = budget('budget:w', 2000, { source: 'schedule', startsAt: T0 + 60_000, until: T0 + 120_000 });
  assert.ok(!isActive(d, T0));
  assert.ok(isEmpty(combine([d], T0)));
  assert.equal(combine([d], T0 + 60_000).maxW, 2000);
  assert.equal(nextChange([d], T0), T0 + 60_000);
  assert.equal(nextChange([d], T0 + 60_000), T0 + 120_000);
});

test('an expired demand (until reached) does not count', () => {
  const d = shed('command:c', { until: T0 + 1000 });
  assert.ok(combine([d], T0 + 999).shedAll);
  assert.ok(isEmpty(combine([d], T0 + 1000)));
  assert.equal(nextChange([d], T0 + 1000), null);
});

test('nextChange: the earliest future start or end among all demands', () => {
  const ds = [
    shed('a', { until: T0 + 5000 }),
    budget('b', 100, { startsAt: T0 + 3000 }),
    budget('c', 100, { startsAt: T0 - 10, until: T0 - 1 }),
    shed('d'),
  ];
  assert.equal(nextChange(ds, T0), T0 + 3000);
  assert.equal(nextChange(ds, T0 + 3000), T0 + 5000);
  assert.equal(nextChange([shed('d')], T0), null);
});

test('targetsEqual compares every field', () => {
  const a = { shedAll: false, shed: ['x', 'y'], maxW: 100 };
  assert.ok(targetsEqual(a, { shedAll: false, shed: ['x', 'y'], maxW: 100 }));
  assert.ok(!targetsEqual(a, { ...a, shedAll: true }));
  assert.ok(!targetsEqual(a, { ...a, shed: ['x'] }));
  assert.ok(!targetsEqual(a, { ...a, shed: ['x', 'z'] }));
  assert.ok(!targetsEqual(a, { ...a, maxW: null }));
});

test('maxHoldOffMs: the longest hold-off, 0 when none', () => {
  assert.equal(maxHoldOffMs([]), 0);
  assert.equal(maxHoldOffMs([shed('a', { holdOffMs: 30_000 }), budget('b', 1, { holdOffMs: 120_000 })]), 120_000);
});

test('DemandSet: add reports target changes, same key replaces', () => {
  const s = new DemandSet();
  assert.equal(s.add(budget('budget:a', 5000), T0), true);
  assert.equal(s.add(budget('budget:b', 7000), T0), false, 'a higher budget changes nothing');
  assert.equal(s.size, 2);
  assert.equal(s.add(budget('budget:a', 4000), T0), true, 'replacing with a lower budget');
  assert.equal(s.size, 2);
  assert.equal(s.get('budget:a')?.maxW, 4000);
  assert.equal(s.add(shed('command:x', { startsAt: T0 + 1000 }), T0), false, 'a future window changes nothing yet');
  assert.deepEqual(s.activeTarget(T0 + 1000), { shedAll: true, shed: [], maxW: 4000 });
  assert.equal(s.nextChange(T0), T0 + 1000);
  assert.deepEqual(
    s.list().map((d) => d.key),
    ['budget:a', 'budget:b', 'command:x'],
  );
});

test('DemandSet: remove and expire', () => {
  const s = new DemandSet();
  s.add(shed('command:1', { until: T0 + 100, holdOffMs: 5000 }), T0);
  s.add(shed('signal:f', { source: 'signal', holdOffMs: 60_000 }), T0);
  assert.ok(s.has('signal:f'));
  assert.equal(s.remove('signal:f')?.holdOffMs, 60_000);
  assert.equal(s.remove('signal:f'), undefined);
  assert.ok(!s.has('signal:f'));
  assert.deepEqual(s.expire(T0 + 99), []);
  const gone = s.expire(T0 + 100);
  assert.deepEqual(
    gone.map((d) => d.key),
    ['command:1'],
  );
  assert.equal(maxHoldOffMs(gone), 5000);
  assert.equal(s.size, 0);
  assert.ok(isEmpty(s.activeTarget(T0 + 100)));
});

test('nextTickIn: planned from the last tick, so a start or an end the clock passed meanwhile is due at once, not skipped', () => {
  const w = shed('w', { startsAt: T0 + 1000, until: T0 + 2000 });
  assert.equal(nextTickIn([w], T0, T0), 1000);
  // a timer fired 1 ms early: its tick acted for T0+999, the clock reads T0+1000 when the next tick is planned
  assert.equal(nextTickIn([w], T0 + 999, T0 + 1000), 0, 'the start is due at once');
  assert.equal(nextChange([w], T0 + 1000), T0 + 2000, 'planned from now, the start would have been skipped');
  assert.equal(nextTickIn([w], T0 + 1999, T0 + 2000), 0, 'the end likewise');
  assert.equal(nextChange([w], T0 + 2000), null, 'planned from now, the demand would never have run out');
  assert.equal(nextTickIn([w], T0 + 1000, T0 + 1500), 500, 'after a tick at the start: the end');
  assert.equal(nextTickIn([w], T0 + 2000, T0 + 2000), null, 'after a tick at the end: nothing');
});
