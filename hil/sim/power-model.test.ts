import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PowerModel } from './power-model.js';

function model(over: { sleepDelayMs?: number; wakeRampMs?: number } = {}) {
  const clock = { t: 1_000_000 };
  const m = new PowerModel({
    miningW: 3250,
    sleepW: 25,
    hashrateThs: 110,
    sleepDelayMs: 4000,
    wakeRampMs: 8000,
    ...over,
    now: () => clock.t,
  });
  return { m, clock };
}

describe('PowerModel', () => {
  test('starts mining at full power', () => {
    const { m } = model();
    assert.equal(m.target, 'mining');
    assert.equal(m.level(), 1);
    assert.equal(m.powerW(), 3250);
    assert.equal(m.hashrateThs(), 110);
    assert.equal(m.isHashing(), true);
  });

  test('sleep falls linearly to the sleep draw over sleepDelayMs', () => {
    const { m, clock } = model();
    m.set('sleeping');
    assert.equal(m.target, 'sleeping');
    clock.t += 2000;
    assert.equal(m.level(), 0.5);
    assert.equal(m.powerW(), Math.round(25 + 3225 * 0.5));
    assert.equal(m.hashrateThs(), 55);
    clock.t += 2000;
    assert.equal(m.powerW(), 25);
    assert.equal(m.hashrateThs(), 0);
    assert.equal(m.isHashing(), false);
    clock.t += 60_000;
    assert.equal(m.powerW(), 25, 'stays asleep');
  });

  test('hashing stops below 5 % level, before the PSU reaches its sleep draw', () => {
    const { m, clock } = model();
    m.set('sleeping');
    clock.t += 3850; // level 0.0375
    assert.equal(m.hashrateThs(), 0);
    assert.ok(m.powerW() > 25);
  });

  test('wakeup ramps back over wakeRampMs, from wherever the fall had got to', () => {
    const { m, clock } = model();
    m.set('sleeping');
    clock.t += 1000; // level 0.75
    m.set('mining');
    assert.equal(m.level(), 0.75, 'no jump at the transition');
    clock.t += 2000; // +0.25
    assert.equal(m.level(), 1);
    assert.equal(m.powerW(), 3250);

    m.set('sleeping');
    clock.t += 4000;
    m.set('mining');
    clock.t += 4000;
    assert.equal(m.level(), 0.5);
    clock.t += 4000;
    assert.equal(m.hashrateThs(), 110);
  });

  test('setting the current mode again changes nothing', () => {
    const { m, clock } = model();
    m.set('sleeping');
    clock.t += 2000;
    m.set('sleeping');
    assert.equal(m.level(), 0.5);
  });

  test('zero delays switch instantly', () => {
    const { m } = model({ sleepDelayMs: 0, wakeRampMs: 0 });
    m.set('sleeping');
    assert.equal(m.powerW(), 25);
    m.set('mining');
    assert.equal(m.powerW(), 3250);
  });
});

test('a power target lowers the full draw and the hashrate proportionally, and can be lifted', () => {
  const m = new PowerModel({ miningW: 3000, sleepW: 30, hashrateThs: 100, sleepDelayMs: 100, wakeRampMs: 100, now: () => 1_000_000 });
  assert.equal(m.powerW(), 3000);
  m.setPowerTarget(1500);
  assert.equal(m.powerTargetW, 1500);
  assert.equal(m.powerW(), 1500);
  assert.equal(m.hashrateThs(), 50);
  m.setPowerTarget(10_000);
  assert.equal(m.powerW(), 3000, 'clamped to miningW');
  m.setPowerTarget(null);
  assert.equal(m.powerTargetW, null);
  assert.equal(m.hashrateThs(), 100);
});
