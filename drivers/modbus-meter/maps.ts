/**
 * Meter register maps as data (CONVENTIONS.md #2): which registers hold what,
 * how they are encoded and scaled. Addresses are the 0-based protocol
 * addresses sent on the wire (a vendor's "register 30053" or "3060" is
 * address 0x0034 or 3059): see api-facts.md.
 */
export const REGISTER_TYPES = ['int16', 'uint16', 'int32', 'uint32', 'float32'] as const;
export type RegisterType = (typeof REGISTER_TYPES)[number];
export type WordOrder = 'big' | 'little';
/** 3 = read holding registers, 4 = read input registers. */
export type ReadFunction = 3 | 4;

export interface RegisterDef {
  /** `powerW` and `frequencyHz` feed Reading.powerW / the signal channels; other names land in Reading.fields. */
  name: string;
  function: ReadFunction;
  address: number;
  type: RegisterType;
  /** Which 16-bit word of a 32-bit value comes first (big: high word first, the Modbus norm). */
  wordOrder: WordOrder;
  /** Multiplier applied to the raw value (e.g. 1000 for kW -> W). */
  scale: number;
}

export interface MeterMap {
  description: string;
  registers: readonly RegisterDef[];
}

const f32 = (name: string, fn: ReadFunction, address: number, scale = 1): RegisterDef => ({ name, function: fn, address, type: 'float32', wordOrder: 'big', scale });

export const BUILTIN_MAPS = {
  /** Eastron SDM630 (v2 / MCT): input registers, IEEE754 float32 big-endian; 0x34..0x47 in one read. */
  sdm630: {
    description: 'Eastron SDM630',
    registers: [f32('powerW', 4, 0x0034), f32('frequencyHz', 4, 0x0046)],
  },
  /** Schneider PowerLogic PM5xxx / PM2xxx: holding registers; documented register 3060 / 3110 = address 3059 / 3109. */
  pm5xxx: {
    description: 'Schneider PowerLogic PM5xxx',
    registers: [f32('powerW', 3, 3059, 1000), f32('frequencyHz', 3, 3109)],
  },
} as const satisfies Record<string, MeterMap>;

export type BuiltinMeter = keyof typeof BUILTIN_MAPS;
export const BUILTIN_METERS = Object.keys(BUILTIN_MAPS) as BuiltinMeter[];

export function registerCount(t: RegisterType): 1 | 2 {
  return t === 'int16' || t === 'uint16' ? 1 : 2;
}

/** One read request: a function code and a contiguous register range. */
export interface ReadBlock {
  function: ReadFunction;
  address: number;
  count: number;
  registers: RegisterDef[];
}

/** Modbus caps one read at 125 registers. */
export const MAX_READ_REGISTERS = 125;
/**
 * Registers are merged into one read when the unused registers between them
 * number at most this: on RTU a separate request costs ~20 characters of
 * framing and gaps plus the meter's turnaround, more than 20 spare registers
 * (40 bytes) at any baud rate with a turnaround of 10 ms or more.
 */
export const MAX_MERGE_GAP = 20;

/** Groups registers into as few reads as the gap rule allows (SDM630: one read of 0x34..0x47). */
export function planReads(registers: readonly RegisterDef[]): ReadBlock[] {
  const blocks: ReadBlock[] = [];
  const sorted = [...registers].sort((a, b) => a.function - b.function || a.address - b.address);
  for (const r of sorted) {
    const end = r.address + registerCount(r.type);
    const last = blocks[blocks.length - 1];
    if (last && last.function === r.function) {
      const lastEnd = last.address + last.count;
      const newCount = Math.max(lastEnd, end) - last.address;
      if (r.address - lastEnd <= MAX_MERGE_GAP && newCount <= MAX_READ_REGISTERS) {
        last.count = newCount;
        last.registers.push(r);
        continue;
      }
    }
    blocks.push({ function: r.function, address: r.address, count: end - r.address, registers: [r] });
  }
  return blocks;
}

/** Decodes one register's value out of a block's answer (big-endian bytes within each register). */
export function decodeRegister(r: RegisterDef, block: ReadBlock, data: Buffer): number {
  const off = (r.address - block.address) * 2;
  let raw: number;
  if (registerCount(r.type) === 1) {
    raw = r.type === 'int16' ? data.readInt16BE(off) : data.readUInt16BE(off);
  } else {
    const b = r.wordOrder === 'big' ? data.subarray(off, off + 4) : Buffer.concat([data.subarray(off + 2, off + 4), data.subarray(off, off + 2)]);
    raw = r.type === 'float32' ? b.readFloatBE(0) : r.type === 'int32' ? b.readInt32BE(0) : b.readUInt32BE(0);
  }
  return raw * r.scale;
}

/** Encodes a value into registers (the simulator's side of decodeRegister). */
export function encodeRegister(r: RegisterDef, value: number): Buffer {
  const raw = value / r.scale;
  if (registerCount(r.type) === 1) {
    const b = Buffer.alloc(2);
    if (r.type === 'int16') b.writeInt16BE(Math.round(raw));
    else b.writeUInt16BE(Math.round(raw));
    return b;
  }
  const b = Buffer.alloc(4);
  if (r.type === 'float32') b.writeFloatBE(raw);
  else if (r.type === 'int32') b.writeInt32BE(Math.round(raw));
  else b.writeUInt32BE(Math.round(raw));
  return r.wordOrder === 'big' ? b : Buffer.concat([b.subarray(2, 4), b.subarray(0, 2)]);
}

export function hex(address: number): string {
  return `0x${address.toString(16).padStart(4, '0')}`;
}

/** "function 04 read of 0x0034..0x0047 (powerW at 0x0034, frequencyHz at 0x0046)" */
export function describeBlock(b: ReadBlock): string {
  const regs = b.registers.map((r) => `${r.name} at ${hex(r.address)} (${r.address})`).join(', ');
  return `function 0${b.function} read of ${hex(b.address)}..${hex(b.address + b.count - 1)} (${regs})`;
}
