import type { DriverDefinition } from '../contract.js';
import { GpuDriver } from './driver.js';
import { gpuConfigSchema } from './schema.js';

export const gpuDriver = {
  id: 'gpu',
  kind: 'gpu',
  description: 'NVIDIA GPU server through NVML: locally (koffi binding) or via a `rackpilot gpu-node`; curtail caps power limits, restore returns the remembered ones',
  configSchema: gpuConfigSchema,
  create: (config, ctx) => new GpuDriver(config, ctx),
} satisfies DriverDefinition<typeof gpuConfigSchema>;
