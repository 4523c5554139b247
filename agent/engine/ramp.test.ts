import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rampSteps, type RampDevice } from './ramp.js';

const dev = (id: string, kind: string, shedRank: number, loadW = 3000, cut = false): RampDevice => ({ id, kind, cut, loadW, shedRank });

test('cut devices first, then GPUs, then ASICs in reverse shed order', () => {
  const steps = rampSteps([dev('a1', 'asic', 0), dev('a2', 'asic', 1), dev('g1', 'gpu', 2), dev('a3', 'asic', 3, 3000, true)], { stepDevices: 1, stepIntervalMs: 1000 });
  assert.deepEqual(steps, [['a3'], ['g1'], ['a2'], ['a1']]);
});

test('stepDevices per step', () => {
  const steps = rampSteps([dev('a', 'asic', 0), dev('b', 'asic', 1), dev('c', 'asic', 2)], { stepDevices: 2, stepIntervalMs: 1000 });
  assert.deepEqual(steps, [['c', 'b'], ['a']]);
});

test('kwPerS fills each step up to kW/s x interval; a device larger than that still gets a step of its own', () => {
  const steps = rampSteps([dev('a', 'asic', 0, 2000), dev('b', 'asic', 1, 2000), dev('c', 'asic', 2, 9000), dev('d', 'asic', 3, 1000)], { stepDevices: 8, stepIntervalMs: 2000, kwPerS: 2 });
  // 4 kW per 2 s step: d (1) then c (9) would pass it: c alone; b + a = 4
  assert.deepEqual(steps, [['d'], ['c'], ['b', 'a']]);
});

test('no devices: no steps', () => {
  assert.deepEqual(rampSteps([], { stepDevices: 4, stepIntervalMs: 100 }), []);
});
