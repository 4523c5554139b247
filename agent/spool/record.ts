/**
 * The on-disk record of the spool, and a streaming scanner that finds the
 * valid ones in whatever a crash or bit rot left behind.
 *
 *   offset  size
 *   0       2     magic FF 53 (0xFF never occurs in UTF-8 text, so the payloads
 *                 of JSON messages almost never contain it: cheap resync)
 *   2       4     body length, u32 LE
 *   6       4     CRC-32 of bytes 2..6 (the length) and of the body, u32 LE
 *   10      body: seq u64 LE (as two u32), writtenAt f64 LE (epoch ms),
 *                 class u8 (1 telemetry, 2 event), flags u8 (bit 0: payload
 *                 deflated), topic length u16 LE, topic (UTF-8), payload
 *
 * A record is valid when its magic, a plausible length and its CRC check out.
 * Anything else (a torn tail, a flipped byte, a flipped length) is skipped up
 * to the next position where a valid record starts: one damaged record costs
 * that record only.
 */
import { crc32 } from './crc32.js';

export const MAGIC0 = 0xff;
export const MAGIC1 = 0x53;
export const HEADER_BYTES = 10;
const BODY_FIXED = 20;

export const RECORD_CLASSES = ['telemetry', 'event'] as const;
export type RecordClass = (typeof RECORD_CLASSES)[number];

export const FLAG_DEFLATE = 1;

export interface DecodedRecord {
  seq: number;
  writtenAt: number;
  cls: RecordClass;
  flags: number;
  topic: string;
  /** A view into the scanner's buffer: copy it to keep it. */
  payload: Buffer;
  /** Absolute byte offsets of the record in its file. */
  start: number;
  end: number;
}

export type ScanItem = { kind: 'record'; rec: DecodedRecord } | { kind: 'skip'; start: number; end: number; atEnd: boolean };

/** Record size on disk for a topic and a (possibly deflated) payload. */
export function recordBytes(topicBytes: number, payloadBytes: number): number {
  return HEADER_BYTES + BODY_FIXED + topicBytes + payloadBytes;
}

export function encodeRecord(seq: number, writtenAt: number, cls: RecordClass, flags: number, topic: string, payload: Uint8Array): Buffer {
  const topicLen = Buffer.byteLength(topic);
  const body = BODY_FIXED + topicLen + payload.length;
  const b = Buffer.allocUnsafe(HEADER_BYTES + body);
  b[0] = MAGIC0;
  b[1] = MAGIC1;
  b.writeUInt32LE(body, 2);
  b.writeUInt32LE(seq % 0x1_0000_0000, 10);
  b.writeUInt32LE(Math.floor(seq / 0x1_0000_0000), 14);
  b.writeDoubleLE(writtenAt, 18);
  b[26] = cls === 'telemetry' ? 1 : 2;
  b[27] = flags;
  b.writeUInt16LE(topicLen, 28);
  b.write(topic, 30, 'utf8');
  b.set(payload, 30 + topicLen);
  b.writeUInt32LE(crc32(b.subarray(10), crc32(b.subarray(2, 6))), 6);
  return b;
}

type Parsed = { kind: 'ok'; rec: DecodedRecord } | { kind: 'short' } | { kind: 'bad' };

function parseAt(buf: Buffer, pos: number, base: number, maxBody: number): Parsed {
  if (buf.length - pos < 2) return { kind: 'short' };
  if (buf[pos] !== MAGIC0 || buf[pos + 1] !== MAGIC1) return { kind: 'bad' };
  if (buf.length - pos < HEADER_BYTES) return { kind: 'short' };
  const body = buf.readUInt32LE(pos + 2);
  if (body < BODY_FIXED || body > maxBody) return { kind: 'bad' };
  const end = pos + HEADER_BYTES + body;
  if (end > buf.length) return { kind: 'short' };
  const crc = crc32(buf.subarray(pos + HEADER_BYTES, end), crc32(buf.subarray(pos + 2, pos + 6)));
  if (crc !== buf.readUInt32LE(pos + 6)) return { kind: 'bad' };
  const b = pos + HEADER_BYTES;
  const clsByte = buf[b + 16];
  const topicLen = buf.readUInt16LE(b + 18);
  if ((clsByte !== 1 && clsByte !== 2) || BODY_FIXED + topicLen > body) return { kind: 'bad' };
  return {
    kind: 'ok',
    rec: {
      seq: buf.readUInt32LE(b) + buf.readUInt32LE(b + 4) * 0x1_0000_0000,
      writtenAt: buf.readDoubleLE(b + 8),
      cls: clsByte === 1 ? 'telemetry' : 'event',
      flags: buf[b + 17] as number,
      topic: buf.toString('utf8', b + BODY_FIXED, b + BODY_FIXED + topicLen),
      payload: buf.subarray(b + BODY_FIXED + topicLen, end),
      start: base + pos,
      end: base + end,
    },
  };
}

/**
 * Feeds a file's bytes in order (any chunking); yields its valid records and
 * the byte ranges skipped between them. `finish()` at the end of the file:
 * what is left (an incomplete record) becomes a skip `atEnd`, a torn tail.
 */
export class RecordScanner {
  private buf: Buffer = Buffer.alloc(0);
  /** Absolute offset of buf[0]. */
  private base: number;
  /** Absolute start of the damaged range being skipped, or -1. */
  private badStart = -1;

  constructor(
    startOffset: number,
    private readonly maxBody: number,
  ) {
    this.base = startOffset;
  }

  /** Absolute offset up to which every byte has been accounted for. */
  get resolved(): number {
    return this.badStart >= 0 ? this.badStart : this.base;
  }

  /** Bytes buffered but not resolved yet. */
  get pendingBytes(): number {
    return this.buf.length;
  }

  feed(chunk: Buffer): ScanItem[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    return this.run(false);
  }

  finish(): ScanItem[] {
    return this.run(true);
  }

  private run(eof: boolean): ScanItem[] {
    const items: ScanItem[] = [];
    const buf = this.buf;
    let pos = 0;
    while (pos < buf.length) {
      const r = parseAt(buf, pos, this.base, this.maxBody);
      if (r.kind === 'ok') {
        if (this.badStart >= 0) items.push({ kind: 'skip', start: this.badStart, end: this.base + pos, atEnd: false });
        this.badStart = -1;
        items.push({ kind: 'record', rec: r.rec });
        pos = r.rec.end - this.base;
        continue;
      }
      if (r.kind === 'short' && !eof) break;
      // damaged here (or incomplete at the end of the file): resync at the next magic
      if (this.badStart < 0) this.badStart = this.base + pos;
      const next = buf.indexOf(MAGIC0, pos + 1);
      if (next < 0) {
        pos = buf.length;
        break;
      }
      pos = next;
    }
    if (eof && pos >= buf.length && this.badStart >= 0) {
      items.push({ kind: 'skip', start: this.badStart, end: this.base + buf.length, atEnd: true });
      this.badStart = -1;
    }
    this.base += pos;
    this.buf = buf.subarray(pos);
    return items;
  }
}
