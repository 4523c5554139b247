/** Decoding register values (big/little word order, 16/32-bit, float32) and planning span reads. */
import type { RegisterValue } from './schema.js';

export function registerCount(type: RegisterValue['type']): number {
  return type === 'uint16' || type === 'int16' ? 1 : 2;
}

/** Decodes the value at `offset` of `regs` (each a 16-bit register), scaled to watts. */
export function decodeRegisters(regs: readonly number[], offset: number, v: RegisterValue): number | null {
  const a = regs[offset];
  if (a === undefined) return null;
  const buf = Buffer.alloc(4);
  if (registerCount(v.type) === 1) {
    buf.writeUInt16BE(a & 0xffff, 0);
    const raw = v.type === 'int16' ? buf.readInt16BE(0) : buf.readUInt16BE(0);
    return raw * v.scale;
  }
  const b = regs[offset + 1];
  if (b === undefined) return null;
  const [hi, lo] = v.wordOrder === 'big' ? [a, b] : [b, a];
  buf.writeUInt16BE(hi & 0xffff, 0);
  buf.writeUInt16BE(lo & 0xffff, 2);
  const raw = v.type === 'float32' ? buf.readFloatBE(0) : v.type === 'int32' ? buf.readInt32BE(0) : buf.readUInt32BE(0);
  return Number.isFinite(raw) ? raw * v.scale : null;
}

/** Encodes watts into registers (the simulator's side). */
export function encodeRegisters(watts: number, v: RegisterValue): number[] {
  const raw = watts / v.scale;
  const buf = Buffer.alloc(4);
  if (registerCount(v.type) === 1) {
    if (v.type === 'int16') buf.writeInt16BE(Math.round(raw), 0);
    else buf.writeUInt16BE(Math.max(0, Math.round(raw)) & 0xffff, 0);
    return [buf.readUInt16BE(0)];
  }
  if (v.type === 'float32') buf.writeFloatBE(raw, 0);
  else if (v.type === 'int32') buf.writeInt32BE(Math.round(raw), 0);
  else buf.writeUInt32BE(Math.max(0, Math.round(raw)) >>> 0, 0);
  const hi = buf.readUInt16BE(0);
  const lo = buf.readUInt16BE(2);
  return v.wordOrder === 'big' ? [hi, lo] : [lo, hi];
}

export type Table = 'holding' | 'input' | 'coil' | 'discrete';

/** One read request: a contiguous span of one table. */
export interface Span {
  table: Table;
  start: number;
  count: number;
}

/** Largest span per request (Modbus allows 125 registers, 2000 bits). */
const MAX_SPAN: Record<Table, number> = { holding: 120, input: 120, coil: 2000, discrete: 2000 };

/**
 * Groups the wanted addresses of each table into spans of one request each:
 * addresses at most `maxGap` apart share a request (0: only adjacent ones,
 * since many devices answer exception 2 for a span that crosses a hole).
 */
export function planSpans(wanted: readonly { table: Table; address: number; count: number }[], maxGap = 0): Span[] {
  const spans: Span[] = [];
  const tables: Table[] = ['holding', 'input', 'coil', 'discrete'];
  for (const table of tables) {
    const items = wanted.filter((w) => w.table === table).sort((x, y) => x.address - y.address);
    let cur: Span | undefined;
    for (const w of items) {
      const end = w.address + w.count;
      if (cur && w.address - (cur.start + cur.count) <= maxGap && end - cur.start <= MAX_SPAN[table]) {
        cur.count = Math.max(cur.count, end - cur.start);
      } else {
        cur = { table, start: w.address, count: w.count };
        spans.push(cur);
      }
    }
  }
  return spans;
}
