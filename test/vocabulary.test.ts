/**
 * The shared device-block vocabulary (drivers/lib/transports.ts, CONVENTIONS
 * #6): every driver names ports, credentials and power ranges the same way,
 * and detection-built configs (probe, scan, driver: auto) fill them in.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { z } from 'zod';
import type { AutoDeviceConfig } from '../agent/auto.js';
import { loadConfigFile } from '../agent/config.js';
import { driverConfigFor } from '../agent/probe.js';
import { repoRoot } from '../hil/testing/root.js';
import { findDriver, DRIVERS } from '../drivers/registry.js';

function shapeOf(schema: z.ZodType): Record<string, z.ZodType> {
  const s = schema as unknown as { shape?: Record<string, z.ZodType> };
  assert.ok(s.shape, 'driver schemas are zod objects');
  return s.shape;
}

/** Names the drivers used before the vocabulary; none may come back. */
const RETIRED = ['web', 'legacyApi', 'account', 'user', 'powerLimitW', 'powerTargetMinW', 'powerTargetMaxW', 'httpPort', 'legacyPort'];

/** Which drivers take which shared key (the README tables say the same). */
const EXPECTED: Record<string, readonly string[]> = {
  apiPort: ['auradine', 'braiins'],
  webPort: ['antminer'],
  username: ['antminer', 'auradine', 'braiins', 'whatsminer-v3'],
  password: ['antminer', 'auradine', 'braiins', 'epic', 'vnish', 'whatsminer-v2', 'whatsminer-v3'],
  powerTarget: ['auradine', 'braiins', 'epic'],
  fullPowerW: ['vnish', 'whatsminer-v2', 'whatsminer-v3'],
};

describe('shared config vocabulary', () => {
  test('no driver uses a retired option name, and every networked one has host, port and timeouts', () => {
    for (const d of DRIVERS) {
      const shape = shapeOf(d.configSchema);
      for (const k of RETIRED) assert.ok(!(k in shape), `${d.id} still has "${k}"`);
      // local devices (a GPIO line, the controller itself) and serial ones have no host
      if (!('host' in shape)) continue;
      for (const k of ['port', 'timeouts']) assert.ok(k in shape, `${d.id} lacks "${k}"`);
    }
  });

  test('each shared key is taken by the expected drivers', () => {
    for (const [key, ids] of Object.entries(EXPECTED)) {
      const have = DRIVERS.filter((d) => key in shapeOf(d.configSchema)).map((d) => d.id);
      assert.deepEqual(have.sort(), [...ids].sort(), key);
    }
  });

  test('credentials are top level only: no nested block carries username or password', () => {
    for (const d of DRIVERS) {
      for (const [k, v] of Object.entries(shapeOf(d.configSchema))) {
        const inner = (v as unknown as { def?: { innerType?: { shape?: object } } }).def?.innerType?.shape ?? (v as unknown as { shape?: object }).shape;
        if (inner) for (const c of ['username', 'password']) assert.ok(!(c in inner), `${d.id}.${k}.${c}`);
      }
    }
  });

  test('the shared keys mean the same thing everywhere', () => {
    for (const d of DRIVERS.filter((x) => x.kind === 'asic')) {
      const base = { id: 'v1', driver: d.id, host: '192.0.2.1' };
      const shape = shapeOf(d.configSchema);
      const ok = (extra: Record<string, unknown>): boolean => d.configSchema.safeParse({ ...base, ...extra }).success;
      assert.ok(ok({}), `${d.id}: a bare block is valid`);
      for (const p of ['port', 'apiPort', 'webPort'].filter((k) => k in shape)) {
        assert.ok(ok({ [p]: 1234 }), `${d.id}.${p}`);
        assert.ok(!ok({ [p]: 0 }), `${d.id}.${p} = 0`);
      }
      if ('powerTarget' in shape) {
        assert.ok(ok({ powerTarget: { minW: 1000, maxW: 3000 } }), `${d.id}.powerTarget`);
        assert.ok(!ok({ powerTarget: { minW: 3000, maxW: 1000 } }), `${d.id}.powerTarget inverted`);
        assert.ok(!ok({ powerTarget: { minW: 1000 } }), `${d.id}.powerTarget half`);
      }
      if ('fullPowerW' in shape) assert.ok(ok({ fullPowerW: 3250 }), `${d.id}.fullPowerW`);
    }
  });
});

describe('detection-built configs use the vocabulary', () => {
  const SECRET = 'not-in-any-error-9f2';
  const build = (id: string, extra: Partial<Parameters<typeof driverConfigFor>[1]> = {}) => {
    const def = findDriver(id);
    assert.ok(def);
    const r = driverConfigFor(def, { id: 'x1', host: '192.0.2.7', apiPort: 14028, httpPort: 10080, credentials: { user: 'root', password: SECRET }, ...extra });
    return r.ok ? { ok: true as const, config: r.config as unknown as Record<string, unknown> } : r;
  };

  test('antminer: API port, web port and top-level credentials', () => {
    const r = build('antminer');
    assert.ok(r.ok);
    assert.deepEqual([r.config.port, r.config.webPort, r.config.username, r.config.password], [14028, 10080, 'root', SECRET]);
  });

  test('braiins and auradine: the secondary apiPort follows the API port', () => {
    const b = build('braiins', { portMap: { 50051: 15051 } });
    assert.ok(b.ok);
    assert.deepEqual([b.config.port, b.config.apiPort], [15051, 14028]);
    const a = build('auradine', { portMap: { 8080: 18080 } });
    assert.ok(a.ok);
    assert.deepEqual([a.config.port, a.config.apiPort], [18080, 14028]);
  });

  test('whatsminer-v3: a username it does not know leaves its default account; a known one is taken', () => {
    const r = build('whatsminer-v3');
    assert.ok(r.ok, r.ok ? '' : r.errors.join());
    assert.deepEqual([r.config.username, r.config.password], ['super', SECRET]);
    const u = build('whatsminer-v3', { credentials: { user: 'user1', password: SECRET } });
    assert.ok(u.ok);
    assert.equal(u.config.username, 'user1');
  });

  test('per-family extra keys override, and errors never echo values', () => {
    const r = build('antminer', { extra: { cgi: { ackWaitMs: 100 }, password: '' } });
    assert.equal(r.ok, false);
    assert.ok(!r.ok && r.errors.some((e) => e.startsWith('password:')), JSON.stringify(r));
    assert.ok(!JSON.stringify(r).includes(SECRET));
    const w = build('vnish', { extra: { fullPowerW: 3250 } });
    assert.ok(w.ok);
    assert.equal(w.config.fullPowerW, 3250);
  });
});

describe('driver: auto options in the examples', () => {
  const dir = join(repoRoot(), 'examples');
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.yaml'))) {
    test(`examples/${f}: every per-family options block makes a valid config for that family`, () => {
      const res = loadConfigFile(join(dir, f));
      assert.ok(res.ok, res.ok ? '' : res.errors.join('\n'));
      for (const d of res.config.devices.filter((x): x is AutoDeviceConfig => x.driver === 'auto')) {
        for (const [family, extra] of Object.entries(d.options)) {
          const def = findDriver(family);
          assert.ok(def, family);
          const made = driverConfigFor(def, {
            id: d.id,
            host: d.host,
            apiPort: d.port,
            httpPort: d.httpPort,
            credentials: { user: d.username, password: d.password },
            extra: { timeouts: d.timeouts, ...extra },
          });
          assert.ok(made.ok, made.ok ? '' : `${d.id} as ${family}: ${made.errors.join('; ')}`);
        }
      }
    });
  }
});
