/**
 * gpu-node benchmark (prints figures, asserts nothing): the rack agent's
 * NodeGpuBackend against `startGpuNode` on loopback, serving the real koffi
 * binding over the mock libnvidia-ml (built with gcc), keep-alive HTTP,
 * HMAC per request and per answer:
 * 1. read (one GPU) round trip, median/p90;
 * 2. setPowerLimit round trip, median/p90;
 * 3. the GPU driver's read() of a 2-GPU server through the node.
 *   npm run bench:gpu-node
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startGpuNode } from '../../agent/gpu-node.js';
import { GpuDriver } from '../../drivers/gpu/driver.js';
import { LocalGpuBackend } from '../../drivers/gpu/local.js';
import { NodeGpuBackend } from '../../drivers/gpu/node-client.js';
import { gpuConfigSchema } from '../../drivers/gpu/schema.js';
import { buildMockNvml, mockNvmlControl } from '../testing/mock-nvml.js';

const N = 2000;
const KEY = 'bench-key-0123456789abcdef';

function stats(xs: number[], unit = 'ms', digits = 3): string {
  const s = [...xs].sort((a, b) => a - b);
  const pick = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
  return `median ${pick(0.5).toFixed(digits)} ${unit}, p90 ${pick(0.9).toFixed(digits)} ${unit}, max ${(s.at(-1) ?? NaN).toFixed(digits)} ${unit} (n=${s.length})`;
}

async function timed(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n + 50; i++) {
    const t0 = performance.now();
    await fn(i);
    if (i >= 50) out.push(performance.now() - t0); // the first calls warm up
  }
  return out;
}

async function main(): Promise<void> {
  const built = buildMockNvml();
  if ('skip' in built) throw new Error(built.skip);
  mockNvmlControl(built.current).setTimeConstantMs(0);
  const local = new LocalGpuBackend({ libraryPath: built.current });
  await local.open();
  const node = await startGpuNode({ backend: local, key: KEY, host: '127.0.0.1', port: 0 });
  const client = new NodeGpuBackend({ host: '127.0.0.1', port: node.port, key: KEY, connectTimeoutMs: 1000, readTimeoutMs: 2000, maxResponseBytes: 65536 });
  const dir = mkdtempSync(join(tmpdir(), 'rp-gpunode-bench-'));
  try {
    const [gpu] = await client.list();
    if (!gpu) throw new Error('no GPU');
    const direct = await timed(N, () => local.read(gpu.uuid));
    const read = await timed(N, () => client.read(gpu.uuid));
    const set = await timed(N, (i) => client.setPowerLimit(gpu.uuid, i % 2 ? 650_000 : 700_000));
    const cfg = gpuConfigSchema.parse({ id: 'bench', driver: 'gpu', mode: 'node', host: '127.0.0.1', port: node.port, key: KEY, stateDir: dir });
    const driver = new GpuDriver(cfg, { logger: pino({ level: 'silent' }), now: Date.now });
    await driver.start();
    const dread = await timed(500, () => driver.read({ deadlineMs: 2000 }));
    await driver.stop();
    process.stdout.write(`gpu-node on loopback (mock libnvidia-ml through the koffi binding, node ${process.version}):\n`);
    process.stdout.write(`  binding read, in process (baseline)   ${stats(direct)}\n`);
    process.stdout.write(`  node read (1 GPU) round trip          ${stats(read)}\n`);
    process.stdout.write(`  node setPowerLimit round trip         ${stats(set)}\n`);
    process.stdout.write(`  driver read() of 2 GPUs via the node  ${stats(dread)}\n`);
  } finally {
    await client.close();
    await node.close();
    await local.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
