/**
 * The spool's segment files: one folder, `t-<firstSeq>.seg` for telemetry and
 * `e-<firstSeq>.seg` for events (firstSeq zero-padded to 16 digits, so the
 * names sort in order), each an append-only run of records (record.ts).
 * Telemetry and events are kept apart so that the oldest telemetry can be
 * dropped a whole file at a time without touching events; the global `seq`
 * in every record restores the order between the two at replay.
 */
import type { FileHandle } from 'node:fs/promises';
import { open, readdir, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { RecordScanner, type RecordClass, type ScanItem } from './record.js';

export interface Segment {
  cls: RecordClass;
  path: string;
  name: string;
  /** Seq of the first record written to it (from its name). */
  firstSeq: number;
  /** Seq of the last valid record (firstSeq - 1 while empty). */
  lastSeq: number;
  /** Bytes on disk that readers may read: always at a record boundary. */
  size: number;
  /** Valid records in it. */
  count: number;
  /** Valid records not acknowledged yet. */
  unacked: number;
  /** The writer's open file, while this is the segment it appends to. */
  fh: FileHandle | undefined;
  /** Written since the last fsync. */
  dirty: boolean;
  /** Nothing more will be appended (every segment found at open is closed). */
  closed: boolean;
  /** Deleted (acknowledged, or dropped to make room): readers move on. */
  deleted: boolean;
}

/** A damaged byte range found in a segment. */
export interface CorruptRange {
  file: string;
  start: number;
  end: number;
  /** At the end of the file: a torn write (cut off by a crash or power loss). */
  torn: boolean;
  /** The valid records around it, for reports. */
  afterSeq: number | null;
  beforeSeq: number | null;
}

const NAME_RE = /^([te])-(\d{16})\.seg$/;
export const READ_CHUNK = 1024 * 1024;

export function segmentName(cls: RecordClass, firstSeq: number): string {
  return `${cls === 'telemetry' ? 't' : 'e'}-${String(firstSeq).padStart(16, '0')}.seg`;
}

export function newSegment(dir: string, cls: RecordClass, firstSeq: number): Segment {
  const name = segmentName(cls, firstSeq);
  return { cls, path: join(dir, name), name, firstSeq, lastSeq: firstSeq - 1, size: 0, count: 0, unacked: 0, fh: undefined, dirty: false, closed: false, deleted: false };
}

/** Segment files in `dir` by class, oldest first (not scanned yet: sizes and counts zero). */
export async function listSegments(dir: string): Promise<Record<RecordClass, Segment[]>> {
  const out: Record<RecordClass, Segment[]> = { telemetry: [], event: [] };
  for (const name of await readdir(dir)) {
    const m = NAME_RE.exec(name);
    if (!m) continue;
    const seg = newSegment(dir, m[1] === 't' ? 'telemetry' : 'event', Number(m[2]));
    seg.closed = true;
    out[seg.cls].push(seg);
  }
  for (const list of Object.values(out)) list.sort((a, b) => a.firstSeq - b.firstSeq);
  return out;
}

/**
 * Scans a segment found at open: counts its valid records (those after
 * `ackedSeq` as unacked), returns its damaged ranges, and cuts a torn tail
 * off the file so it is not reported again at the next start.
 */
export async function scanSegment(seg: Segment, ackedSeq: number, maxBody: number): Promise<CorruptRange[]> {
  const bad: CorruptRange[] = [];
  const fileSize = (await stat(seg.path)).size;
  const scanner = new RecordScanner(0, maxBody);
  let lastSeq: number | null = null;
  let validEnd = 0;
  const take = (items: ScanItem[]): void => {
    for (const it of items) {
      if (it.kind === 'record') {
        seg.count++;
        if (it.rec.seq > ackedSeq) seg.unacked++;
        seg.lastSeq = Math.max(seg.lastSeq, it.rec.seq);
        validEnd = it.rec.end;
        const prev = bad.at(-1);
        if (prev && prev.beforeSeq === null && prev.end === it.rec.start) prev.beforeSeq = it.rec.seq;
        lastSeq = it.rec.seq;
      } else {
        bad.push({ file: seg.name, start: it.start, end: it.end, torn: it.atEnd, afterSeq: lastSeq, beforeSeq: null });
      }
    }
  };
  const fh = await open(seg.path, 'r');
  try {
    const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, Math.max(fileSize, 1)));
    for (let off = 0; off < fileSize; ) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, fileSize - off), off);
      if (bytesRead === 0) break;
      take(scanner.feed(Buffer.from(buf.subarray(0, bytesRead))));
      off += bytesRead;
    }
    take(scanner.finish());
  } finally {
    await fh.close();
  }
  const tail = bad.at(-1);
  if (tail?.torn) await truncate(seg.path, validEnd);
  seg.size = tail?.torn ? validEnd : fileSize;
  return bad;
}
