/**
 * Controller health: parsers against fixed /proc text, the driver against a
 * fixture /proc and /sys tree, and on the real machine: read() spawns no
 * child process (start-up may, for the static facts).
 */
import assert from 'node:assert/strict';
import childProcess, { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { ControllerDriver } from './driver.js';
import { controllerDriver } from './index.js';
import { cpuPct, parseLoadavg, parseMeminfo, parseProcStat, parseUptime } from './proc.js';
import { controllerConfigSchema, diskKey } from './schema.js';

const ctx = { logger: pino({ level: 'silent' }), now: Date.now };
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const STAT0 = 'cpu  1000 0 500 8000 500 0 0 0 0 0\ncpu0 500 0 250 4000 250 0 0 0 0 0\nintr 1\n';
// +100 jiffies in total, of which 25 busy (user 15, system 10) and 75 idle/iowait
const STAT1 = 'cpu  1015 0 510 8070 505 0 0 0 0 0\ncpu0 500 0 250 4000 250 0 0 0 0 0\nintr 1\n';
const MEMINFO = 'MemTotal:        4000000 kB\nMemFree:          500000 kB\nMemAvailable:    1024000 kB\nBuffers:           10000 kB\nActive(anon):      1000 kB\n';

function fixture(opts: { thermal?: boolean } = {}): { proc: string; sys: string } {
  const root = mkdtempSync(join(tmpdir(), 'rp-ctl-'));
  dirs.push(root);
  const proc = join(root, 'proc');
  const sys = join(root, 'sys');
  mkdirSync(proc);
  writeFileSync(join(proc, 'stat'), STAT0);
  writeFileSync(join(proc, 'meminfo'), MEMINFO);
  writeFileSync(join(proc, 'loadavg'), '0.52 0.40 0.31 2/345 6789\n');
  writeFileSync(join(proc, 'uptime'), '12345.67 40000.00\n');
  if (opts.thermal !== false) {
    for (const [n, type, milli] of [
      [0, 'acpitz', 30000],
      [1, 'x86_pkg_temp', 55500],
    ] as const) {
      const z = join(sys, 'class', 'thermal', `thermal_zone${n}`);
      mkdirSync(z, { recursive: true });
      writeFileSync(join(z, 'type'), `${type}\n`);
      writeFileSync(join(z, 'temp'), `${milli}\n`);
    }
  }
  return { proc, sys };
}

function make(extra: Record<string, unknown>, roots: { proc: string; sys: string }): ControllerDriver {
  const cfg = controllerConfigSchema.parse({ id: 'ctl', driver: 'controller', ...extra });
  return new ControllerDriver(cfg, ctx, { procRoot: roots.proc, sysRoot: roots.sys, facts: false });
}

describe('controller config and field names', () => {
  test('mounts default to "/"; each mount gets flat field keys', () => {
    assert.deepEqual(controllerConfigSchema.parse({ id: 'c', driver: 'controller' }).mounts, ['/']);
    assert.equal(diskKey('/', 'UsedPct'), 'diskUsedPct');
    assert.equal(diskKey('/boot/firmware', 'UsedPct'), 'diskBootFirmwareUsedPct');
    assert.equal(diskKey('/var/lib/rack-pilot', 'FreeMiB'), 'diskVarLibRackPilotFreeMiB');
    assert.equal(controllerConfigSchema.safeParse({ id: 'c', driver: 'controller', mounts: ['/a-b', '/a_b'] }).success, false);
    assert.equal(controllerConfigSchema.safeParse({ id: 'c', driver: 'controller', mounts: ['relative'] }).success, false);
    assert.equal(controllerConfigSchema.safeParse({ id: 'c', driver: 'controller', host: '127.0.0.1' }).success, false);
    assert.ok(controllerConfigSchema.safeParse({ id: 'c', driver: 'controller', thermalZone: 'cpu-thermal', feed: [{ pdu: 'p1', outlet: '1' }] }).success);
  });
});

describe('/proc parsers', () => {
  test('CPU percent from /proc/stat deltas', () => {
    const a = parseProcStat(STAT0);
    const b = parseProcStat(STAT1);
    assert.ok(a && b);
    assert.equal(cpuPct(a, b), 25);
    assert.equal(cpuPct(a, a), null);
    assert.equal(parseProcStat('intr 1\n'), undefined);
  });

  test('meminfo, loadavg, uptime', () => {
    const m = parseMeminfo(MEMINFO);
    assert.equal(m.get('MemAvailable'), 1024000);
    assert.equal(m.get('Active(anon)'), 1000);
    assert.deepEqual(parseLoadavg('0.52 0.40 0.31 2/345 6789\n'), [0.52, 0.4, 0.31]);
    assert.equal(parseUptime('12345.67 40000.00\n'), 12345.67);
    assert.equal(parseLoadavg('garbage'), undefined);
  });
});

describe('controller driver on a fixture tree', () => {
  test('fields from /proc, /sys and statfs; CPU % since the previous sample', async () => {
    const roots = fixture();
    const d = make({ mounts: ['/', tmpdir()] }, roots);
    await d.start();
    writeFileSync(join(roots.proc, 'stat'), STAT1);
    const r = await d.read({ deadlineMs: 2000 });
    assert.equal(r.freshness, 'fresh');
    assert.equal(r.powerW, null);
    const f = r.fields;
    assert.equal(f.cpuPct, 25);
    assert.equal(f.load1, 0.52);
    assert.equal(f.memUsedPct, 74.4); // (4000000 - 1024000) / 4000000
    assert.equal(f.memAvailableMiB, 1000);
    assert.equal(f.temperatureC, 55.5, 'the CPU zone (x86_pkg_temp) is preferred');
    assert.equal(f.uptimeS, 12346);
    const tmpKey = diskKey(tmpdir(), 'UsedPct');
    for (const k of ['diskUsedPct', tmpKey]) {
      const v = f[k];
      assert.ok(typeof v === 'number' && v >= 0 && v <= 100, `${k} = ${String(v)}`);
    }
    assert.equal(typeof f.diskFreeMiB, 'number');
    const again = await d.read({ deadlineMs: 2000 });
    assert.equal(again.fields.cpuPct, null, 'no jiffies passed between the two reads of the fixture');
  });

  test('thermalZone by index or type; no thermal zones: temperatureC null', async () => {
    const roots = fixture();
    const byIndex = make({ thermalZone: 0 }, roots);
    await byIndex.start();
    assert.equal((await byIndex.read({ deadlineMs: 2000 })).fields.temperatureC, 30);
    const byType = make({ thermalZone: 'acpitz' }, roots);
    await byType.start();
    assert.equal((await byType.read({ deadlineMs: 2000 })).fields.temperatureC, 30);
    const none = make({}, fixture({ thermal: false }));
    await none.start();
    const r = await none.read({ deadlineMs: 2000 });
    assert.equal(r.freshness, 'fresh');
    assert.equal(r.fields.temperatureC, null);
  });

  test('a mount that cannot be read is null; an unreadable /proc turns the reading stale', async () => {
    const roots = fixture();
    const d = make({ mounts: ['/', '/no/such/mount'] }, roots);
    await d.start();
    const ok = await d.read({ deadlineMs: 2000 });
    assert.equal(ok.fields.diskNoSuchMountUsedPct, null);
    rmSync(join(roots.proc, 'meminfo'));
    const r = await d.read({ deadlineMs: 2000 });
    assert.equal(r.freshness, 'stale');
    assert.equal(r.error?.code, 'DEVICE_ERROR');
    assert.match(r.error?.message ?? '', /meminfo/);
    const fresh = make({}, { proc: join(roots.proc, 'nope'), sys: roots.sys });
    assert.equal((await fresh.read({ deadlineMs: 2000 })).freshness, 'missing');
  });
});

/** Counts child processes started by any means (async spawn/exec/execFile/fork and the *Sync variants). */
function observeSpawns(): { count: () => number; restore: () => void } {
  let n = 0;
  const proto = ChildProcess.prototype as unknown as { spawn: (...a: unknown[]) => unknown };
  const origSpawn = proto.spawn;
  proto.spawn = function (this: unknown, ...a: unknown[]) {
    n++;
    return origSpawn.apply(this, a);
  };
  // the *Sync functions go through the spawn_sync binding, looked up at each call
  const binding = (process as unknown as { binding: (m: string) => { spawn: (...a: unknown[]) => unknown } }).binding('spawn_sync');
  const origSync = binding.spawn;
  binding.spawn = function (this: unknown, ...a: unknown[]) {
    n++;
    return origSync.apply(this, a);
  };
  return {
    count: () => n,
    restore: () => {
      proto.spawn = origSpawn;
      binding.spawn = origSync;
    },
  };
}

describe('controller driver on this machine', { skip: process.platform !== 'linux' }, () => {
  test('start gathers static facts; read() spawns no child process', async () => {
    const d = controllerDriver.create(controllerConfigSchema.parse({ id: 'ctl', driver: 'controller' }), ctx);
    await d.start(); // systeminformation may spawn here (lscpu, ...): allowed at start-up
    const spy = observeSpawns();
    try {
      // the observer sees every kind of spawn (positive control)
      childProcess.execFileSync('true');
      await new Promise((resolve) => childProcess.execFile('true', resolve));
      assert.equal(spy.count(), 2, 'the spawn observer works');
      const before = spy.count();
      let last;
      for (let i = 0; i < 5; i++) last = await d.read({ deadlineMs: 2000 });
      assert.equal(spy.count(), before, 'read() spawned a child process');
      assert.ok(last);
      assert.equal(last.freshness, 'fresh');
      const f = last.fields;
      assert.ok(typeof f.cpuPct === 'number' || f.cpuPct === null);
      assert.ok(typeof f.memUsedPct === 'number' && f.memUsedPct > 0 && f.memUsedPct < 100);
      assert.ok(typeof f.memAvailableMiB === 'number' && f.memAvailableMiB > 0);
      assert.ok(typeof f.diskUsedPct === 'number');
      assert.ok(typeof f.uptimeS === 'number' && f.uptimeS > 0);
      assert.ok(typeof f.load1 === 'number');
      assert.ok(f.temperatureC === null || typeof f.temperatureC === 'number');
      assert.ok(typeof f.cpuCores === 'number' && f.cpuCores > 0, `cpuCores from systeminformation: ${String(f.cpuCores)}`);
      assert.ok(typeof f.memTotalMiB === 'number' && f.memTotalMiB > 0);
      assert.ok(typeof f.os === 'string' || f.os === null);
    } finally {
      spy.restore();
      await d.stop();
    }
  });
});
