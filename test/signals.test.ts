import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { validateConfig } from '../agent/config.js';
import { ConditionState, SignalMonitor, signalConditionSchema, type SignalChange } from '../agent/signals.js';
import type { DeviceDriver, SignalSample } from '../drivers/contract.js';

const cond = (o: Record<string, unknown>) => signalConditionSchema.parse({ id: 'uf', source: 'meter', channel: 'frequencyHz', ...o });
const sample = (value: number, ts: number, fresh = true): SignalSample => ({ device: 'meter', channel: 'frequencyHz', value, ts, fresh });

function rig(o: Record<string, unknown>) {
  const changes: SignalChange[] = [];
  const st = new ConditionState(cond(o), (c) => changes.push(c));
  return { st, changes };
}

describe('signal conditions', () => {
  test('raised only after the value stays below the threshold for forMs (by measurement time)', () => {
    const { st, changes } = rig({ below: 59.85, forMs: 100 });
    st.sample(sample(60.0, 1000));
    st.sample(sample(59.8, 1050));
    st.sample(sample(59.8, 1100));
    assert.equal(changes.length, 0);
    st.sample(sample(59.79, 1150));
    st.stop();
    assert.equal(changes.length, 1);
    assert.deepEqual(changes[0], { type: 'signal.raised', signal: 'uf', source: 'meter', channel: 'frequencyHz', value: 59.79, measuredAt: 1150, reason: 'threshold' });
  });

  test('a dip shorter than forMs raises nothing', () => {
    const { st, changes } = rig({ below: 59.85, forMs: 100 });
    st.sample(sample(59.8, 1000));
    st.sample(sample(59.9, 1050));
    st.sample(sample(59.8, 1120));
    st.sample(sample(59.9, 1200));
    st.stop();
    assert.equal(changes.length, 0);
  });

  test('clears only past the hysteresis band, after releaseMs', () => {
    const { st, changes } = rig({ below: 59.85, hysteresis: 0.05, releaseMs: 200 });
    st.sample(sample(59.7, 0));
    assert.equal(changes.at(-1)?.type, 'signal.raised');
    st.sample(sample(59.87, 100)); // above the threshold, inside the band: still raised
    st.sample(sample(59.88, 400));
    assert.equal(changes.length, 1);
    st.sample(sample(59.95, 500)); // past the band: releasing
    st.sample(sample(59.96, 600));
    assert.equal(changes.length, 1);
    st.sample(sample(59.97, 700));
    st.stop();
    assert.equal(changes.length, 2);
    assert.equal(changes[1]?.type, 'signal.cleared');
    assert.equal(st.raised, false);
  });

  test('stale input trips by default (fail-safe) and fresh normal input clears it', () => {
    const { st, changes } = rig({ below: 59.85 });
    st.sample(sample(60, 0));
    st.sample(sample(60, 100, false));
    assert.equal(changes[0]?.type, 'signal.raised');
    assert.equal(changes[0]?.reason, 'stale');
    st.sample(sample(60, 200));
    st.stop();
    assert.equal(changes[1]?.type, 'signal.cleared');
    assert.equal(changes[1]?.reason, 'fresh-again');
  });

  test('onStale: hold keeps the state, and stale input never counts as normal', () => {
    const { st, changes } = rig({ below: 59.85, onStale: 'hold' });
    st.sample(sample(59.0, 0));
    assert.equal(st.raised, true);
    st.sample(sample(60, 100, false));
    st.sample(sample(60, 200, false));
    st.stop();
    assert.equal(st.raised, true, 'a stale "normal" value must not clear the signal');
    assert.equal(changes.length, 1);
  });

  test('a source that goes quiet past staleAfterMs trips the signal', async () => {
    const { st, changes } = rig({ below: 59.85, staleAfterMs: 30 });
    st.start();
    st.sample(sample(60, Date.now()));
    await new Promise((r) => setTimeout(r, 300));
    st.stop();
    assert.equal(changes[0]?.type, 'signal.raised');
    assert.equal(changes[0]?.reason, 'stale');
  });

  test('a level that stays beyond the threshold raises when forMs elapses even without new samples (edge sources)', async () => {
    const changes: SignalChange[] = [];
    const st = new ConditionState(signalConditionSchema.parse({ id: 'relay', source: 'in1', channel: 'input', above: 0.5, forMs: 30 }), (c) => changes.push(c));
    st.sample({ device: 'in1', channel: 'input', value: 1, ts: Date.now(), fresh: true });
    assert.equal(changes.length, 0);
    await new Promise((r) => setTimeout(r, 300));
    st.stop();
    assert.equal(changes[0]?.type, 'signal.raised');
  });

  test('config: exactly one of below/above, sources must exist, ids unique', () => {
    assert.equal(signalConditionSchema.safeParse({ id: 'x', source: 'm', channel: 'c', below: 1, above: 2 }).success, false);
    const res = validateConfig({
      site: 's',
      rack: 'r',
      mqtt: { url: 'mqtt://127.0.0.1' },
      devices: [{ id: 'm1', driver: 'luxos', host: '127.0.0.1' }],
      signals: [
        { id: 'a', source: 'nope', channel: 'frequencyHz', below: 59.85 },
        { id: 'a', source: 'm1', channel: 'frequencyHz', below: 59.85 },
        { id: 'b', source: 'm1', channel: 'frequencyHz' },
      ],
    });
    assert.equal(res.ok, false);
    const errs = res.ok ? [] : res.errors;
    assert.ok(errs.includes('signals[0].source: no device "nope" in this config'), errs.join('\n'));
    assert.ok(errs.includes('signals[1].id: duplicate id "a"'), errs.join('\n'));
    assert.ok(errs.some((e) => e.startsWith('signals[2]: give exactly one of "below" or "above"')), errs.join('\n'));
  });

  test('a condition on a channel the device does not stream is refused with what it does stream', () => {
    const dev = { id: 'm1', driverId: 'luxos', kind: 'asic' } as unknown as DeviceDriver;
    assert.throws(
      () => new SignalMonitor([cond({ source: 'm1', below: 59.85 })], [dev], () => undefined, pino({ level: 'silent' })),
      /signals\.uf\.channel: device "m1" \(luxos\) has no channel "frequencyHz"; it streams no signals/,
    );
  });
});

describe('signal robustness', () => {
  test('NaN from a meter that is not ready counts as stale (fail-safe), not as a normal value', () => {
    const { st, changes } = rig({ below: 59.85, forMs: 100 });
    st.sample(sample(59.8, 0));
    st.sample(sample(Number.NaN, 50));
    st.stop();
    assert.equal(changes[0]?.type, 'signal.raised');
    assert.equal(changes[0]?.reason, 'stale');
  });

  test('onStale: hold never lets stale time count towards a release', () => {
    const { st, changes } = rig({ below: 59.85, onStale: 'hold', releaseMs: 500 });
    st.sample(sample(59.0, 0));
    st.sample(sample(60.0, 100)); // releasing from here
    st.sample(sample(60.0, 200, false));
    st.sample(sample(60.0, 700)); // 600 ms after the release began, but stale in between: still raised
    st.stop();
    assert.equal(st.raised, true);
    assert.equal(changes.length, 1);
  });

  test('a source device that never produces a fresh reading trips its condition after the start grace', () => {
    const changes: SignalChange[] = [];
    const dev = { id: 'in1', driverId: 'gpio', kind: 'gpio', signalChannels: ['input'], onSignal: () => () => undefined } as unknown as DeviceDriver;
    const mon = new SignalMonitor([signalConditionSchema.parse({ id: 'trip', source: 'in1', channel: 'input', above: 0.5 })], [dev], (c) => changes.push(c), pino({ level: 'silent' }), 1000);
    mon.start();
    const missing = new Map([['in1', { ts: 0, freshness: 'missing' as const, online: false, state: 'unreachable' as const, powerW: null, fields: {}, error: { code: 'UNSUPPORTED', message: 'no GPIO' } }]]);
    mon.observeReadings(missing, Date.now() + 500);
    assert.equal(changes.length, 0, 'within the start grace');
    mon.observeReadings(missing, Date.now() + 1500);
    mon.stop();
    assert.equal(changes[0]?.type, 'signal.raised');
    assert.equal(changes[0]?.reason, 'stale');
  });
});
