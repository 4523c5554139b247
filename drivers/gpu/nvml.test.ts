/**
 * The NVML binding and LocalGpuBackend against the mock NVML library
 * (hil/sim/mock-nvml), compiled with gcc and loaded through dlopen by the
 * real binding. Without gcc these tests skip visibly (fail under CI=true).
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { expectCode } from '../../hil/testing/expect-code.js';
import { buildMockNvml, mockNvmlControl, type MockNvmlBuild, type MockNvmlControl } from '../../hil/testing/mock-nvml.js';
import { RackpilotError } from '../lib/errors.js';
import { LocalGpuBackend } from './local.js';
import { openNvml } from './nvml.js';

const built = buildMockNvml();
const skip = 'skip' in built ? built.skip : false;

describe('NVML binding on the mock library', { skip }, () => {
  let lib: MockNvmlBuild;
  let mock: MockNvmlControl;
  before(() => {
    lib = built as MockNvmlBuild;
    mock = mockNvmlControl(lib.current);
  });
  const fresh = (): void => {
    mock.reset();
    mock.setTimeConstantMs(0);
  };

  test('reads: count, handles, identity, power, limits, energy, temperature, utilization', () => {
    fresh();
    const n = openNvml({ libraryPath: lib.current });
    try {
      assert.equal(n.hasFieldValues, true);
      assert.equal(n.deviceCount(), 2);
      const d0 = n.handleByIndex(0);
      const d1 = n.handleByIndex(1);
      assert.notEqual(d0, d1);
      const uuid = n.uuid(d1);
      assert.match(uuid, /^GPU-[0-9a-f-]+$/);
      assert.equal(n.handleByUuid(uuid), d1);
      assert.equal(n.name(d0), 'NVIDIA H100 80GB HBM3');
      assert.match(n.serial(d0), /^\d{13}$/);
      assert.equal(n.powerInstantMw(d0), 650000);
      assert.equal(n.powerAverageMw(d0), 650000);
      assert.equal(n.limitMw(d0), 700000);
      assert.equal(n.enforcedLimitMw(d0), 700000);
      assert.equal(n.defaultLimitMw(d0), 700000);
      assert.deepEqual(n.constraints(d0), { minMw: 200000, maxMw: 700000 });
      const e1 = n.totalEnergyMj(d0);
      assert.ok(e1 >= 1e6);
      const t0 = Date.now();
      while (Date.now() - t0 < 30); // let energy integrate ~30 ms at 650 W
      const e2 = n.totalEnergyMj(d0);
      assert.ok(e2 - e1 >= 650 * 25 && e2 - e1 < 650 * 200, `energy delta ${e2 - e1} mJ`);
      const temp = n.temperatureC(d0);
      assert.ok(temp > 30 && temp < 100);
      assert.deepEqual(n.utilization(d0), { gpuPct: 100, memoryPct: 50 });
      assert.equal(n.powerUsageMw(d0), 650000);
      assert.throws(() => n.handleByUuid('GPU-nope'), (e: unknown) => e instanceof RackpilotError && e.code === 'DEVICE_ERROR');
    } finally {
      n.close();
    }
  });

  test('set limit: enforced limit reads back, power follows with the time constant', async () => {
    fresh();
    mock.setTimeConstantMs(50);
    const n = openNvml({ libraryPath: lib.current });
    try {
      const d = n.handleByIndex(0);
      n.setLimitMw(d, 300000);
      assert.equal(n.limitMw(d), 300000);
      assert.equal(n.enforcedLimitMw(d), 300000);
      const p0 = n.powerInstantMw(d);
      assert.ok(p0 > 300000, `power right after the cap is still high: ${p0}`);
      await new Promise((r) => setTimeout(r, 400));
      const p1 = n.powerInstantMw(d);
      assert.ok(Math.abs(p1 - 300000) < 1000, `power settles at the cap: ${p1}`);
      n.setLimitMw(d, 700000);
      assert.equal(n.enforcedLimitMw(d), 700000);
    } finally {
      n.close();
    }
  });

  test('limit outside the constraints: CONFIG_INVALID naming them', () => {
    fresh();
    const n = openNvml({ libraryPath: lib.current });
    try {
      const d = n.handleByIndex(0);
      assert.throws(
        () => n.setLimitMw(d, 150000),
        (e: unknown) => e instanceof RackpilotError && e.code === 'CONFIG_INVALID' && /150\.0 W is outside the GPU's constraints 200\.\.700 W/.test(e.message),
      );
      assert.equal(n.enforcedLimitMw(d), 700000);
      assert.throws(() => n.setLockedClocks(d, 1500, 900), (e: unknown) => e instanceof RackpilotError && e.code === 'CONFIG_INVALID');
      n.setLockedClocks(d, 900, 1500);
      n.resetLockedClocks(d);
    } finally {
      n.close();
    }
  });

  test('no permission: AUTH_FAILED saying root or CAP_SYS_ADMIN', () => {
    fresh();
    mock.setPermission(false);
    const n = openNvml({ libraryPath: lib.current });
    try {
      const d = n.handleByIndex(0);
      assert.throws(
        () => n.setLimitMw(d, 300000),
        (e: unknown) => e instanceof RackpilotError && e.code === 'AUTH_FAILED' && !e.retriable && /needs root \(or CAP_SYS_ADMIN\)/.test(e.message),
      );
      assert.throws(() => n.setLockedClocks(d, 900, 1500), (e: unknown) => e instanceof RackpilotError && e.code === 'AUTH_FAILED');
      assert.equal(n.powerInstantMw(d), 650000, 'reads still work');
    } finally {
      n.close();
      mock.setPermission(true);
    }
  });

  test('lost GPU: UNREACHABLE "fell off the bus", other GPUs unaffected', () => {
    fresh();
    const n = openNvml({ libraryPath: lib.current });
    try {
      const d0 = n.handleByIndex(0);
      const d1 = n.handleByIndex(1);
      mock.loseGpu(0);
      for (const call of [() => n.powerInstantMw(d0), () => n.enforcedLimitMw(d0), () => n.setLimitMw(d0, 300000), () => n.handleByIndex(0)]) {
        assert.throws(call, (e: unknown) => e instanceof RackpilotError && e.code === 'UNREACHABLE' && e.retriable && /fell off the bus/.test(e.message));
      }
      assert.equal(n.powerInstantMw(d1), 650000);
    } finally {
      n.close();
      mock.reset();
    }
  });

  test('missing library: UNSUPPORTED saying how to install the driver', () => {
    assert.throws(
      () => openNvml({ libraryPath: '/nonexistent/libnvidia-ml.so.1' }),
      (e: unknown) => e instanceof RackpilotError && e.code === 'UNSUPPORTED' && /install the NVIDIA driver/.test(e.message) && /library path/.test(e.message),
    );
  });

  test('old driver without nvmlDeviceGetFieldValues: power falls back to nvmlDeviceGetPowerUsage', () => {
    const old = mockNvmlControl(lib.oldDriver);
    old.reset();
    old.setTimeConstantMs(0);
    const n = openNvml({ libraryPath: lib.oldDriver });
    try {
      assert.equal(n.hasFieldValues, false);
      const d = n.handleByIndex(0);
      n.setLimitMw(d, 300000);
      // GetPowerUsage is the 1 s average: right after the cap it is still near 650 W
      const p = n.powerInstantMw(d);
      assert.ok(p > 500000, `fallback read ${p}`);
      assert.equal(n.powerAverageMw(d), null);
      assert.equal(n.enforcedLimitMw(d), 300000);
    } finally {
      n.close();
    }
  });

  test('init/shutdown are reference counted per library', () => {
    fresh();
    const base = mock.initCount();
    const a = openNvml({ libraryPath: lib.current });
    const b = openNvml({ libraryPath: lib.current });
    assert.equal(mock.initCount(), base + 1, 'one nvmlInit_v2 for both sessions');
    a.close();
    a.close(); // idempotent
    assert.equal(mock.initCount(), base + 1);
    assert.equal(b.deviceCount(), 2, 'the other session still works');
    assert.throws(() => a.deviceCount(), (e: unknown) => e instanceof RackpilotError && e.code === 'NOT_STARTED');
    b.close();
    assert.equal(mock.initCount(), base, 'last close shuts NVML down');
    const c = openNvml({ libraryPath: lib.current });
    assert.equal(mock.initCount(), base + 1, 'reopens after a full close');
    c.close();
  });

  test('LocalGpuBackend: list, read, set limit, errors carry the GPU', async () => {
    fresh();
    const be = new LocalGpuBackend({ libraryPath: lib.current });
    await expectCode(be.list(), 'NOT_STARTED');
    await be.open();
    try {
      const gpus = await be.list();
      assert.equal(gpus.length, 2);
      const g = gpus[1]!;
      assert.equal(g.index, 1);
      assert.equal(g.name, 'NVIDIA H100 80GB HBM3');
      const s = await be.read(g.uuid);
      assert.equal(s.powerMw, 650000);
      assert.equal(s.enforcedLimitMw, 700000);
      assert.equal(s.minLimitMw, 200000);
      assert.equal(s.maxLimitMw, 700000);
      assert.equal(s.utilizationPct, 100);
      assert.ok(s.energyMj > 0);
      await be.setPowerLimit(g.uuid, 250000);
      assert.equal((await be.read(g.uuid)).enforcedLimitMw, 250000);
      await be.setLockedClocks(g.uuid, 900, 1400);
      await be.resetLockedClocks(g.uuid);
      const err = await expectCode(be.setPowerLimit(g.uuid, 800000), 'CONFIG_INVALID', /GPU GPU-.*200\.\.700 W/);
      assert.equal(err.context.gpu, g.uuid);
      await expectCode(be.read('GPU-unknown'), 'DEVICE_ERROR');
      mock.loseGpu(1);
      await expectCode(be.read(g.uuid), 'UNREACHABLE', /fell off the bus/);
    } finally {
      await be.close();
      mock.reset();
    }
  });

  test('LocalGpuBackend: missing library rejects open()', async () => {
    const be = new LocalGpuBackend({ libraryPath: '/nonexistent/libnvidia-ml.so.1' });
    await assert.rejects(be.open(), (e: unknown) => e instanceof RackpilotError && e.code === 'UNSUPPORTED');
  });
});
