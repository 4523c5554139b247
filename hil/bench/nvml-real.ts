/**
 * Runs the NVML binding's read path against a REAL NVIDIA driver (the
 * device machine lent to some sessions) and prints figures; asserts nothing.
 * The set path is exercised only as a no-op: the current limit is written
 * back unchanged (the accelerator's settings are left as they were), and
 * only with --set-same.
 *   node dist/hil/bench/nvml-real.js [--library PATH] [--set-same]
 */
import { parseArgs } from 'node:util';
import { openNvml } from '../../drivers/gpu/nvml.js';

const { values } = parseArgs({ options: { library: { type: 'string' }, 'set-same': { type: 'boolean' }, n: { type: 'string', default: '10000' } } });

function stats(us: number[]): string {
  const s = [...us].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
  return `median ${q(0.5).toFixed(2)} µs, p90 ${q(0.9).toFixed(2)} µs, p99 ${q(0.99).toFixed(2)} µs, max ${(s.at(-1) ?? NaN).toFixed(1)} µs (n=${s.length})`;
}

function time(n: number, fn: () => unknown): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    out.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return out;
}

const n = Number(values.n);
const t0 = performance.now();
const nvml = openNvml(values.library ? { libraryPath: values.library } : {});
console.log(`nvmlInit + load: ${(performance.now() - t0).toFixed(1)} ms; uid ${process.getuid?.() ?? '?'}`);
try {
  const count = nvml.deviceCount();
  console.log(`devices: ${count}`);
  for (let i = 0; i < count; i++) {
    const d = nvml.handleByIndex(i);
    const c = nvml.constraints(d);
    console.log(
      `GPU ${i}: ${nvml.name(d)} ${nvml.uuid(d)}; instant ${(nvml.powerInstantMw(d) / 1000).toFixed(1)} W, average ${String((nvml.powerAverageMw(d) ?? NaN) / 1000)} W, ` +
        `limit ${nvml.limitMw(d) / 1000} W, enforced ${nvml.enforcedLimitMw(d) / 1000} W, default ${nvml.defaultLimitMw(d) / 1000} W, ` +
        `constraints ${JSON.stringify(c)}, temp ${nvml.temperatureC(d)} °C, util ${JSON.stringify(nvml.utilization(d))}, energy ${nvml.totalEnergyMj(d)} mJ`,
    );
  }
  const d = nvml.handleByIndex(0);
  console.log(`read power (instant, field 186 or fallback): ${stats(time(n, () => nvml.powerInstantMw(d)))}`);
  console.log(`read power usage (nvmlDeviceGetPowerUsage): ${stats(time(n, () => nvml.powerUsageMw(d)))}`);
  console.log(`read enforced limit: ${stats(time(n, () => nvml.enforcedLimitMw(d)))}`);
  if (values['set-same']) {
    const cur = nvml.limitMw(d);
    try {
      const lat = time(20, () => nvml.setLimitMw(d, cur));
      console.log(`set limit to its current value ${cur / 1000} W (no change): ${stats(lat)}; limit after ${nvml.limitMw(d) / 1000} W`);
    } catch (err) {
      console.log(`set limit (same value) refused: ${(err as Error).message}`);
    }
  }
} finally {
  nvml.close();
}
