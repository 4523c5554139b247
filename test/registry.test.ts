import assert from 'node:assert/strict';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEVICE_KINDS, DEVICE_STATES, FRESHNESS } from '../drivers/contract.js';
import { idSchema } from '../drivers/lib/ids.js';
import { DRIVERS } from '../drivers/registry.js';
import * as proto from '../protocol/messages.js';
import { topicIdSchema } from '../protocol/topics.js';
import { repoRoot } from '../hil/testing/root.js';

const driversDir = join(repoRoot(), 'drivers');
/** Folders under drivers/ that hold shared code, not a driver. */
const NOT_DRIVERS = new Set(['lib']);

test('every driver folder is registered, and every registered driver has a folder', () => {
  const folders = readdirSync(driversDir).filter((f) => statSync(join(driversDir, f)).isDirectory() && !NOT_DRIVERS.has(f));
  const ids = DRIVERS.map((d) => d.id);
  assert.deepEqual([...folders].sort(), [...ids].sort(), 'drivers/<folder> must match the ids in drivers/registry.ts');
});

test('each driver folder has the conventional shape', () => {
  for (const d of DRIVERS) {
    const dir = join(driversDir, d.id);
    for (const f of ['README.md', 'schema.ts', 'index.ts']) {
      assert.ok(existsSync(join(dir, f)), `drivers/${d.id}/${f} is missing`);
    }
    assert.ok(readdirSync(dir).some((f) => f.endsWith('.test.ts')), `drivers/${d.id} has no tests`);
  }
});

test('driver ids are unique and kinds are known', () => {
  const ids = DRIVERS.map((d) => d.id);
  assert.equal(new Set(ids).size, ids.length);
  for (const d of DRIVERS) assert.ok((DEVICE_KINDS as readonly string[]).includes(d.kind), d.id);
});

test('each driver schema requires its own literal driver id and a valid device id', () => {
  for (const d of DRIVERS) {
    assert.equal(d.configSchema.safeParse({ id: 'x', driver: 'other', host: '127.0.0.1' }).success, false);
    assert.equal(d.configSchema.safeParse({ id: 'bad id', driver: d.id, host: '127.0.0.1' }).success, false);
  }
});

test('driver vocabulary matches the protocol vocabulary', () => {
  assert.deepEqual([...DEVICE_KINDS], [...proto.DEVICE_KINDS]);
  assert.deepEqual([...DEVICE_STATES], [...proto.DEVICE_STATES]);
  assert.deepEqual([...FRESHNESS], [...proto.FRESHNESS]);
  for (const s of ['a', 'A-b_9', 'x'.repeat(64)]) assert.ok(idSchema.safeParse(s).success && topicIdSchema.safeParse(s).success, s);
  for (const s of ['', 'a b', 'a/b', 'a+', '#', 'x'.repeat(65)]) assert.ok(!idSchema.safeParse(s).success && !topicIdSchema.safeParse(s).success, s);
});
