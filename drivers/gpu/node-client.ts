/**
 * GpuBackend over the network: the rack agent's side of `rackpilot
 * gpu-node`. Same deadlines and error model as any device: HttpClient
 * (keep-alive, connect and overall deadlines, reply cap), transport errors
 * as RackpilotError codes, 401 -> AUTH_FAILED naming the node, errors the
 * node reports (NVML codes mapped there) passed through with their code.
 */
import type { z } from 'zod';
import { HttpClient } from '../lib/http.js';
import { ERROR_CODES, RackpilotError, type ErrorCode } from '../lib/errors.js';
import type { GpuBackend, GpuInfo, GpuPowerState } from './backend.js';
import {
  GPU_NODE_CLIENT_IDLE_MS,
  GPU_NODE_PATHS,
  HEADER_SIG,
  answerSchema,
  gpuInfoSchema,
  gpuPowerStateSchema,
  macEquals,
  responseMac,
  signRequest,
  type GpuNodeOp,
} from './node-protocol.js';

export interface NodeClientOptions {
  host: string;
  port: number;
  /** Shared secret; never logged or put in errors. */
  key: string;
  connectTimeoutMs: number;
  readTimeoutMs: number;
  maxResponseBytes: number;
  now?: () => number;
}

export class NodeGpuBackend implements GpuBackend {
  private readonly http: HttpClient;
  private readonly where: string;
  private readonly now: () => number;

  constructor(private readonly opts: NodeClientOptions) {
    this.http = new HttpClient({
      host: opts.host,
      port: opts.port,
      connectTimeoutMs: opts.connectTimeoutMs,
      readTimeoutMs: opts.readTimeoutMs,
      maxResponseBytes: opts.maxResponseBytes,
      maxSockets: 4,
      idleSocketMs: GPU_NODE_CLIENT_IDLE_MS,
    });
    this.where = `gpu-node ${opts.host}:${opts.port}`;
    this.now = opts.now ?? Date.now;
  }

  /** Checks that the node answers and accepts our key. */
  async open(): Promise<void> {
    await this.list();
  }

  close(): Promise<void> {
    this.http.close();
    return Promise.resolve();
  }

  async list(): Promise<GpuInfo[]> {
    return this.parse('list', gpuInfoSchema.array(), await this.call('list', {}));
  }

  async read(uuid: string): Promise<GpuPowerState> {
    return this.parse('read', gpuPowerStateSchema, await this.call('read', { uuid }));
  }

  async setPowerLimit(uuid: string, mw: number): Promise<void> {
    await this.call('setPowerLimit', { uuid, mw: Math.round(mw) });
  }

  async setLockedClocks(uuid: string, minMhz: number, maxMhz: number): Promise<void> {
    await this.call('setLockedClocks', { uuid, minMhz, maxMhz });
  }

  async resetLockedClocks(uuid: string): Promise<void> {
    await this.call('resetLockedClocks', { uuid });
  }

  private parse<T>(op: GpuNodeOp, schema: z.ZodType<T>, v: unknown): T {
    const r = schema.safeParse(v);
    if (!r.success) throw new RackpilotError('MALFORMED_RESPONSE', `${this.where}: ${op} answer has an unexpected shape (is the node the same rackpilot version?)`);
    return r.data;
  }

  private async call(op: GpuNodeOp, payload: object, signal?: AbortSignal): Promise<unknown> {
    const path = GPU_NODE_PATHS[op];
    const body = JSON.stringify(payload);
    const signed = signRequest(this.opts.key, path, body, this.now());
    const res = await this.http.request({
      method: 'POST',
      path,
      headers: { ...signed.headers, 'content-type': 'application/json' },
      body,
      ...(signal ? { signal } : {}),
    });
    const text = res.text();
    if (res.status === 401) {
      let reason = 'bad credentials';
      try {
        const a = answerSchema.parse(JSON.parse(text));
        if (!a.ok) reason = a.error.message;
      } catch {
        /* keep the generic reason */
      }
      throw new RackpilotError(
        'AUTH_FAILED',
        `${this.where} rejected our request (${reason}): check that the device's key matches the node's --key-file and that both clocks are in sync (NTP)`,
        { host: this.opts.host, port: this.opts.port },
      );
    }
    const sig = res.headers[HEADER_SIG];
    if (typeof sig !== 'string' || !macEquals(sig, responseMac(this.opts.key, signed.nonce, res.status, res.body))) {
      throw new RackpilotError('AUTH_FAILED', `${this.where}: the answer is not signed with our key (HTTP ${res.status}); is this really a rackpilot gpu-node with the same key?`, {
        host: this.opts.host,
        port: this.opts.port,
      });
    }
    let answer: z.output<typeof answerSchema>;
    try {
      answer = answerSchema.parse(JSON.parse(text));
    } catch {
      throw new RackpilotError('MALFORMED_RESPONSE', `${this.where}: ${op} answer (HTTP ${res.status}) is not a gpu-node answer`);
    }
    if (!answer.ok) {
      const code: ErrorCode = answer.error.code in ERROR_CODES ? (answer.error.code as ErrorCode) : 'DEVICE_ERROR';
      throw new RackpilotError(code, `${this.where}: ${answer.error.message}`, { host: this.opts.host, port: this.opts.port });
    }
    return answer.result;
  }
}
