/**
 * Reads one class's segments in order from a position (the records after a
 * seq), a chunk at a time, without holding more than a chunk and the records
 * parsed from it. Segments deleted under it (telemetry dropped to make room)
 * are skipped; the active segment is read up to what the writer has
 * finished writing, and read further once it has written more.
 */
import { open } from 'node:fs/promises';
import { READ_CHUNK, type Segment } from './segments.js';
import { RecordScanner, type DecodedRecord, type ScanItem } from './record.js';

/** A damaged range met while reading (the spool reports each range once). */
export type OnDamage = (seg: Segment, start: number, end: number, torn: boolean) => void;

export class LogReader {
  private seg: Segment | undefined;
  private scanner: RecordScanner | undefined;
  private offset = 0;
  private readonly ahead: DecodedRecord[] = [];
  private afterSeq = 0;

  constructor(
    private readonly segments: () => readonly Segment[],
    private readonly maxBody: number,
    private readonly onDamage: OnDamage,
  ) {}

  /** Starts over: the next record returned is the first one after `seq`. */
  reset(seq: number): void {
    this.afterSeq = seq;
    this.seg = undefined;
    this.scanner = undefined;
    this.ahead.length = 0;
  }

  /** The next record, without consuming it; undefined when none is written yet. */
  async peek(): Promise<DecodedRecord | undefined> {
    for (;;) {
      const seg = this.seg;
      if (seg?.deleted) {
        this.reset(this.afterSeq);
        continue;
      }
      const head = this.ahead[0];
      if (head) return head;
      if (!seg || !this.scanner) {
        const next = this.segments().find((s) => !s.deleted && s.lastSeq > this.afterSeq);
        if (!next) return undefined;
        this.seg = next;
        this.scanner = new RecordScanner(0, this.maxBody);
        this.offset = 0;
        continue;
      }
      if (this.offset < seg.size) {
        const chunk = await this.read(seg);
        if (chunk) this.accept(seg, this.scanner.feed(chunk));
        continue;
      }
      if (!seg.closed) return undefined; // the writer's segment: nothing more yet
      this.accept(seg, this.scanner.finish());
      if (this.ahead.length > 0) continue;
      const later = this.segments().find((s) => !s.deleted && s.firstSeq > seg.firstSeq && s.lastSeq > this.afterSeq);
      if (!later) return undefined;
      this.seg = later;
      this.scanner = new RecordScanner(0, this.maxBody);
      this.offset = 0;
    }
  }

  /** Consumes the record `peek` returned. */
  consume(): DecodedRecord | undefined {
    const r = this.ahead.shift();
    if (r) this.afterSeq = r.seq;
    return r;
  }

  private async read(seg: Segment): Promise<Buffer | undefined> {
    const len = Math.min(READ_CHUNK, seg.size - this.offset);
    let fh;
    try {
      fh = await open(seg.path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        seg.deleted = true; // removed meanwhile
        return undefined;
      }
      throw err;
    }
    try {
      const buf = Buffer.allocUnsafe(len);
      const { bytesRead } = await fh.read(buf, 0, len, this.offset);
      if (bytesRead === 0) {
        // shorter than we thought (truncated behind our back): read it as it is
        seg.size = this.offset;
        seg.closed = true;
        return undefined;
      }
      this.offset += bytesRead;
      return bytesRead === len ? buf : buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  private accept(seg: Segment, items: ScanItem[]): void {
    for (const it of items) {
      if (it.kind === 'skip') this.onDamage(seg, it.start, it.end, it.atEnd);
      else if (it.rec.seq > this.afterSeq && (this.ahead.at(-1)?.seq ?? -1) < it.rec.seq) this.ahead.push(it.rec);
    }
  }
}
