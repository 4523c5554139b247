import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Capabilities, DeviceKind, Reading } from '../../drivers/contract.js';
import { ASIC_SLEEP_RESIDUAL, expectedSavingW, joulesPerTh, plan, type PlanOptions } from './planner.js';
import { NO_TARGET, type PlanDevice, type Target } from './types.js';

const T0 = 1_700_000_000_000;
const KEEP = 1 - ASIC_SLEEP_RESIDUAL;

function caps(extra: Partial<Capabilities> = {}): Capabilities {
  return { curtail: true, restore: true, powerTarget: null, profiles: false, switchOutlet: false, ...extra };
}

function reading(powerW: number | null, fields: Reading['fields'] = {}, freshness: Reading['freshness'] = 'fresh'): Reading {
  return { ts: T0, freshness, online: freshness === 'fresh', state: 'running', powerW, fields };
}

interface Opt {
  priority?: number;
  protected?: boolean;
  capabilities?: Capabilities;
  freshness?: Reading['freshness'];
  noReading?: boolean;
}

function asic(id: string, powerW: number | null, hashrateThs: number | null, o: Opt = {}): PlanDevice {
  return {
    id,
    kind: 'asic',
    capabilities: o.capabilities ?? caps(),
    reading: o.noReading ? undefined : reading(powerW, { hashrateThs, temperatureC: 60 }, o.freshness),
    protected: o.protected ?? false,
    priority: o.priority ?? 0,
  };
}

function gpu(id: string, powerW: number | null, minW: number, o: Opt = {}): PlanDevice {
  return {
    id,
    kind: 'gpu',
    capabilities: o.capabilities ?? caps({ powerTarget: { minW, maxW: 5600, reboots: false } }),
    reading: o.noReading ? undefined : reading(powerW, { gpuCount: 8 }, o.freshness),
    protected: o.protected ?? false,
    priority: o.priority ?? 0,
  };
}

function other(id: string, kind: DeviceKind, powerW: number | null): PlanDevice {
  return { id, kind, capabilities: caps({ switchOutlet: kind === 'pdu' }), reading: reading(powerW), protected: false, priority: 0 };
}

const SHED_ALL: Target = { shedAll: true, shed: [], maxW: null };
const budget = (maxW: number): Target => ({ shedAll: false, shed: [], maxW });
const opts = (meteredPowerW: number | null = null, alreadyShed: string[] = []): PlanOptions => ({ meteredPowerW, alreadyShed: new Set(alreadyShed) });
const ids = (p: { steps: { device: string }[] }): string[] => p.steps.map((s) => s.device);

function close(actual: number | null, expected: number): void {
  assert.ok(actual !== null && Math.abs(actual - expected) < 1e-6, `${String(actual)} is not ${expected}`);
}

/** A rack: four ASICs of known efficiency, one without a hashrate figure, two GPU nodes. */
function rack(): PlanDevice[] {
  return [
    gpu('gpu-b', 4000, 1500),
    asic('s19-eff', 3000, 100), // 30 J/TH
    asic('s9-old', 1400, 14), // 100 J/TH
    gpu('gpu-a', 5000, 2000),
    asic('nohash', 2000, null),
    asic('m30', 3400, 85), // 40 J/TH
    asic('stale', 3300, 60, { freshness: 'stale' }), // 55 J/TH, stale reading still ranks
  ];
}

test('shed-all: ASICs least efficient first, no-figure after, then GPUs; sufficient', () => {
  const p = plan(SHED_ALL, rack(), opts());
  assert.deepEqual(ids(p), ['s9-old', 'stale', 'm30', 's19-eff', 'nohash', 'gpu-a', 'gpu-b']);
  assert.ok(p.steps.every((s) => s.action === 'curtail'));
  assert.equal(p.sufficient, true);
  close(p.steps[0]!.savingW, 1400 * KEEP);
  close(p.steps.find((s) => s.device === 'gpu-a')!.savingW, 3000);
  // Rack power: fresh readings only (the stale ASIC is not counted).
  close(p.powerW, 4000 + 3000 + 1400 + 5000 + 2000 + 3400);
  const saved = p.steps.reduce((a, s) => a + s.savingW, 0);
  close(p.expectedW, p.powerW! - saved);
});

test('the order does not depend on the input order', () => {
  const a = plan(SHED_ALL, rack(), opts());
  const b = plan(SHED_ALL, rack().reverse(), opts());
  assert.deepEqual(ids(a), ids(b));
  const tie = plan(SHED_ALL, [asic('z', 3000, 100), asic('a', 3000, 100), gpu('y', 1000, 500), gpu('b', 1000, 500)], opts());
  assert.deepEqual(ids(tie), ['a', 'z', 'b', 'y']);
});

test('priority comes before efficiency within a class; GPUs stay last whatever their priority', () => {
  const devices = [asic('worst-late', 1400, 14, { priority: 5 }), asic('best', 3000, 100), gpu('g-late', 3000, 1000, { priority: 2 }), gpu('g-first', 3000, 1000, { priority: -10 })];
  assert.deepEqual(ids(plan(SHED_ALL, devices, opts())), ['best', 'worst-late', 'g-first', 'g-late']);
});

test('budget: only as many ASICs as needed, least efficient first', () => {
  // P = 18800 (metered); need 1500: s9-old saves 1330, stale saves 3135 -> done.
  const p = plan(budget(17_300), rack(), opts(18_800));
  assert.deepEqual(ids(p), ['s9-old', 'stale']);
  assert.match(p.steps[0]!.reason, /budget: 100\.0 J\/TH/);
  assert.equal(p.sufficient, true);
  close(p.powerW, 18_800);
  close(p.expectedW, 18_800 - (1400 + 3300) * KEEP);
});

test('budget already met: no steps', () => {
  const p = plan(budget(20_000), rack(), opts(18_800));
  assert.deepEqual(p.steps, []);
  assert.equal(p.sufficient, true);
  close(p.expectedW, 18_800);
});

test('budget: GPUs only when the ASICs are not enough, one at a time', () => {
  const asicSaving = (1400 + 3300 + 3400 + 3000 + 2000) * KEEP; // 12445
  // Need 13000: all ASICs (12445) plus the first GPU (gpu-a, 3000).
  const p = plan(budget(18_800 - 13_000), rack(), opts(18_800));
  assert.deepEqual(ids(p), ['s9-old', 'stale', 'm30', 's19-eff', 'nohash', 'gpu-a']);
  assert.match(p.steps[5]!.reason, /gpu/);
  assert.equal(p.sufficient, true);
  close(p.expectedW, 18_800 - asicSaving - 3000);
});

test('budget beyond reach: everything allowed, sufficient false', () => {
  const p = plan(budget(500), rack(), opts(18_800)); // everything saves 17945
  assert.deepEqual(ids(p), ['s9-old', 'stale', 'm30', 's19-eff', 'nohash', 'gpu-a', 'gpu-b']);
  assert.equal(p.sufficient, false);
  close(p.expectedW, 18_800 - 17_945);
});

test('budget with unknown rack power: fail safe, every ASIC and no GPU, not sufficient', () => {
  const devices = [asic('a', null, null, { noReading: true }), asic('b', 3000, 100, { freshness: 'stale' }), gpu('g', 4000, 1000, { freshness: 'stale' })];
  const p = plan(budget(5000), devices, opts(null));
  assert.deepEqual(ids(p), ['b', 'a']);
  assert.equal(p.powerW, null);
  assert.equal(p.expectedW, null);
  assert.equal(p.sufficient, false);
  assert.match(p.steps[0]!.reason, /power unknown/);
});

test('protected devices are never touched', () => {
  const devices = [...rack(), asic('precious', 1500, 10, { protected: true }), gpu('train', 6000, 1000, { protected: true })];
  for (const target of [SHED_ALL, budget(0), { shedAll: false, shed: ['precious', 'train', 'm30'], maxW: null }]) {
    const p = plan(target, devices, opts(30_000));
    assert.ok(!ids(p).includes('precious') && !ids(p).includes('train'), JSON.stringify(target));
  }
  assert.equal(plan(budget(0), devices, opts(30_000)).sufficient, false);
  assert.equal(plan(budget(0), devices, opts(null, ['precious'])).steps.some((s) => s.device === 'precious'), false);
});

test('no curtail capability, or a kind that is not a load: excluded', () => {
  const devices = [
    asic('stock', 3000, 20, { capabilities: caps({ curtail: false }) }),
    gpu('fixed', 4000, 1000, { capabilities: caps({ curtail: false, powerTarget: { minW: 1000, maxW: 5000, reboots: false } }) }),
    other('pdu-1', 'pdu', 0),
    other('meter-1', 'meter', 0),
    other('relay', 'gpio', null),
    asic('ok', 3000, 100),
  ];
  assert.deepEqual(ids(plan(SHED_ALL, devices, opts())), ['ok']);
  const p = plan(budget(0), devices, opts(7000));
  assert.deepEqual(ids(p), ['ok']);
  assert.equal(p.sufficient, false);
});

test('subset shed: only those ids, if sheddable; unknown ids ignored', () => {
  const p = plan({ shedAll: false, shed: ['gpu-b', 'ghost', 's19-eff'], maxW: null }, rack(), opts(18_800));
  assert.deepEqual(ids(p), ['s19-eff', 'gpu-b']);
  assert.equal(p.steps[0]!.reason, 'shed');
  assert.equal(p.sufficient, true);
  close(p.expectedW, 18_800 - 3000 * KEEP - 2500);
});

test('subset shed plus budget: the subset counts toward the budget, each device once, dispatch order', () => {
  // Need 3000: s19-eff (subset, 2850) + gpu-b (subset, 2500) already cover it.
  const covered = plan({ shedAll: false, shed: ['gpu-b', 's19-eff'], maxW: 15_800 }, rack(), opts(18_800));
  assert.deepEqual(ids(covered), ['s19-eff', 'gpu-b']);
  assert.equal(covered.sufficient, true);
  // Need 6000: subset covers 5350, then the least efficient ASIC (s9-old) tops it up.
  const topped = plan({ shedAll: false, shed: ['gpu-b', 's19-eff'], maxW: 12_800 }, rack(), opts(18_800));
  assert.deepEqual(ids(topped), ['s9-old', 's19-eff', 'gpu-b']);
  assert.match(topped.steps[0]!.reason, /^budget/);
  assert.equal(topped.steps[1]!.reason, 'shed');
  assert.equal(new Set(ids(topped)).size, topped.steps.length);
});

test('shed-all plus an unreachable budget: everything, not sufficient', () => {
  const p = plan({ shedAll: true, shed: [], maxW: 100 }, rack(), opts(18_800));
  assert.equal(p.steps.length, 7);
  assert.ok(p.steps.every((s) => s.reason.startsWith('shed-all')));
  assert.equal(p.sufficient, false);
});

test('already shed devices stay in the plan and their saving is not counted again', () => {
  // s9-old and stale were shed by an earlier, larger need; the meter already shows it.
  const p = plan(budget(17_000), rack(), opts(16_000, ['s9-old', 'stale']));
  assert.deepEqual(ids(p), ['s9-old', 'stale']);
  assert.ok(p.steps.every((s) => s.reason === 'already shed' && s.savingW === 0));
  close(p.expectedW, 16_000);
  assert.equal(p.sufficient, true);
  // A tighter budget adds the next ASIC by order, counting only the new saving.
  const q = plan(budget(14_000), rack(), opts(16_000, ['s9-old', 'stale']));
  assert.deepEqual(ids(q), ['s9-old', 'stale', 'm30']);
  close(q.expectedW, 16_000 - 3400 * KEEP);
  // With a subset target too, the already shed ones are kept.
  assert.deepEqual(ids(plan({ shedAll: false, shed: ['gpu-a'], maxW: null }, rack(), opts(16_000, ['stale']))), ['stale', 'gpu-a']);
});

test('an empty target is an empty plan, even with devices already shed', () => {
  const p = plan(NO_TARGET, rack(), opts(18_800, ['s9-old']));
  assert.deepEqual(p.steps, []);
  assert.equal(p.sufficient, true);
  close(p.powerW, 18_800);
});

test('unknown device power: saving 0, said in the reason', () => {
  const devices = [asic('dark', null, 100), asic('lit', 3000, 100), gpu('g', null, 1000)];
  const p = plan(SHED_ALL, devices, opts());
  assert.deepEqual(ids(p), ['lit', 'dark', 'g']);
  const dark = p.steps[1]!;
  assert.equal(dark.savingW, 0);
  assert.match(dark.reason, /power unknown/);
  assert.equal(p.steps[2]!.savingW, 0);
  close(p.powerW, 3000);
});

test('efficiency and saving helpers', () => {
  assert.equal(joulesPerTh(reading(3000, { hashrateThs: 100 })), 30);
  assert.equal(joulesPerTh(reading(3000, { hashrateThs: 100 }, 'stale')), 30);
  assert.equal(joulesPerTh(reading(3000, { hashrateThs: 0 })), null);
  assert.equal(joulesPerTh(reading(3000, { hashrateThs: '100' })), null);
  assert.equal(joulesPerTh(reading(null, { hashrateThs: 100 })), null);
  assert.equal(joulesPerTh(reading(3000, { hashrateThs: 100 }, 'missing')), null);
  assert.equal(expectedSavingW(gpu('g', 800, 1000)), 0, 'a GPU already below its floor saves nothing');
  assert.equal(expectedSavingW(gpu('g', 3000, 1000, { capabilities: caps() })), 0, 'no power target: no known floor');
  assert.equal(expectedSavingW(asic('a', null, null)), null);
});

test('classOrder ["gpu", "asic"] caps GPUs before shedding mining under a budget', () => {
  const caps = (powerTarget: { minW: number; maxW: number; reboots: boolean } | null): Capabilities => ({ curtail: true, restore: true, powerTarget, profiles: false, switchOutlet: false });
  const rd = (powerW: number, hashrateThs?: number): Reading => ({ ts: 0, freshness: 'fresh', online: true, state: 'running', powerW, fields: hashrateThs === undefined ? {} : { hashrateThs } });
  const devices: PlanDevice[] = [
    { id: 'a', kind: 'asic', capabilities: caps(null), reading: rd(3000, 100), protected: false, priority: 0 },
    { id: 'g', kind: 'gpu', capabilities: caps({ minW: 1000, maxW: 4000, reboots: false }), reading: rd(4000), protected: false, priority: 0 },
  ];
  const target = { shedAll: false, shed: [], maxW: 5000 };
  assert.deepEqual(plan(target, devices, { meteredPowerW: null, alreadyShed: new Set() }).steps.map((s) => s.device), ['a']);
  assert.deepEqual(plan(target, devices, { meteredPowerW: null, alreadyShed: new Set(), classOrder: ['gpu', 'asic'] }).steps.map((s) => s.device), ['g']);
});
