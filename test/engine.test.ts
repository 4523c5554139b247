import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { sleep } from '../drivers/lib/deadline.js';
import { RackpilotError } from '../drivers/lib/errors.js';
import { ConditionState, signalConditionSchema } from '../agent/signals.js';
import type { Demand } from '../agent/engine/types.js';
import { engineRig, FakeDevice, FakePdu, inFlight } from '../hil/testing/engine-rig.js';

const shed = (key: string, extra: Partial<Demand> = {}): Demand => ({ key, source: 'command', kind: 'shed', since: Date.now(), holdOffMs: 0, commandId: key, ...extra });
const budget = (key: string, maxW: number, extra: Partial<Demand> = {}): Demand => ({ key, source: 'command', kind: 'budget', maxW, since: Date.now(), holdOffMs: 0, commandId: key, ...extra });

async function until(what: string | (() => string), cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    await sleep(10);
  }
}

describe('curtailment engine', () => {
  test('a shed demand sheds every ASIC and caps every GPU at once, recording the activation', async () => {
    const devs = [new FakeDevice('a', 80), new FakeDevice('b', 80), new FakeDevice('g', 80, 'gpu', 2800, 0, { powerTarget: { minW: 1400, maxW: 2800, reboots: false } })];
    const rig = engineRig(devs, { signals: [{ id: 'trip', source: 'x', channel: 'input', above: 0.5 }] });
    rig.poll();
    inFlight.max = 0;
    const wave = rig.engine.onSignal('signal.raised', 'trip', performance.timeOrigin + performance.now());
    assert.ok(wave, 'the signal started a wave');
    assert.equal(rig.engine.state, 'curtailing');
    const out = await wave.done;
    assert.equal(out.ok, true);
    assert.equal(inFlight.max, 3, 'all devices are acted on in parallel');
    assert.deepEqual(devs.map((d) => d.state), ['curtailed', 'curtailed', 'curtailed']);
    assert.equal(rig.engine.state, 'curtailed');
    const act = rig.activations[0];
    assert.ok(act);
    assert.equal(act.trigger.signal, 'trip');
    assert.equal(act.devices.length, 3);
    for (const d of act.devices) {
      assert.ok(d.dispatchAt >= act.signalAt && (d.confirmAt ?? 0) >= d.dispatchAt, `${d.id} timings are ordered`);
    }
    // reported once the state is on disk
    await until('curtail.completed reported', () => rig.types().includes('curtail.completed'));
    const done = rig.events.find((e) => e.type === 'curtail.completed');
    assert.ok(done?.timings && done.timings.decisionMs >= 0 && done.timings.devices === 3);
    assert.deepEqual(rig.types().slice(0, 2), ['curtail.started', 'demand.added']);
    await rig.stop();
  });

  test('a wave hands its acknowledgement hold to onWave as it starts; it settles once every device acknowledged, before confirmation ends', async () => {
    const devs = [new FakeDevice('a', 30), new FakeDevice('b', 120)];
    const rig = engineRig(devs);
    rig.poll();
    const wave = rig.engine.raise(shed('cmd-hold'));
    assert.ok(wave);
    assert.equal(rig.waves.length, 1, 'handed over with the sends');
    const hold = rig.waves[0];
    assert.ok(hold);
    let settledAt = 0;
    void hold.then(() => (settledAt = Date.now()));
    await sleep(60);
    assert.equal(settledAt, 0, 'b has not answered yet');
    await hold;
    assert.ok(devs.every((d) => d.calls.includes('curtail')));
    await wave.done;
    assert.ok(settledAt > 0);
    await rig.stop();
  });

  test('overlapping demands: the most restrictive wins and nothing comes back while any is active', async () => {
    // J/TH: a 3000/100 = 30, b 3000/60 = 50 (least efficient), c 3000/120 = 25
    const devs = [new FakeDevice('a', 10, 'asic', 3000, 100), new FakeDevice('b', 10, 'asic', 3000, 60), new FakeDevice('c', 10, 'asic', 3000, 120)];
    const rig = engineRig(devs);
    rig.poll();
    const w1 = rig.engine.raise(budget('budget:central', 6500));
    assert.ok(w1);
    await w1.done;
    assert.deepEqual(devs.map((d) => d.state), ['running', 'curtailed', 'running'], 'only the least efficient miner is shed for the budget');
    rig.poll();
    const w2 = rig.engine.raise(budget('budget:other', 3500));
    await w2?.done;
    assert.deepEqual(devs.map((d) => d.state), ['curtailed', 'curtailed', 'running'], 'the lower budget wins: next least efficient');
    rig.poll();
    const w3 = rig.engine.raise(shed('command:all'));
    await w3?.done;
    assert.deepEqual(devs.map((d) => d.state), ['curtailed', 'curtailed', 'curtailed']);
    rig.engine.clear('command:all', 'test');
    rig.engine.clear('budget:other', 'test');
    await sleep(50);
    assert.deepEqual(devs.map((d) => d.calls.filter((c) => c === 'restore').length), [0, 0, 0], 'a budget is still active: nothing restored');
    assert.equal(rig.engine.state, 'curtailed');
    await rig.stop();
  });

  test('GPUs are only capped when shedding mining is not enough; protected devices are never touched', async () => {
    const g = new FakeDevice('g', 10, 'gpu', 4000, 0, { powerTarget: { minW: 2000, maxW: 4000, reboots: false } });
    const devs = [new FakeDevice('a', 10), new FakeDevice('p', 10), g];
    const rig = engineRig(devs, { engine: { protected: ['p'] } });
    rig.poll();
    await rig.engine.raise(budget('budget:x', 7500))?.done; // 10000 W: shedding 'a' (~2850 W) is enough
    assert.deepEqual(devs.map((d) => d.state), ['curtailed', 'running', 'running']);
    rig.poll();
    await rig.engine.raise(budget('budget:y', 5000))?.done; // needs the GPU's cap too
    assert.deepEqual(devs.map((d) => d.state), ['curtailed', 'running', 'curtailed']);
    rig.poll();
    await rig.engine.raise(shed('command:all'))?.done;
    assert.equal(devs[1]!.calls.length, 0, 'the protected device was never acted on');
    await rig.stop();
  });

  test('a device that never confirms climbs the ladder: retry, then its PDU outlet is cut when allowed', async () => {
    const a = new FakeDevice('a', 10);
    const b = new FakeDevice('b', 10);
    a.stubborn = true;
    b.stubborn = true;
    const pdu = new FakePdu('pdu', { '1': a, '2': b });
    const rig = engineRig([a, b, pdu], { engine: { hardCut: ['a'], retries: 1 }, deadlineMs: 150, feeds: { a: [{ pdu: 'pdu', outlet: '1' }], b: [{ pdu: 'pdu', outlet: '2' }] } });
    rig.poll();
    const out = await rig.engine.raise(shed('command:c'))!.done;
    const oa = out.devices.find((d) => d.id === 'a');
    const ob = out.devices.find((d) => d.id === 'b');
    assert.equal(oa?.ok, true);
    assert.equal(oa?.via, 'cut');
    assert.deepEqual(oa?.steps.map((s) => `${s.step}:${s.ok}`), ['curtail:false', 'retry:false', 'cut:true']);
    assert.deepEqual(pdu.calls, ['1:off'], "only a's outlet is cut: b is not allowed a hard cut");
    assert.equal(ob?.ok, false);
    assert.deepEqual(ob?.steps.map((s) => s.step), ['curtail', 'retry', 'alarm']);
    await until('alarm reported', () => rig.events.some((e) => e.type === 'device.alarm' && e.device === 'b'));
    assert.equal(rig.engine.state, 'partial');
    // restore re-energizes the cut outlet first
    a.stubborn = false;
    b.stubborn = false;
    const r = await rig.engine.restore('r1');
    assert.equal(r.ok, true, JSON.stringify(r.devices.map((d) => d.error)));
    assert.deepEqual(pdu.calls, ['1:off', '1:on']);
    assert.equal(rig.engine.state, 'running');
    await rig.stop();
  });

  test('a read-back that says curtailed is not enough when the outlet still draws power', async () => {
    const a = new FakeDevice('a', 10);
    const pdu = new FakePdu('pdu', { '1': a });
    const rig = engineRig([a, pdu], { engine: { retries: 0 }, deadlineMs: 600, feeds: { a: [{ pdu: 'pdu', outlet: '1' }] } });
    rig.poll();
    // the device claims to sleep but keeps drawing: its outlet is the witness
    Object.defineProperty(a, 'powerW', { get: () => 3000 });
    const out = await rig.engine.raise(shed('command:c'))!.done;
    const oa = out.devices[0];
    assert.equal(oa?.ok, false);
    assert.equal(oa?.steps[0]?.error?.code, 'POWER_NOT_CONFIRMED');
    assert.match(oa?.steps[0]?.error?.message ?? '', /still draws 3000 W/);
    await rig.stop();
  });

  test('restore waits for every demand and the hold-off, then ramps in steps, GPUs first', async () => {
    const g = new FakeDevice('g', 10, 'gpu', 4000, 0, { powerTarget: { minW: 2000, maxW: 4000, reboots: false } });
    const devs = [new FakeDevice('a', 10), new FakeDevice('b', 10), g];
    const rig = engineRig(devs, { engine: { restore: { stepDevices: 1, stepIntervalMs: 100 } } });
    rig.poll();
    await rig.engine.raise(shed('command:c', { holdOffMs: 300 }))!.done;
    const sig = rig.engine.raise({ key: 'signal:f', source: 'signal', kind: 'shed', since: Date.now(), holdOffMs: 0 });
    assert.equal(sig, null, 'everything is already shed: no new wave');
    await assert.rejects(rig.engine.restore('r1'), (e: RackpilotError) => e.code === 'DEMANDS_ACTIVE' && /signal:f/.test(e.message));
    const t0 = Date.now();
    rig.engine.clear('signal:f', 'test');
    assert.equal(rig.engine.state, 'holdoff', 'the command demand cleared by restore left its hold-off');
    await until('ramp done', () => rig.types().includes('restore.completed'));
    assert.ok(Date.now() - t0 >= 300, 'not before the hold-off');
    const steps = rig.events.filter((e) => e.type === 'restore.step').map((e) => e.step);
    assert.deepEqual(steps, ['1/3', '2/3', '3/3']);
    const order = rig.events.filter((e) => e.type === 'device.confirmed' && e.step === 'restore').map((e) => e.device);
    assert.equal(order[0], 'g', 'the GPU comes back first');
    assert.equal(rig.engine.state, 'running');
    await rig.stop();
  });

  test('a new demand during the restore ramp stops it at once and sheds what came back', async () => {
    const devs = [new FakeDevice('a', 10), new FakeDevice('b', 10), new FakeDevice('c', 10)];
    const rig = engineRig(devs, { engine: { restore: { stepDevices: 1, stepIntervalMs: 300 } } });
    rig.poll();
    await rig.engine.raise(shed('command:c'))!.done;
    const restoring = rig.engine.restore('r1');
    await until('first step restored', () => devs.filter((d) => d.state === 'running').length === 1);
    const w = rig.engine.raise({ key: 'signal:trip', source: 'signal', kind: 'shed', since: Date.now(), holdOffMs: 0 });
    const r = await restoring;
    assert.equal(r.preempted, true);
    assert.ok(w, 'the device already back is shed again');
    await w.done;
    await sleep(400);
    assert.deepEqual(devs.map((d) => d.state), ['curtailed', 'curtailed', 'curtailed']);
    assert.equal(devs.reduce((n, d) => n + d.calls.filter((c) => c === 'restore').length, 0), 1, 'the ramp stopped after one step');
    await until('restore.stopped reported', () => rig.types().includes('restore.stopped'));
    await rig.stop();
  });

  test('the state is persisted; a restarted engine re-asserts the curtailment before anything else', async () => {
    const devs = [new FakeDevice('a', 10), new FakeDevice('b', 10)];
    const rig = engineRig(devs);
    rig.poll();
    await rig.engine.raise(shed('command:c'))!.done;
    await sleep(20);
    await rig.stop();
    const saved = JSON.parse(readFileSync(join(rig.stateDir, 'engine-state.json'), 'utf8')) as { demands: { key: string }[]; shed: Record<string, unknown> };
    assert.deepEqual(saved.demands.map((d) => d.key), ['command:c']);
    assert.deepEqual(Object.keys(saved.shed).sort(), ['a', 'b']);
    // meanwhile someone woke the miners; a new engine on the same state dir
    const fresh = [new FakeDevice('a', 10), new FakeDevice('b', 10)];
    const rig2 = engineRig(fresh, { stateDir: rig.stateDir });
    await rig2.engine.start();
    assert.deepEqual(fresh.map((d) => d.state), ['curtailed', 'curtailed'], 're-asserted on start');
    assert.equal(rig2.engine.state, 'curtailed');
    await sleep(50);
    assert.deepEqual(fresh.map((d) => d.calls), [['curtail'], ['curtail']], 'and nothing restored by itself');
    const r = await rig2.engine.restore('r');
    assert.equal(r.ok, true);
    assert.deepEqual(fresh.map((d) => d.state), ['running', 'running']);
    await rig2.stop();
  });

  test('a corrupt state file fails safe: the rack is shed until a restore command', async () => {
    const devs = [new FakeDevice('a', 10)];
    const rig = engineRig(devs);
    await rig.stop();
    writeFileSync(join(rig.stateDir, 'engine-state.json'), '{"version":1,"phase":"curt');
    const rig2 = engineRig(devs, { stateDir: rig.stateDir });
    rig2.poll();
    await rig2.engine.start();
    await until('shed', () => devs[0]!.state === 'curtailed');
    assert.deepEqual(rig2.engine.demandViews().map((d) => d.key), ['fail-safe']);
    assert.ok(!existsSync(join(rig.stateDir, 'engine-state.json')) || readFileSync(join(rig.stateDir, 'engine-state.json'), 'utf8').includes('fail-safe'));
    assert.equal((await rig2.engine.restore('r')).ok, true);
    await rig2.stop();
  });

  test('a demand with a duration ends by itself; a scheduled window starts by itself', async () => {
    const devs = [new FakeDevice('a', 10)];
    const rig = engineRig(devs);
    rig.poll();
    const now = Date.now();
    assert.equal(rig.engine.raise(shed('command:w', { source: 'schedule', startsAt: now + 200, until: now + 500 })), null, 'not yet');
    assert.equal(devs[0]!.state, 'running');
    await until('window start', () => devs[0]!.state === 'curtailed');
    assert.ok(Date.now() - now >= 190);
    await until(() => `window end and restore (${rig.engine.state}; ${rig.types().join(' ')}; ${JSON.stringify(rig.engine.demandViews())})`, () => devs[0]!.state === 'running');
    assert.ok(Date.now() - now >= 490);
    assert.equal(rig.engine.demandViews().length, 0);
    await rig.stop();
  });

  test('a flapping signal sheds once and comes back only after release and hold-off', async () => {
    const devs = [new FakeDevice('a', 10)];
    const cond = signalConditionSchema.parse({ id: 'uf', source: 'm', channel: 'frequencyHz', below: 59.85, forMs: 0, hysteresis: 0.05, releaseMs: 200, holdOffMs: 200 });
    const rig = engineRig(devs, { signals: [cond] });
    rig.poll();
    const st = new ConditionState(cond, (ch) => rig.engine.onSignal(ch.type, ch.signal, ch.measuredAt));
    const sample = (v: number): void => st.sample({ device: 'm', channel: 'frequencyHz', value: v, ts: Date.now(), fresh: true });
    sample(59.8);
    for (let i = 0; i < 10; i++) {
      sample(i % 2 ? 59.84 : 59.88); // flaps inside the hysteresis band: never released
      await sleep(30);
    }
    await until('shed', () => devs[0]!.state === 'curtailed');
    assert.deepEqual(devs[0]!.calls, ['curtail']);
    const t0 = Date.now();
    sample(59.95);
    await until('restored', () => devs[0]!.state === 'running', 3000);
    assert.ok(Date.now() - t0 >= 390, 'release (200 ms) then hold-off (200 ms)');
    st.stop();
    await rig.stop();
  });

  test('stale meter data trips the signal (fail-safe) and sheds the rack', async () => {
    const devs = [new FakeDevice('a', 10)];
    const cond = signalConditionSchema.parse({ id: 'uf', source: 'm', channel: 'frequencyHz', below: 59.85, staleAfterMs: 100 });
    const rig = engineRig(devs, { signals: [cond] });
    rig.poll();
    const st = new ConditionState(cond, (ch) => rig.engine.onSignal(ch.type, ch.signal, ch.measuredAt));
    st.sample({ device: 'm', channel: 'frequencyHz', value: 60, ts: Date.now(), fresh: true });
    await until('shed on stale input', () => devs[0]!.state === 'curtailed');
    assert.equal(rig.activations[0]?.trigger.signal ?? rig.events.find((e) => e.type === 'curtail.started')?.demand?.key, 'uf');
    st.stop();
    await rig.stop();
  });

  test('losing central control for longer than afterMs applies the configured fallback; reconnecting clears it', async () => {
    const devs = [new FakeDevice('a', 10)];
    const rig = engineRig(devs, { engine: { centralLost: { demand: 'shed', afterMs: 1000, holdOffMs: 0 } } });
    rig.poll();
    rig.engine.onCentral(false);
    await sleep(500);
    assert.equal(devs[0]!.state, 'running');
    await until('fallback shed', () => devs[0]!.state === 'curtailed', 3000);
    rig.engine.onCentral(true);
    await until('restored', () => devs[0]!.state === 'running');
    await rig.stop();
  });
});

describe('curtailment engine: alternatives, ramps and command semantics', () => {
  test('a device that ignores curtail goes to its lowest power target; restore sets the previous target back', async () => {
    const a = new FakeDevice('a', 10, 'asic', 3000, 100, { powerTarget: { minW: 1200, maxW: 3500, reboots: false } });
    a.stubborn = true;
    a.targetW = 3000;
    const rig = engineRig([a], { engine: { retries: 0 }, deadlineMs: 150 });
    rig.poll();
    const out = await rig.engine.raise(shed('command:c'))!.done;
    assert.equal(out.devices[0]?.via, 'alternative');
    assert.ok(out.devices[0]?.ackAt !== undefined, 'the alternative write was acknowledged');
    assert.equal(a.targetW, 1200);
    a.stubborn = false;
    assert.equal((await rig.engine.restore('r')).ok, true);
    assert.deepEqual(a.calls, ['curtail', 'target:1200', 'target:3000', 'restore']);
    await rig.stop();
  });

  test('with kwPerS the ramp groups devices by their load before the shed', async () => {
    const devs = ['a', 'b', 'c', 'd'].map((id) => new FakeDevice(id, 5, 'asic', 3000));
    const rig = engineRig(devs, { engine: { restore: { kwPerS: 6, stepIntervalMs: 1000 } } });
    rig.poll();
    await rig.engine.raise(shed('command:c'))!.done;
    const restoring = rig.engine.restore('r');
    await until('first step', () => rig.types().includes('restore.step'));
    await sleep(100);
    assert.equal(devs.filter((d) => d.state === 'running').length, 2, '6 kW per second: two 3 kW miners in the first step');
    assert.equal((await restoring).ok, true);
    await until('steps reported', () => rig.events.filter((e) => e.type === 'restore.step').length === 2);
    await rig.stop();
  });

  test('a restore waiting in the hold-off is answered PREEMPTED when a new demand arrives', async () => {
    const devs = [new FakeDevice('a', 10)];
    const rig = engineRig(devs);
    rig.poll();
    await rig.engine.raise(shed('command:c', { holdOffMs: 2000 }))!.done;
    const restoring = rig.engine.restore('r');
    await sleep(50);
    assert.equal(rig.engine.state, 'holdoff');
    rig.engine.raise({ key: 'signal:trip', source: 'signal', kind: 'shed', since: Date.now(), holdOffMs: 0 });
    const r = await restoring;
    assert.equal(r.preempted, true);
    assert.equal(devs[0]!.state, 'curtailed');
    await until('restore.stopped reported', () => rig.types().includes('restore.stopped'));
    await rig.stop();
  });

  test('a second demand for devices still being shed waits for that wave instead of succeeding at once', async () => {
    const devs = [new FakeDevice('a', 200)];
    const rig = engineRig(devs);
    rig.poll();
    const w1 = rig.engine.raise(shed('command:one'));
    const w2 = rig.engine.raise(shed('command:two'));
    assert.ok(w1 && w2, 'the second demand joined the wave in flight');
    const o2 = await w2.done;
    assert.equal(devs[0]!.state, 'curtailed', 'it resolved only once the device was shed');
    assert.equal(o2.ok, true);
    assert.deepEqual(o2.devices.map((d) => d.id), ['a']);
    assert.deepEqual(devs[0]!.calls, ['curtail'], 'one action for both');
    await rig.stop();
  });

  test('a scheduled window that has not started holds nothing; restore leaves budgets to clear-budget', async () => {
    const devs = [new FakeDevice('a', 10), new FakeDevice('b', 10, 'asic', 3000, 50)];
    const rig = engineRig(devs);
    rig.poll();
    rig.engine.raise(shed('command:later', { source: 'schedule', startsAt: Date.now() + 60_000 }));
    await sleep(20);
    assert.equal(rig.engine.state, 'running', 'a future window is not an active demand');
    await rig.engine.raise(budget('budget:central', 4000))?.done;
    assert.deepEqual(devs.map((d) => d.state), ['running', 'curtailed']);
    await assert.rejects(rig.engine.restore('r'), (e: RackpilotError) => e.code === 'DEMANDS_ACTIVE' && /budget:central/.test(e.message));
    assert.deepEqual(rig.engine.demandViews().map((d) => d.key), ['budget:central'], 'restore ended the window, not the budget');
    assert.equal(rig.engine.clearBudget(undefined), 1);
    await until('restored', () => devs[1]!.state === 'running');
    await rig.stop();
  });
});
