/**
 * Modbus RTU wire time: how long one poll occupies a half-duplex serial line,
 * so a sampling rate the link cannot carry is refused up front.
 */
import type { ReadBlock } from './maps.js';

export interface LineSettings {
  baudRate: number;
  dataBits: 7 | 8;
  parity: 'none' | 'even' | 'odd';
  stopBits: 1 | 2;
}

/** Bits per character: start + data + parity + stop. */
export function bitsPerChar(l: LineSettings): number {
  return 1 + l.dataBits + (l.parity === 'none' ? 0 : 1) + l.stopBits;
}

/** Milliseconds per character on the line. */
export function charMs(l: LineSettings): number {
  return (bitsPerChar(l) * 1000) / l.baudRate;
}

/** The silent interval between frames (t3.5); fixed at 1.75 ms above 19200 baud (Modbus over serial line spec). */
export function frameGapMs(l: LineSettings): number {
  return l.baudRate > 19200 ? 1.75 : 3.5 * charMs(l);
}

/** Request (8 bytes) + answer (5 + 2n bytes) for a read of n registers. */
export function readFrameBytes(count: number): { request: number; answer: number } {
  return { request: 8, answer: 5 + 2 * count };
}

/** Wire time of one read of `count` registers: both frames, both gaps, plus the meter's turnaround. */
export function readWireMs(l: LineSettings, count: number, turnaroundMs: number): number {
  const { request, answer } = readFrameBytes(count);
  return (request + answer) * charMs(l) + 2 * frameGapMs(l) + turnaroundMs;
}

/** One poll (every block of the plan, back to back). */
export function pollWireMs(l: LineSettings, blocks: readonly ReadBlock[], turnaroundMs: number): number {
  return blocks.reduce((s, b) => s + readWireMs(l, b.count, turnaroundMs), 0);
}

/** The highest sampling rate the line carries for this plan. */
export function maxSampleHz(l: LineSettings, blocks: readonly ReadBlock[], turnaroundMs: number): number {
  return 1000 / pollWireMs(l, blocks, turnaroundMs);
}
