/**
 * NVML binding benchmark (prints figures, asserts nothing): per-call latency
 * through drivers/gpu/nvml.ts (koffi FFI) on the mock NVML library
 * (hil/sim/mock-nvml, built with gcc). The mock answers in well under a
 * microsecond, so these figures are the binding's own overhead; a real
 * driver adds its own time per call.
 *   - powerInstantMw(): nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT);
 *   - powerInstantMw() on the old-driver build (fallback nvmlDeviceGetPowerUsage);
 *   - setLimitMw(): nvmlDeviceSetPowerManagementLimit, alternating two limits;
 *   - LocalGpuBackend.read(): the whole telemetry read (10 NVML calls), awaited.
 * Set NVML_LIBRARY to run the same calls on a real libnvidia-ml.so.1
 * (set limit only with BENCH_NVML_SET=1, as root, restoring the old limit).
 *   npm run bench:nvml
 */
import { performance } from 'node:perf_hooks';
import { LocalGpuBackend } from '../../drivers/gpu/local.js';
import { openNvml } from '../../drivers/gpu/nvml.js';
import { buildMockNvml } from '../testing/mock-nvml.js';

const N = Number(process.env.BENCH_N ?? 10_000);

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => ((s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN) * 1000).toFixed(2);
  return `median ${q(0.5)} µs, p90 ${q(0.9)} µs, p99 ${q(0.99)} µs, max ${((s[s.length - 1] ?? NaN) * 1000).toFixed(1)} µs (n=${s.length})`;
}

function time(fn: (i: number) => void): number[] {
  for (let i = 0; i < Math.min(1000, N); i++) fn(i); // warm-up (JIT)
  const xs = new Array<number>(N);
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    fn(i);
    xs[i] = performance.now() - t0;
  }
  return xs;
}

async function benchLibrary(label: string, path: string, doSet: boolean): Promise<void> {
  const n = openNvml({ libraryPath: path });
  try {
    const d = n.handleByIndex(0);
    console.log(`${label}: read power (${n.hasFieldValues ? 'field 186' : 'GetPowerUsage fallback'}): ${stats(time(() => n.powerInstantMw(d)))}`);
    console.log(`${label}: enforced limit read: ${stats(time(() => n.enforcedLimitMw(d)))}`);
    if (doSet) {
      const before = n.limitMw(d);
      const { minMw, maxMw } = n.constraints(d);
      const a = Math.max(minMw, Math.min(maxMw, before - 50_000));
      try {
        console.log(`${label}: set limit: ${stats(time((i) => n.setLimitMw(d, i % 2 ? a : before)))}`);
      } finally {
        n.setLimitMw(d, before);
      }
    }
    const be = new LocalGpuBackend({ libraryPath: path });
    await be.open();
    try {
      const uuid = n.uuid(d);
      const xs: number[] = [];
      for (let i = 0; i < N; i++) {
        const t0 = performance.now();
        await be.read(uuid);
        xs.push(performance.now() - t0);
      }
      console.log(`${label}: LocalGpuBackend.read() (10 calls, awaited): ${stats(xs)}`);
    } finally {
      await be.close();
    }
  } finally {
    n.close();
  }
}

async function main(): Promise<void> {
  if (process.env.NVML_LIBRARY) {
    await benchLibrary(`real NVML (${process.env.NVML_LIBRARY})`, process.env.NVML_LIBRARY, process.env.BENCH_NVML_SET === '1');
    return;
  }
  const built = buildMockNvml();
  if ('skip' in built) {
    console.log(`skipped: ${built.skip}`);
    return;
  }
  console.log(`NVML binding on the mock library, node ${process.version}, N=${N}`);
  await benchLibrary('mock', built.current, true);
  await benchLibrary('mock old driver', built.oldDriver, true);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
