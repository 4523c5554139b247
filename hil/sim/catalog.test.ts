import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { DRIVERS, findDriver } from '../../drivers/registry.js';
import { resolveFamilies, SIM_CATALOG, SIM_FAMILIES, startMixedRack } from './catalog.js';

const ctx = { logger: pino({ level: 'silent' }), now: Date.now };
const opts = { deadlineMs: 20_000 };
/** Families whose device block states a watt range (the others have none, honestly). */
const WITH_POWER_TARGET = new Set(['braiins', 'vnish', 'epic', 'auradine', 'whatsminer-v2', 'whatsminer-v3']);

describe('simulator catalog', () => {
  test('has one entry per registered ASIC driver', () => {
    const asic = DRIVERS.filter((d) => d.kind === 'asic').map((d) => d.id).sort();
    assert.deepEqual([...SIM_FAMILIES].sort(), asic);
  });

  for (const entry of SIM_CATALOG) {
    test(`${entry.family}: the driver built from its device block reads, curtails and restores, confirmed`, async () => {
      const s = await entry.start({ fast: true });
      const def = findDriver(s.driver);
      assert.ok(def, `driver ${s.driver} is registered`);
      const parsed = def.configSchema.safeParse(s.device(`${entry.family}-01`));
      assert.ok(parsed.success, parsed.success ? '' : parsed.error.message);
      const d = def.create(parsed.data, ctx);
      try {
        await d.start();
        assert.equal(d.capabilities.curtail, true);
        assert.equal(d.capabilities.restore, true);
        const r = await d.read({ deadlineMs: 10_000 });
        assert.equal(r.freshness, 'fresh', r.error?.message);
        assert.equal(r.state, 'running', JSON.stringify(r));
        assert.ok(typeof r.powerW === 'number' && r.powerW > 1000, `powerW ${r.powerW}`);
        if (WITH_POWER_TARGET.has(entry.family)) assert.notEqual(d.capabilities.powerTarget, null, 'power target capability');

        const c = await d.curtail?.(opts);
        assert.equal(c?.confirmed, true);
        assert.equal(c.reading.state, 'curtailed', JSON.stringify(c.reading));
        assert.equal(s.sleeping(), true);

        const back = await d.restore?.(opts);
        assert.equal(back?.confirmed, true);
        assert.equal(s.sleeping(), false);
        assert.notEqual(back.reading.state, 'curtailed');
      } finally {
        await d.stop();
        await s.close();
      }
    });
  }

  test('a mixed rack cycles the families with unique ids', async () => {
    const n = SIM_CATALOG.length + 2;
    const { sims, devices } = await startMixedRack(n, SIM_CATALOG, { fast: true });
    try {
      assert.equal(devices.length, n);
      assert.equal(new Set(devices.map((d) => d.id)).size, n);
      assert.deepEqual(devices.slice(0, 3).map((d) => d.id), [`${SIM_FAMILIES[0]}-01`, `${SIM_FAMILIES[1]}-02`, `${SIM_FAMILIES[2]}-03`]);
      assert.equal(devices[SIM_CATALOG.length]?.driver, SIM_FAMILIES[0]);
    } finally {
      await Promise.all(sims.map((s) => s.close()));
    }
  });

  test('resolveFamilies names every unknown family and lists the known ones', () => {
    const bad = resolveFamilies(['luxos', 'antminr', 'foo']);
    assert.equal(bad.ok, false);
    assert.match(bad.ok ? '' : bad.error, /unknown families "antminr", "foo" \(known: .*luxos.*\)/);
    const empty = resolveFamilies([' ']);
    assert.equal(empty.ok, false);
    const good = resolveFamilies(['vnish', ' epic', 'vnish']);
    assert.deepEqual(good.ok ? good.entries.map((e) => e.family) : [], ['vnish', 'epic']);
  });
});
