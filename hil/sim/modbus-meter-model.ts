/**
 * What a simulated Modbus meter measures and how it answers a request PDU:
 * register values from the same map data the driver reads
 * (drivers/modbus-meter/maps.ts), frequency and power following a scripted
 * scenario over time, and Modbus exception answers.
 */
import { BUILTIN_MAPS, encodeRegister, registerCount, type BuiltinMeter, type RegisterDef } from '../../drivers/modbus-meter/maps.js';

/** From `atMs` after the scenario start, for `forMs` (or for good), the meter reports these values. */
export interface ScenarioStep {
  atMs: number;
  forMs?: number;
  frequencyHz?: number;
  powerW?: number;
  /** Values of other registers of a generic map, by name. */
  values?: Record<string, number>;
}

export const EXCEPTION = { illegalFunction: 1, illegalAddress: 2, illegalValue: 3, deviceFailure: 4, gatewayTargetFailed: 11 } as const;

export interface MeterModelOptions {
  /** A built-in map or a list of registers (a generic meter). */
  meter: BuiltinMeter | readonly RegisterDef[];
  frequencyHz?: number;
  powerW?: number;
  now?: () => number;
}

export class MeterModel {
  readonly registers: readonly RegisterDef[];
  /** Values when no scenario step applies; set freely (`base.powerW = ...`). */
  readonly base: Record<string, number>;
  /** Where power comes from when set (e.g. the rack's simulated load); overrides base.powerW. */
  powerSource: (() => number) | undefined;
  /** Reads covering this address answer this exception (a fault switch). */
  exceptionAt: { address: number; code: number } | undefined;
  private steps: ScenarioStep[] = [];
  private startedAt = 0;
  private readonly now: () => number;
  /** Highest address (exclusive) answered per function; beyond it: illegal data address. */
  private readonly limits = new Map<number, number>();

  constructor(opts: MeterModelOptions) {
    this.registers = typeof opts.meter === 'string' ? BUILTIN_MAPS[opts.meter].registers : opts.meter;
    this.now = opts.now ?? Date.now;
    this.base = { frequencyHz: opts.frequencyHz ?? 50, powerW: opts.powerW ?? 10_000 };
    for (const r of this.registers) {
      this.base[r.name] ??= 0;
      const end = r.address + registerCount(r.type) + 64;
      this.limits.set(r.function, Math.max(this.limits.get(r.function) ?? 0, Math.min(end, 65536)));
    }
  }

  /** Starts a scenario now (replacing any running one); returns its start time (epoch ms). */
  runScenario(steps: readonly ScenarioStep[]): number {
    this.steps = [...steps].sort((a, b) => a.atMs - b.atMs);
    this.startedAt = this.now();
    return this.startedAt;
  }

  get scenarioStartedAt(): number {
    return this.startedAt;
  }

  /** The value the meter reports now for a register name. */
  value(name: string, at = this.now()): number {
    const t = at - this.startedAt;
    let v: number | undefined;
    for (const s of this.steps) {
      if (s.atMs > t || (s.forMs !== undefined && t >= s.atMs + s.forMs)) continue;
      const sv = name === 'frequencyHz' ? s.frequencyHz : name === 'powerW' ? s.powerW : s.values?.[name];
      if (sv !== undefined) v = sv;
    }
    if (v !== undefined) return v;
    if (name === 'powerW' && this.powerSource) return this.powerSource();
    return this.base[name] ?? 0;
  }

  /** Answers a request PDU (function code + data) with a response PDU. */
  handle(pdu: Buffer): Buffer {
    const fc = pdu[0] ?? 0;
    if (fc !== 3 && fc !== 4) return exception(fc, EXCEPTION.illegalFunction);
    if (pdu.length < 5) return exception(fc, EXCEPTION.illegalValue);
    const address = pdu.readUInt16BE(1);
    const count = pdu.readUInt16BE(3);
    if (count < 1 || count > 125) return exception(fc, EXCEPTION.illegalValue);
    const limit = this.limits.get(fc);
    if (limit === undefined) return exception(fc, EXCEPTION.illegalFunction);
    if (address + count > limit) return exception(fc, EXCEPTION.illegalAddress);
    const x = this.exceptionAt;
    if (x && x.address >= address && x.address < address + count) return exception(fc, x.code);
    const data = Buffer.alloc(count * 2);
    const at = this.now();
    for (const r of this.registers) {
      if (r.function !== fc) continue;
      const enc = encodeRegister(r, this.value(r.name, at));
      for (let i = 0; i < enc.length / 2; i++) {
        const reg = r.address + i;
        if (reg >= address && reg < address + count) enc.copy(data, (reg - address) * 2, i * 2, i * 2 + 2);
      }
    }
    const out = Buffer.alloc(2 + data.length);
    out[0] = fc;
    out[1] = data.length;
    data.copy(out, 2);
    return out;
  }
}

export function exception(fc: number, code: number): Buffer {
  return Buffer.from([fc | 0x80, code]);
}
