/**
 * GPU driver logic (cap to floor, constraints, persisted restore, crash
 * restore, retry then restorePending) against a small in-memory GpuBackend,
 * then the same curtail/restore through the real koffi binding
 * (LocalGpuBackend) loading the mock libnvidia-ml built with gcc.
 */
import { afterEach, describe, mock as nodeMock, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import type { GpuBackend, GpuInfo, GpuPowerState } from './backend.js';
import { GpuDriver, type BackendFactory } from './driver.js';
import { gpuConfigSchema } from './schema.js';
import { openNvml } from './nvml.js';
import { GpuStateStore } from './state-store.js';
import { RackpilotError } from '../lib/errors.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { buildMockNvml, mockNvmlControl } from '../../hil/testing/mock-nvml.js';

const ACT = { deadlineMs: 3000 };
const READ = { deadlineMs: 1000 };
const logger = pino({ level: 'silent' });

/** Two H100-like GPUs: 200..700 W, default 700 W; power follows the limit at once. */
class MemGpuBackend implements GpuBackend {
  gpus = [0, 1].map((i) => ({ index: i, uuid: `GPU-mem-${i}`, name: 'Mem H100', serial: null, limitMw: 700_000, clocks: null as null | [number, number] }));
  failSet = 0;
  down = false;
  calls: string[] = [];
  private check(): void {
    if (this.down) throw new RackpilotError('UNREACHABLE', 'mem backend down');
  }
  private gpu(uuid: string) {
    const g = this.gpus.find((x) => x.uuid === uuid);
    if (!g) throw new RackpilotError('DEVICE_ERROR', `GPU ${uuid} lost`);
    return g;
  }
  open(): Promise<void> {
    this.check();
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
  list(): Promise<GpuInfo[]> {
    this.check();
    return Promise.resolve(this.gpus.map(({ index, uuid, name, serial }) => ({ index, uuid, name, serial })));
  }
  read(uuid: string): Promise<GpuPowerState> {
    this.check();
    const g = this.gpu(uuid);
    const p = Math.min(650_000, g.limitMw);
    return Promise.resolve({ powerMw: p, averagePowerMw: p, limitMw: g.limitMw, enforcedLimitMw: g.limitMw, defaultLimitMw: 700_000, minLimitMw: 200_000, maxLimitMw: 700_000, energyMj: 1e6, temperatureC: 60, utilizationPct: 90 });
  }
  setPowerLimit(uuid: string, mw: number): Promise<void> {
    this.check();
    this.calls.push(`set ${uuid} ${mw}`);
    if (this.failSet > 0) {
      this.failSet--;
      return Promise.reject(new RackpilotError('DEVICE_ERROR', 'NVML: insufficient permissions'));
    }
    if (mw < 200_000 || mw > 700_000) return Promise.reject(new RackpilotError('CONFIG_INVALID', 'limit outside constraints'));
    this.gpu(uuid).limitMw = mw;
    return Promise.resolve();
  }
  setLockedClocks(uuid: string, minMhz: number, maxMhz: number): Promise<void> {
    this.gpu(uuid).clocks = [minMhz, maxMhz];
    return Promise.resolve();
  }
  resetLockedClocks(uuid: string): Promise<void> {
    this.gpu(uuid).clocks = null;
    return Promise.resolve();
  }
}

const dirs: string[] = [];
const drivers: GpuDriver[] = [];
afterEach(async () => {
  for (const d of drivers.splice(0)) await d.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function stateDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'rp-gpu-'));
  dirs.push(d);
  return d;
}

function makeDriver(backend: GpuBackend | BackendFactory, over: Record<string, unknown> = {}, dir = stateDir()): GpuDriver {
  const cfg = gpuConfigSchema.parse({ id: 'g1', driver: 'gpu', stateDir: dir, confirmPollMs: 20, ...over });
  const factory: BackendFactory = typeof backend === 'function' ? backend : () => Promise.resolve(backend);
  const d = new GpuDriver(cfg, { logger, now: Date.now }, factory);
  drivers.push(d);
  return d;
}

describe('gpu config', () => {
  test('local is the default; node needs host and key; errors all at once', () => {
    const c = gpuConfigSchema.parse({ id: 'g', driver: 'gpu' });
    assert.equal(c.mode, 'local');
    assert.equal(c.port, 9400);
    const bad = gpuConfigSchema.safeParse({ id: 'g', driver: 'gpu', mode: 'node', floorW: 300, floorPct: 40 });
    assert.equal(bad.success, false);
    const paths = bad.error?.issues.map((i) => i.path.join('.')).sort();
    assert.deepEqual(paths, ['floorPct', 'host', 'key']);
    assert.equal(gpuConfigSchema.safeParse({ id: 'g', driver: 'gpu', host: '10.0.0.9' }).success, false, 'host without mode node');
  });
});

describe('gpu driver (in-memory backend)', () => {
  test('telemetry: per-GPU flat fields and totals', async () => {
    const d = makeDriver(new MemGpuBackend());
    await d.start();
    const r = await d.read(READ);
    assert.equal(r.freshness, 'fresh');
    assert.equal(r.state, 'running');
    assert.equal(r.powerW, 1300);
    assert.equal(r.fields.gpu0PowerW, 650);
    assert.equal(r.fields.gpu1PowerLimitW, 700);
    assert.equal(r.fields.gpu0EnforcedLimitW, 700);
    assert.equal(r.fields.gpu0TemperatureC, 60);
    assert.equal(r.fields.gpu0UtilizationPct, 90);
    assert.equal(r.fields.gpu0EnergyJ, 1000);
    assert.equal(r.fields.restorePending, false);
    assert.deepEqual(d.capabilities.powerTarget, { minW: 400, maxW: 1400, reboots: false });
  });

  test('curtail caps to floorPct of default (never below min), restore returns the exact previous limit', async () => {
    const b = new MemGpuBackend();
    const g0 = b.gpus[0];
    assert.ok(g0);
    g0.limitMw = 612_000; // an operator-set limit to come back to
    const dir = stateDir();
    const d = makeDriver(b, { floorPct: 20, lockClocksMhz: { min: 300, max: 900 } }, dir);
    await d.start();
    const res = await d.curtail(ACT);
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.state, 'curtailed');
    assert.equal(g0.limitMw, 200_000, '20 % of 700 W = 140 W, raised to the 200 W minimum');
    assert.deepEqual(g0.clocks, [300, 900]);
    const saved = JSON.parse(readFileSync(join(dir, 'gpu-g1.json'), 'utf8')) as { gpus: Record<string, { preCurtailLimitMw: number }> };
    assert.equal(saved.gpus['GPU-mem-0']?.preCurtailLimitMw, 612_000);
    // a second curtail while capped must not overwrite the remembered limit with the cap
    await d.curtail(ACT);
    const back = await d.restore(ACT);
    assert.equal(back.confirmed, true);
    assert.equal(back.reading.state, 'running');
    assert.equal(g0.limitMw, 612_000);
    assert.equal(b.gpus[1]?.limitMw, 700_000);
    assert.equal(g0.clocks, null);
    const after = JSON.parse(readFileSync(join(dir, 'gpu-g1.json'), 'utf8')) as { gpus: object };
    assert.deepEqual(after.gpus, {});
  });

  test('floorW caps each GPU; gpus picks a subset', async () => {
    const b = new MemGpuBackend();
    const d = makeDriver(b, { floorW: 350, gpus: [1] });
    await d.start();
    await d.curtail(ACT);
    assert.equal(b.gpus[0]?.limitMw, 700_000);
    assert.equal(b.gpus[1]?.limitMw, 350_000);
    assert.equal((await d.read(READ)).fields.gpuCount, 1);
  });

  test('crash mid-curtailment: a new driver on the same stateDir restores the pre-curtail limit', async () => {
    const b = new MemGpuBackend();
    const dir = stateDir();
    const first = makeDriver(b, { floorW: 300 }, dir);
    await first.start();
    await first.curtail(ACT);
    // the agent dies here (no stop); a new one starts with the GPUs still capped
    const second = makeDriver(b, { floorW: 300 }, dir);
    await second.start();
    assert.equal((await second.read(READ)).state, 'curtailed');
    await second.curtail(ACT); // curtailed again before any restore: still remembers 700 W
    await second.restore(ACT);
    assert.deepEqual(
      b.gpus.map((g) => g.limitMw),
      [700_000, 700_000],
    );
  });

  test('a failed restore is retried, then reported loudly (restorePending), and a later restore clears it', async () => {
    const b = new MemGpuBackend();
    const d = makeDriver(b, { floorW: 300, restoreAttempts: 2 });
    await d.start();
    await d.curtail(ACT);
    b.failSet = 1; // first attempt fails, the retry succeeds
    await d.restore(ACT);
    assert.equal(b.gpus[0]?.limitMw, 700_000);
    await d.curtail(ACT);
    b.failSet = 100;
    const err = await expectCode(d.restore(ACT), 'DEVICE_ERROR', /restore failed after 2 attempt\(s\); 2 GPU\(s\) still capped/);
    assert.equal(err.context.restorePending, true);
    const r = await d.read(READ);
    assert.equal(r.fields.restorePending, true);
    assert.match(String(r.fields.restoreError), /insufficient permissions/);
    b.failSet = 0;
    await d.restore(ACT);
    assert.equal((await d.read(READ)).fields.restorePending, false);
    assert.equal(b.gpus[1]?.limitMw, 700_000);
  });

  test('setPowerTarget splits evenly within constraints; out of range is refused', async () => {
    const b = new MemGpuBackend();
    const d = makeDriver(b);
    await d.start();
    const r = await d.setPowerTarget(900, ACT);
    assert.equal(r.confirmed, true);
    assert.deepEqual(
      b.gpus.map((g) => g.limitMw),
      [450_000, 450_000],
    );
    await expectCode(d.setPowerTarget(300, ACT), 'CONFIG_INVALID', /outside 400\.\.1400 W/);
  });

  test('read never throws: missing then stale, with the error', async () => {
    const b = new MemGpuBackend();
    b.down = true;
    const d = makeDriver(b);
    await expectCode(d.start(), 'UNREACHABLE');
    const r0 = await d.read(READ);
    assert.equal(r0.freshness, 'missing');
    b.down = false;
    assert.equal((await d.read(READ)).freshness, 'fresh');
    b.down = true;
    const r2 = await d.read(READ);
    assert.equal(r2.freshness, 'stale');
    assert.equal(r2.error?.code, 'UNREACHABLE');
    assert.equal(r2.powerW, 1300);
  });
});

describe('gpu driver through the koffi binding and the mock libnvidia-ml', () => {
  const built = buildMockNvml();
  const skip = 'skip' in built ? built.skip : false;
  const lib = 'skip' in built ? '' : built.current;
  const mock = () => mockNvmlControl(lib);
  afterEach(() => {
    if (!skip) mock().reset();
  });

  test('telemetry, cap to floor, persisted pre-curtail limit, exact restore', { skip }, async () => {
    mock().setTimeConstantMs(0);
    const dir = stateDir();
    const d = gpuDriverLocal(dir, { floorW: 300 });
    await d.start();
    const r = await d.read(READ);
    assert.equal(r.freshness, 'fresh', JSON.stringify(r.error));
    assert.equal(r.fields.gpuCount, 2);
    assert.equal(r.fields.gpu0PowerLimitW, 700);
    assert.ok((r.powerW ?? 0) > 0);
    await d.setPowerTarget(1300, ACT); // operator limit 650 W per GPU: what restore must come back to
    const c = await d.curtail(ACT);
    assert.equal(c.confirmed, true);
    assert.equal(c.reading.fields.gpu0EnforcedLimitW, 300);
    assert.equal(c.reading.fields.gpu1EnforcedLimitW, 300);
    await d.curtail(ACT); // again while capped
    // crash: a new driver process on the same stateDir
    await d.stop();
    const d2 = gpuDriverLocal(dir, { floorW: 300 });
    await d2.start();
    assert.equal((await d2.read(READ)).state, 'curtailed');
    const back = await d2.restore(ACT);
    assert.equal(back.confirmed, true);
    assert.equal(back.reading.fields.gpu0PowerLimitW, 650);
    assert.equal(back.reading.fields.gpu1PowerLimitW, 650);
  });

  test('floorPct below the minimum constraint caps at the minimum (200 W)', { skip }, async () => {
    const d = gpuDriverLocal(stateDir(), { floorPct: 10 });
    await d.start();
    const c = await d.curtail(ACT);
    assert.equal(c.reading.fields.gpu0EnforcedLimitW, 200);
    await d.restore(ACT);
  });

  test('no permission: restore retried then restorePending; permission back -> restored', { skip }, async () => {
    const d = gpuDriverLocal(stateDir(), { floorW: 250, restoreAttempts: 2 });
    await d.start();
    await d.curtail(ACT);
    mock().setPermission(false);
    await expectCode(d.restore({ deadlineMs: 1500 }), 'AUTH_FAILED');
    const r = await d.read(READ);
    assert.equal(r.fields.restorePending, true);
    assert.equal(r.state, 'curtailed');
    mock().setPermission(true);
    const back = await d.restore(ACT);
    assert.equal(back.reading.fields.gpu0PowerLimitW, 700);
  });

  test('GPU lost mid-curtail: the error is clear, the others stay remembered, read goes stale', { skip }, async () => {
    const d = gpuDriverLocal(stateDir(), { floorW: 300 });
    await d.start();
    await d.read(READ);
    mock().loseGpu(1);
    const err = await d.curtail({ deadlineMs: 1000 }).then(
      () => assert.fail('curtail with a lost GPU succeeded'),
      (e: unknown) => e as RackpilotError,
    );
    assert.ok(err instanceof RackpilotError);
    const r = await d.read(READ);
    assert.equal(r.freshness, 'stale');
    assert.equal(r.fields.capped, true, 'GPU 0 was capped and is remembered for restore');
  });

  /** The software limit (mW) of each mock GPU, read through a separate NVML session (an error code for a lost one). */
  function limits(): (number | string)[] {
    const n = openNvml({ libraryPath: lib });
    try {
      return [0, 1].map((i) => {
        try {
          return n.limitMw(n.handleByIndex(i));
        } catch (e) {
          return (e as RackpilotError).code;
        }
      });
    } finally {
      n.close();
    }
  }

  function captured(): { log: Logger; lines: { level: number; msg: string }[] } {
    const lines: { level: number; msg: string }[] = [];
    const log = pino({ level: 'debug' }, { write: (l: string) => void lines.push(JSON.parse(l) as { level: number; msg: string }) });
    return { log, lines };
  }

  test('a GPU lost across a restart does not block the others: restore restores GPU 0, curtail caps it, the lost GPU is named', { skip }, async () => {
    mock().setTimeConstantMs(0);
    const dir = stateDir();
    const d = gpuDriverLocal(dir, { floorW: 300 });
    await d.start();
    const lostUuid = d.gpuList[1]?.uuid ?? '';
    await d.curtail(ACT);
    assert.deepEqual(limits(), [300_000, 300_000]);
    await d.stop();
    mock().loseGpu(1);
    const d2 = gpuDriverLocal(dir, { floorW: 300 });
    await d2.start();
    const err = await d2.restore(ACT).then(
      () => assert.fail('restore with a lost GPU reported success'),
      (e: unknown) => e as RackpilotError,
    );
    assert.ok(err instanceof RackpilotError);
    assert.ok(err.message.includes(lostUuid), err.message);
    assert.equal(limits()[0], 700_000, 'GPU 0 restored although GPU 1 is lost');
    const r = await d2.read(READ);
    assert.equal(r.fields.restorePending, true, 'the lost GPU is still capped and pending');
    // a fresh driver (nothing remembered) with GPU 1 already lost still caps GPU 0
    const d3 = gpuDriverLocal(stateDir(), { floorW: 300 });
    const e3 = await d3.curtail({ deadlineMs: 1500 }).then(
      () => assert.fail('curtail with a lost GPU reported success'),
      (e: unknown) => e as RackpilotError,
    );
    assert.match(e3.message, /index 1/);
    assert.equal(limits()[0], 300_000, 'GPU 0 capped although GPU 1 is lost');
  });

  test('restore retries back off within the deadline: a short glitch does not raise restorePending', { skip }, async () => {
    mock().setTimeConstantMs(0);
    const d = gpuDriverLocal(stateDir(), { floorW: 250, restoreAttempts: 3 });
    await d.start();
    await d.curtail(ACT);
    mock().setPermission(false);
    const t = setTimeout(() => mock().setPermission(true), 150);
    try {
      const back = await d.restore({ deadlineMs: 3000 });
      assert.equal(back.confirmed, true);
    } finally {
      clearTimeout(t);
    }
    assert.deepEqual(limits(), [700_000, 700_000]);
    assert.equal((await d.read(READ)).fields.restorePending, false);
  });

  test('a pending restore is retried from read() until it succeeds', { skip }, async () => {
    mock().setTimeConstantMs(0);
    const d = gpuDriverLocal(stateDir(), { floorW: 250, restoreAttempts: 1, pendingRestoreRetryMs: 100 });
    await d.start();
    await d.curtail(ACT);
    mock().setPermission(false);
    await expectCode(d.restore({ deadlineMs: 500 }), 'AUTH_FAILED');
    assert.equal((await d.read(READ)).fields.restorePending, true);
    mock().setPermission(true);
    const until = Date.now() + 4000;
    let pending: unknown = true;
    while (pending !== false && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
      pending = (await d.read(READ)).fields.restorePending;
    }
    assert.equal(pending, false, 'the background retry restored the GPUs');
    assert.deepEqual(limits(), [700_000, 700_000]);
  });

  test('a new curtail clears an old restorePending and restore error', { skip }, async () => {
    mock().setTimeConstantMs(0);
    const d = gpuDriverLocal(stateDir(), { floorW: 250, restoreAttempts: 1 });
    await d.start();
    await d.curtail(ACT);
    mock().setPermission(false);
    await expectCode(d.restore({ deadlineMs: 500 }), 'AUTH_FAILED');
    mock().setPermission(true);
    const c = await d.curtail(ACT);
    assert.equal(c.reading.state, 'curtailed');
    const r = await d.read(READ);
    assert.equal(r.fields.restorePending, false);
    assert.equal(r.fields.restoreError, null);
    await d.restore(ACT);
  });

  test('a restore cancelled by the dispatcher is a cancel: no FAILED log, no restorePending', { skip }, async () => {
    mock().setTimeConstantMs(0);
    const { log, lines } = captured();
    const d = gpuDriverLocal(stateDir(), { floorW: 250, restoreAttempts: 5 }, log);
    await d.start();
    await d.curtail(ACT);
    mock().setPermission(false);
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(), 50);
    await expectCode(d.restore({ deadlineMs: 3000, signal: ctl.signal }), 'CANCELLED');
    mock().setPermission(true);
    assert.equal((await d.read(READ)).fields.restorePending, false);
    assert.equal(
      lines.filter((l) => /FAILED/.test(l.msg)).length,
      0,
      lines.map((l) => l.msg).join('\n'),
    );
  });

  test('a restore that finds a GPU below its default limit with nothing remembered warns loudly', { skip }, async () => {
    mock().setTimeConstantMs(0);
    const other = gpuDriverLocal(stateDir(), {});
    await other.start();
    await other.setPowerTarget(1000, ACT); // 500 W each, not remembered anywhere
    const { log, lines } = captured();
    const d = gpuDriverLocal(stateDir(), { floorW: 250 }, log);
    await d.start();
    const back = await d.restore(ACT);
    assert.match(String(back.reading.fields.restoreWarning), /no remembered pre-curtail limit/);
    assert.ok(lines.some((l) => l.level >= 50 && /no remembered pre-curtail limit/.test(l.msg)));
    await other.setPowerTarget(1400, ACT);
  });

  function gpuDriverLocal(dir: string, over: Record<string, unknown>, log: Logger = logger): GpuDriver {
    const cfg = gpuConfigSchema.parse({ id: 'g1', driver: 'gpu', stateDir: dir, confirmPollMs: 20, libraryPath: lib, ...over });
    const d = new GpuDriver(cfg, { logger: log, now: Date.now });
    drivers.push(d);
    return d;
  }
});

describe('gpu state store', () => {
  test('a failed write leaves memory as the file says (forget that cannot be saved keeps the entry)', async () => {
    const dir = stateDir();
    const store = new GpuStateStore(dir, 'g1');
    await store.load();
    await store.remember('GPU-a', 700_000, 300_000, 1);
    rmSync(dir, { recursive: true, force: true });
    writeFileSync(dir, 'not a folder'); // every later write fails
    try {
      await expectCode(store.forget(['GPU-a']), 'INTERNAL');
      assert.deepEqual(store.capped(), ['GPU-a']);
      await expectCode(store.remember('GPU-b', 700_000, 300_000, 2), 'INTERNAL');
      assert.deepEqual(store.capped(), ['GPU-a']);
    } finally {
      rmSync(dir, { force: true });
    }
  });

  test('the folder is fsynced after the rename', async () => {
    const dir = stateDir();
    const store = new GpuStateStore(dir, 'g1');
    await store.load();
    const synced: string[] = [];
    const realOpen = fsp.open;
    const spy = nodeMock.method(fsp, 'open', async (...args: Parameters<typeof fsp.open>) => {
      const fh = await realOpen(...args);
      const path = String(args[0]);
      const realSync = fh.sync.bind(fh);
      fh.sync = () => {
        synced.push(path);
        return realSync();
      };
      return fh;
    });
    syncBuiltinESMExports();
    try {
      await store.remember('GPU-a', 700_000, 300_000, 1);
    } finally {
      spy.mock.restore();
      syncBuiltinESMExports();
    }
    assert.ok(synced.includes(dir), `synced: ${synced.join(', ')}`);
  });
});
