/**
 * The spool's writing side: the segment files of both classes, the cap, and
 * the fsync policy. Every mutation (a batch of appends, a deletion, an fsync)
 * runs under one lock, in order; readers only read up to each segment's
 * `size`, which moves after a write completes, always to a record boundary.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
import { deflateRaw as deflateRawCb } from 'node:zlib';
import { encodeRecord, FLAG_DEFLATE, type RecordClass } from './record.js';
import { newSegment, type Segment } from './segments.js';

const deflateRaw = promisify(deflateRawCb);

/** Payloads from this size on are deflated (when compression is on). */
const COMPRESS_MIN = 256;
const ENCODE_PARALLEL = 4;

export type AppendFailure = 'full' | 'queue-full' | 'too-large' | 'dropped' | 'write-failed' | 'closed';
export type AppendResult = { ok: true; seq: number } | { ok: false; reason: AppendFailure };

export interface Queued {
  seq: number;
  cls: RecordClass;
  topic: string;
  payload: Buffer;
  writtenAt: number;
  /** Bytes counted against maxQueueBytes. */
  cost: number;
  resolve: (r: AppendResult) => void;
}

export interface StoreOptions {
  dir: string;
  maxBytes: number;
  segmentBytes: number;
  fsyncIntervalMs: number;
  compress: boolean;
}

export interface StoreCounters {
  written: number;
  telemetryDropped: number;
  eventsRefused: number;
  writeErrors: number;
  fsyncs: number;
  fsyncErrors: number;
}

export interface StoreEvents {
  counts: StoreCounters;
  warn(fields: Record<string, unknown>, msg: string): void;
  /** Every seq up to `seq` is now written (and fsynced, under interval 0) or refused. */
  writtenThrough(seq: number): void;
}

interface PendingWrite {
  bufs: Buffer[];
  items: Queued[];
  bytes: number;
}

export class SegmentStore {
  readonly segs: Record<RecordClass, Segment[]> = { telemetry: [], event: [] };
  /** Bytes of every segment file. */
  bytes = 0;
  /** Acknowledged and persisted: segments wholly at or below it may go. */
  persistedAck = 0;
  private readonly active: Partial<Record<RecordClass, Segment>> = {};
  private readonly pendingWrites = new Map<Segment, PendingWrite>();
  private reserved = 0;
  private dirDirty = false;
  private syncTimer: NodeJS.Timeout | undefined;
  private lock: Promise<unknown> = Promise.resolve();
  /** Items of the current batch written to their files, resolved once the batch is done (and fsynced, under interval 0). */
  private written: Queued[] = [];

  constructor(
    private readonly opts: StoreOptions,
    private readonly ev: StoreEvents,
  ) {}

  /** Runs `fn` after every mutation queued before it. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  /** A segment found at open (closed: appends go to new ones). */
  adopt(seg: Segment): void {
    this.segs[seg.cls].push(seg);
    this.bytes += seg.size;
  }

  /** Writes a batch (in seq order): compresses, makes room, appends, fsyncs per policy, resolves each item. Under the lock. */
  async writeBatch(batch: Queued[]): Promise<void> {
    // a few at a time: each deflate sets up its zlib state on the event loop, and the pool has 4 threads
    const encoded: Buffer[] = [];
    for (let i = 0; i < batch.length; i += ENCODE_PARALLEL) encoded.push(...(await Promise.all(batch.slice(i, i + ENCODE_PARALLEL).map((q) => this.encode(q)))));
    this.written = [];
    for (const [i, q] of batch.entries()) {
      const buf = encoded[i] as Buffer;
      try {
        if (!(await this.makeRoom(buf.length))) {
          this.refuseFull(q);
          continue;
        }
        const seg = await this.activeFor(q.cls, q.seq, buf.length);
        const pw = this.pendingWrites.get(seg) ?? { bufs: [], items: [], bytes: 0 };
        this.pendingWrites.set(seg, pw);
        pw.bufs.push(buf);
        pw.items.push(q);
        pw.bytes += buf.length;
        this.reserved += buf.length;
      } catch (err) {
        this.writeFailed([q], err);
      }
    }
    for (const seg of [...this.pendingWrites.keys()]) await this.flushSeg(seg);
    const written = this.written;
    this.written = [];
    if (this.opts.fsyncIntervalMs === 0) await this.sync();
    else if (written.length > 0) this.scheduleSync();
    this.ev.writtenThrough((batch.at(-1) as Queued).seq);
    for (const q of written) q.resolve({ ok: true, seq: q.seq });
  }

  /**
   * Frees space until `len` more bytes fit: fully acknowledged segments
   * first, then the oldest telemetry. False when only events are left.
   */
  async makeRoom(len: number): Promise<boolean> {
    while (this.bytes + this.reserved + len > this.opts.maxBytes) {
      const all = [...this.segs.telemetry, ...this.segs.event];
      const acked = all.filter((s) => s.count > 0 && s.lastSeq <= this.persistedAck && !this.pendingWrites.has(s)).sort((a, b) => a.firstSeq - b.firstSeq)[0];
      const victim = acked ?? this.segs.telemetry[0];
      if (!victim) return false;
      const lost = await this.remove(victim);
      if (!acked && lost > 0) {
        this.ev.counts.telemetryDropped += lost;
        this.ev.warn({ dir: this.opts.dir, dropped: this.ev.counts.telemetryDropped }, 'spool: full; oldest telemetry dropped');
      }
    }
    return true;
  }

  /** Deletes closed segments wholly acknowledged. */
  async removeAcked(): Promise<void> {
    for (const seg of [...this.segs.telemetry, ...this.segs.event]) {
      if (seg.closed && seg.lastSeq <= this.persistedAck) await this.remove(seg);
    }
  }

  /** fsyncs every segment written since the last one, and the folder when a file was created. */
  async sync(): Promise<void> {
    clearTimeout(this.syncTimer);
    this.syncTimer = undefined;
    try {
      for (const seg of [...this.segs.telemetry, ...this.segs.event]) {
        if (!seg.dirty || !seg.fh) continue;
        seg.dirty = false;
        await seg.fh.sync();
        this.ev.counts.fsyncs++;
      }
      if (this.dirDirty) {
        this.dirDirty = false;
        const dh = await open(this.opts.dir, 'r');
        try {
          await dh.sync();
        } finally {
          await dh.close();
        }
        this.ev.counts.fsyncs++;
      }
    } catch (err) {
      // the bytes are in the files (a crash of the process keeps them); durability across a power cut is not sure
      this.ev.counts.fsyncErrors++;
      this.ev.warn({ dir: this.opts.dir, err }, 'spool: fsync failed; recent records may not survive a power cut');
    }
  }

  /** Closes every open segment (fsynced). */
  async closeAll(): Promise<void> {
    clearTimeout(this.syncTimer);
    this.syncTimer = undefined;
    for (const seg of [...this.segs.telemetry, ...this.segs.event]) await this.closeSegment(seg);
    await this.sync();
  }

  private async encode(q: Queued): Promise<Buffer> {
    let flags = 0;
    let payload = q.payload;
    if (this.opts.compress && payload.length >= COMPRESS_MIN) {
      const z = await deflateRaw(payload);
      if (z.length < payload.length) {
        payload = z;
        flags |= FLAG_DEFLATE;
      }
    }
    return encodeRecord(q.seq, q.writtenAt, q.cls, flags, q.topic, payload);
  }

  /** The segment the next record of `cls` goes to: rotated when it would pass segmentBytes. */
  private async activeFor(cls: RecordClass, seq: number, len: number): Promise<Segment> {
    let seg = this.active[cls];
    if (seg && !seg.closed && !seg.deleted) {
      const queued = this.pendingWrites.get(seg)?.bytes ?? 0;
      if (seg.size + queued === 0 || seg.size + queued + len <= this.opts.segmentBytes) return seg;
      await this.closeSegment(seg);
    }
    seg = newSegment(this.opts.dir, cls, seq);
    seg.fh = await open(seg.path, 'wx', 0o640);
    this.dirDirty = true;
    this.segs[cls].push(seg);
    this.active[cls] = seg;
    return seg;
  }

  /** Writes a segment's queued records at its end (the batch resolves them). */
  private async flushSeg(seg: Segment): Promise<void> {
    const pw = this.pendingWrites.get(seg);
    if (!pw) return;
    this.pendingWrites.delete(seg);
    this.reserved -= pw.bytes;
    const fh = seg.fh;
    try {
      if (!fh) throw new Error('segment not open');
      await writeAll(fh, Buffer.concat(pw.bufs, pw.bytes), seg.size);
    } catch (err) {
      // what was written past `size` is never read (and cut off as a torn tail at the next open); a fresh segment takes the next records
      this.writeFailed(pw.items, err);
      await this.closeSegment(seg).catch(() => undefined);
      return;
    }
    seg.size += pw.bytes;
    this.bytes += pw.bytes;
    seg.count += pw.items.length;
    seg.unacked += pw.items.length;
    seg.lastSeq = (pw.items.at(-1) as Queued).seq;
    seg.dirty = true;
    this.ev.counts.written += pw.items.length;
    this.written.push(...pw.items);
  }

  /** Writes what is queued for it, fsyncs and closes it: nothing more is appended to it. */
  private async closeSegment(seg: Segment): Promise<void> {
    await this.flushSeg(seg);
    if (this.active[seg.cls] === seg) delete this.active[seg.cls];
    seg.closed = true;
    const fh = seg.fh;
    if (!fh) return;
    seg.fh = undefined;
    try {
      if (seg.dirty) {
        seg.dirty = false;
        await fh.sync();
        this.ev.counts.fsyncs++;
      }
    } finally {
      await fh.close();
    }
  }

  /** Deletes a segment (records queued for it are written first, then go with it); returns its unacknowledged records. */
  private async remove(seg: Segment): Promise<number> {
    await this.closeSegment(seg).catch(() => undefined);
    seg.deleted = true;
    const list = this.segs[seg.cls];
    list.splice(list.indexOf(seg), 1);
    this.bytes -= seg.size;
    await unlink(seg.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    return seg.unacked;
  }

  private scheduleSync(): void {
    if (this.syncTimer) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      void this.exclusive(() => this.sync());
    }, this.opts.fsyncIntervalMs);
    this.syncTimer.unref();
  }

  private refuseFull(q: Queued): void {
    if (q.cls === 'event') {
      this.ev.counts.eventsRefused++;
      this.ev.warn({ dir: this.opts.dir, refused: this.ev.counts.eventsRefused, maxBytes: this.opts.maxBytes }, 'spool: full of events; new events refused');
    } else this.ev.counts.telemetryDropped++;
    q.resolve({ ok: false, reason: 'full' });
  }

  private writeFailed(items: Queued[], err: unknown): void {
    this.ev.counts.writeErrors++;
    this.ev.warn({ dir: this.opts.dir, err, records: items.length }, 'spool: cannot write (check spool.dir, its permissions and free space)');
    for (const q of items) q.resolve({ ok: false, reason: 'write-failed' });
  }
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  for (let off = 0; off < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position + off);
    if (bytesWritten <= 0) throw new Error('short write');
    off += bytesWritten;
  }
}
