/**
 * Builds hil/sim/mock-nvml/mock_nvml.c into libnvidia-ml.so.1 with the system
 * C compiler (once per source version, cached under the OS temp dir) and
 * gives tests the library paths plus the mock's control functions.
 *
 * The controls are loaded through koffi from the same path the binding loads,
 * so dlopen returns the same handle and they act on the same state.
 * Without gcc the tests skip visibly (they fail under CI=true).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import { repoRoot } from './root.js';
import { requireTool } from './tools.js';

export interface MockNvmlBuild {
  /** libnvidia-ml.so.1 with the whole subset. */
  current: string;
  /** The same without nvmlDeviceGetFieldValues, as an old driver. */
  oldDriver: string;
}

export const MOCK_NVML_SOURCE = 'hil/sim/mock-nvml/mock_nvml.c';

function compile(gcc: string, source: string, out: string, defines: string[]): void {
  if (existsSync(out)) return;
  mkdirSync(join(out, '..'), { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  execFileSync(gcc, ['-shared', '-fPIC', '-O2', ...defines, '-o', tmp, source, '-lm', '-lpthread'], { stdio: ['ignore', 'ignore', 'pipe'] });
  renameSync(tmp, out); // atomic: concurrent test files may build at once
}

/** Builds (or finds cached) mock libraries; `{skip}` when gcc is missing. */
export function buildMockNvml(): MockNvmlBuild | { skip: string } {
  const tool = requireTool('gcc', 'gcc');
  if ('skip' in tool) return tool;
  const source = join(repoRoot(), MOCK_NVML_SOURCE);
  const hash = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), `rackpilot-mock-nvml-${hash}`);
  const current = join(dir, 'current', 'libnvidia-ml.so.1');
  const oldDriver = join(dir, 'old-driver', 'libnvidia-ml.so.1');
  compile(tool.path, source, current, []);
  compile(tool.path, source, oldDriver, ['-DMOCK_NVML_OLD_DRIVER']);
  return { current, oldDriver };
}

/** The mock's test controls (see mock_nvml.c). */
export interface MockNvmlControl {
  setPermission(allowed: boolean): void;
  loseGpu(index: number): void;
  setLoadMw(index: number, mw: number): void;
  setTimeConstantMs(ms: number): void;
  /** Back to defaults (env re-read); keeps the init count. */
  reset(): void;
  /** How many nvmlInit_v2 calls are not yet matched by nvmlShutdown. */
  initCount(): number;
}

export function mockNvmlControl(libraryPath: string): MockNvmlControl {
  const lib = koffi.load(libraryPath);
  const setPermission = lib.func('void mock_nvml_set_permission(int allowed)');
  const loseGpu = lib.func('void mock_nvml_lose_gpu(unsigned int idx)');
  const setLoad = lib.func('void mock_nvml_set_load_mw(unsigned int idx, unsigned int mw)');
  const setTau = lib.func('void mock_nvml_set_time_constant_ms(unsigned int ms)');
  const reset = lib.func('void mock_nvml_reset(void)');
  const initCount = lib.func('unsigned int mock_nvml_init_count(void)');
  return {
    setPermission: (allowed) => void setPermission(allowed ? 1 : 0),
    loseGpu: (index) => void loseGpu(index),
    setLoadMw: (index, mw) => void setLoad(index, mw),
    setTimeConstantMs: (ms) => void setTau(ms),
    reset: () => void reset(),
    initCount: () => initCount() as number,
  };
}
