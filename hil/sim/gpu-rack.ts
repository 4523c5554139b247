/**
 * GPUs for a simulated rack: the mock libnvidia-ml (hil/sim/mock-nvml, built
 * with the system C compiler) loaded by the real binding, twice: one GPU
 * server the agent reads locally (`mode: local`), and one it reaches through
 * `rackpilot gpu-node` on loopback (`mode: node`, HMAC-signed requests).
 * Each is a separate copy of the library, so each has its own GPUs.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGpuNode, type GpuNode } from '../../agent/gpu-node.js';
import { LocalGpuBackend } from '../../drivers/gpu/local.js';
import { buildMockNvml } from '../testing/mock-nvml.js';

export interface GpuRack {
  devices: Record<string, unknown>[];
  /** Library paths of the two simulated GPU servers (for tests that drive the mock). */
  libraries: { local: string; node: string };
  close(): Promise<void>;
}

/** Undefined (with the reason) when the mock cannot be built here, e.g. no C compiler. */
export async function startGpuRack(): Promise<GpuRack | { skip: string }> {
  let built;
  try {
    built = buildMockNvml();
  } catch (err) {
    return { skip: `mock NVML could not be built: ${(err as Error).message}` };
  }
  if ('skip' in built) return built;
  const dir = mkdtempSync(join(tmpdir(), 'rackpilot-gpus-'));
  const nodeLib = join(dir, 'node', 'libnvidia-ml.so.1');
  mkdirSync(join(dir, 'node'));
  copyFileSync(built.current, nodeLib);
  const backend = new LocalGpuBackend({ libraryPath: nodeLib });
  await backend.open();
  const key = randomBytes(24).toString('hex');
  let node: GpuNode;
  try {
    node = await startGpuNode({ backend, key, host: '127.0.0.1', port: 0 });
  } catch (err) {
    await backend.close();
    throw err;
  }
  const devices = [
    // the agent on the GPU server itself (here: the same process), through the binding
    { id: 'gpu-server-01', driver: 'gpu', name: 'AI node 1 (local NVML)', mode: 'local', libraryPath: built.current, floorPct: 50, stateDir: join(dir, 'state-local') },
    // a GPU server running `rackpilot gpu-node`, reached over the network
    { id: 'gpu-server-02', driver: 'gpu', name: 'AI node 2 (gpu-node)', mode: 'node', host: node.host, port: node.port, key, floorPct: 50, stateDir: join(dir, 'state-node') },
  ];
  return {
    devices,
    libraries: { local: built.current, node: nodeLib },
    close: async () => {
      await node.close();
      await backend.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
