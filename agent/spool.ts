/**
 * Store-and-forward spool: a bounded on-disk buffer for telemetry and events
 * while the broker is unreachable, replayed in order once it is back.
 *
 * - `append(cls, topic, payload)` gives the record the next global `seq` at
 *   once (so call order is replay order, across classes), queues it (bounded
 *   by `maxQueueBytes`) and resolves once it is on disk. It never rejects and
 *   never blocks: one serial writer appends batches with fs/promises. Nothing
 *   on the curtailment path should await it.
 * - `take(n)` returns the next unacknowledged records, oldest first, merged by
 *   seq across telemetry and events; `ack(seq)` records that the broker took
 *   everything up to `seq` (persisted atomically in `ack.json`; fully
 *   acknowledged segments are then deleted); `rewind()` (after a lost
 *   connection) makes `take` start again after the last ack.
 * - Cap (`maxBytes`, all segment files together): to make room, fully
 *   acknowledged segments go first, then the oldest telemetry segment (a
 *   whole file, `segmentBytes`), oldest first. When only events are left, a
 *   new event is refused (`{ok:false, reason:'full'}`, counted in
 *   `eventsRefused`, a warning at most once a minute), never an older one
 *   dropped: an event accepted is never lost, the oldest events of an episode
 *   (its beginning: what was curtailed and why) are the ones an audit needs,
 *   and the caller learns of the refusal when it happens (the bridge keeps the
 *   current state retained, so central control still sees the present).
 * - Durability: `fsyncIntervalMs` 0 (the default) fsyncs every batch before
 *   its appends resolve (group commit: appends that arrive during an fsync
 *   share the next one), so a resolved append survives a power cut. A value
 *   N > 0 resolves appends once the OS has the bytes (they survive a crash
 *   of the process, not of the machine) and fsyncs at most every N ms: fewer
 *   flash writes, up to N ms lost to a power cut. Either way no caller waits
 *   on the disk unless it awaits `append`.
 * - Recovery: records are checksummed (agent/spool/record.ts); at open every
 *   segment is scanned, a torn tail is cut off and reported, a damaged record
 *   is skipped and reported, every valid one is kept.
 *
 * Files (agent/spool/segments.ts): `<dir>/t-<seq>.seg`, `<dir>/e-<seq>.seg`, `<dir>/ack.json`.
 */
import { mkdir, unlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import { inflateRaw as inflateRawCb } from 'node:zlib';
import type { Logger } from 'pino';
import { RackpilotError } from '../drivers/lib/errors.js';
import { loadAck, saveAck } from './spool/ack-file.js';
import { LogReader } from './spool/reader.js';
import { FLAG_DEFLATE, recordBytes, type DecodedRecord, type RecordClass } from './spool/record.js';
import { listSegments, scanSegment, type CorruptRange, type Segment } from './spool/segments.js';
import { MiB, type SpoolConfig, type SpoolOpenReport, type SpoolRecord, type SpoolStats } from './spool/config.js';
import { SegmentStore, type AppendResult, type Queued } from './spool/store.js';

export type { RecordClass } from './spool/record.js';
export type { CorruptRange } from './spool/segments.js';
export type { AppendFailure, AppendResult } from './spool/store.js';
export { spoolConfigSchema, type SpoolConfig, type SpoolOpenReport, type SpoolRecord, type SpoolStats } from './spool/config.js';

const inflateRaw = promisify(inflateRawCb);

type Counters = Omit<SpoolStats, 'diskBytes' | 'segments' | 'pending' | 'queued' | 'queuedBytes' | 'ackedSeq' | 'nextSeq'>;

/** Bytes of appends written per batch at most. */
const BATCH_BYTES = 4 * MiB;
const WARN_EVERY_MS = 60_000;

export class Spool {
  private readonly dir: string;
  private readonly maxBody: number;
  private state: 'new' | 'open' | 'closing' | 'closed' = 'new';
  private readonly store: SegmentStore;
  private nextSeq = 1;
  /** Every seq up to this is on disk (fsynced, under fsyncIntervalMs 0) or was refused: take() stops here. */
  private writtenThrough = 0;
  private ackedSeq = 0;
  private lastTaken = 0;
  /** Taken, not acknowledged yet: [seq, class] in seq order. */
  private taken: [number, RecordClass][] = [];
  private readonly queue: Queued[] = [];
  private queuedBytes = 0;
  private draining: Promise<void> | undefined;
  private ackWriting: Promise<void> | undefined;
  private ackWaiters: { seq: number; resolve: (ok: boolean) => void }[] = [];
  private readLock: Promise<unknown> = Promise.resolve();
  private readonly readers: Record<RecordClass, LogReader>;
  private readonly knownDamage = new Set<string>();
  private readonly lastWarnAt = new Map<string, number>();
  private readonly counts: Counters = {
    written: 0,
    telemetryDropped: 0,
    eventsRefused: 0,
    writeErrors: 0,
    fsyncs: 0,
    fsyncErrors: 0,
    tooLarge: 0,
    ackWrites: 0,
    ackWriteErrors: 0,
    corruptRanges: 0,
    corruptBytes: 0,
  };

  constructor(
    private readonly cfg: SpoolConfig & { dir: string },
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.dir = cfg.dir;
    this.maxBody = cfg.maxRecordBytes;
    const segmentBytes = cfg.segmentBytes ?? Math.min(64 * MiB, Math.max(64 * 1024, Math.floor(cfg.maxBytes / 16)));
    this.store = new SegmentStore(
      { dir: cfg.dir, maxBytes: cfg.maxBytes, segmentBytes, fsyncIntervalMs: cfg.fsyncIntervalMs, compress: cfg.compress },
      { counts: this.counts, warn: (f, m) => this.warn(f, m), writtenThrough: (seq) => (this.writtenThrough = Math.max(this.writtenThrough, seq)) },
    );
    const onDamage = (seg: Segment, start: number, end: number, torn: boolean): void => this.damage({ file: seg.name, start, end, torn, afterSeq: null, beforeSeq: null });
    this.readers = {
      telemetry: new LogReader(() => this.store.segs.telemetry, this.maxBody, onDamage),
      event: new LogReader(() => this.store.segs.event, this.maxBody, onDamage),
    };
  }

  /** Creates the folder, reads the ack position, scans every segment. Throws STATE_WRITE_FAILED when the folder is unusable. */
  async open(): Promise<SpoolOpenReport> {
    if (this.state !== 'new') throw new RackpilotError('INTERNAL', 'spool: open() called twice');
    const report: SpoolOpenReport = { ackedSeq: 0, nextSeq: 1, pending: { telemetry: 0, events: 0 }, corrupt: [], removedSegments: 0, ackFileCorrupt: false };
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o750 });
      const ack = await loadAck(this.dir);
      const lists = await listSegments(this.dir);
      const all = [...lists.telemetry, ...lists.event];
      let acked = ack.kind === 'ok' ? ack.ack.ackedSeq : 0;
      if (ack.kind === 'corrupt') {
        report.ackFileCorrupt = true;
        // replay all that is left rather than lose anything: acknowledged segments are normally deleted already
        acked = all.length > 0 ? Math.min(...all.map((s) => s.firstSeq)) - 1 : 0;
        this.log.warn({ dir: this.dir, error: ack.error }, 'spool: ack.json unreadable (moved aside); replaying everything on disk');
      }
      let maxSeq = acked;
      for (const seg of all) {
        for (const c of await scanSegment(seg, acked, this.maxBody)) {
          report.corrupt.push(c);
          this.damage(c, false);
        }
        maxSeq = Math.max(maxSeq, seg.lastSeq);
        if (seg.count === 0 || seg.lastSeq <= acked) {
          await unlink(seg.path);
          report.removedSegments++;
        } else this.store.adopt(seg);
      }
      this.ackedSeq = this.store.persistedAck = this.lastTaken = acked;
      this.nextSeq = Math.max(maxSeq + 1, ack.kind === 'ok' ? ack.ack.nextSeq : 1);
      this.writtenThrough = this.nextSeq - 1;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new RackpilotError('STATE_WRITE_FAILED', `spool: cannot open "${this.dir}" (${code}); check spool.dir, its permissions and free space`, { dir: this.dir }, { cause: err });
    }
    for (const r of Object.values(this.readers)) r.reset(this.ackedSeq);
    this.state = 'open';
    if (report.corrupt.length > 0) {
      this.log.warn({ dir: this.dir, ranges: report.corrupt.slice(0, 20), count: report.corrupt.length }, 'spool: damaged records skipped (torn tail or bad checksum); every other record kept');
    }
    if (this.store.bytes > this.cfg.maxBytes && !(await this.store.exclusive(() => this.store.makeRoom(0)))) {
      this.log.warn({ dir: this.dir, bytes: this.store.bytes, maxBytes: this.cfg.maxBytes }, 'spool: over maxBytes with only events left; new records refused until some are acknowledged');
    }
    const p = this.pending();
    report.ackedSeq = this.ackedSeq;
    report.nextSeq = this.nextSeq;
    report.pending = { telemetry: p.telemetry, events: p.events };
    return report;
  }

  /** Queues a record; resolves when it is on disk (see fsyncIntervalMs) or refused. Never rejects. */
  append(cls: RecordClass, topic: string, payload: string | Uint8Array): Promise<AppendResult> {
    if (this.state !== 'open') return Promise.resolve({ ok: false, reason: 'closed' });
    const body = Buffer.from(payload as Uint8Array); // a copy either way: the caller may reuse its buffer
    const topicBytes = Buffer.byteLength(topic);
    const cost = recordBytes(topicBytes, body.length);
    if (cost > this.maxBody || topicBytes > 0xffff) {
      this.counts.tooLarge++;
      this.warn({ topic, bytes: cost, max: this.maxBody }, 'spool: record larger than maxRecordBytes refused');
      return Promise.resolve({ ok: false, reason: 'too-large' });
    }
    if (this.queuedBytes + cost > this.cfg.maxQueueBytes) {
      if (cls === 'event') this.evictQueuedTelemetry(cost);
      if (this.queuedBytes + cost > this.cfg.maxQueueBytes) {
        this.refuse(cls, 'spool: write queue full (disk too slow?); records refused');
        return Promise.resolve({ ok: false, reason: 'queue-full' });
      }
    }
    return new Promise<AppendResult>((resolve) => {
      this.queue.push({ seq: this.nextSeq++, cls, topic, payload: body, writtenAt: this.now(), cost, resolve });
      this.queuedBytes += cost;
      this.draining ??= this.drain();
    });
  }

  /**
   * Up to `n` records (and about `maxBytes` of payload as stored, compressed:
   * at least one record) after the last one taken, oldest first, only ones
   * whose earlier seqs are all written or refused. They stay on disk until
   * acknowledged.
   */
  take(n: number, maxBytes = Infinity): Promise<SpoolRecord[]> {
    return this.reading(async () => {
      const heads: DecodedRecord[] = [];
      let bytes = 0;
      while (heads.length < n && bytes < maxBytes && this.state !== 'closed') {
        const t = await this.readers.telemetry.peek();
        const e = await this.readers.event.peek();
        const useT = t !== undefined && (e === undefined || t.seq < e.seq);
        const head = useT ? t : e;
        if (!head || head.seq > this.writtenThrough) break;
        this.readers[useT ? 'telemetry' : 'event'].consume();
        heads.push(head);
        bytes += head.payload.length;
      }
      const out: SpoolRecord[] = [];
      for (let i = 0; i < heads.length; i += 4) {
        // a few at a time (zlib state set up on the event loop; 4 threads in the pool)
        const decoded = heads.slice(i, i + 4).map(
          async (h): Promise<SpoolRecord> => ({
            seq: h.seq,
            cls: h.cls,
            topic: h.topic,
            writtenAt: h.writtenAt,
            payload: h.flags & FLAG_DEFLATE ? await inflateRaw(h.payload) : Buffer.from(h.payload),
          }),
        );
        out.push(...(await Promise.all(decoded)));
      }
      for (const r of out) this.taken.push([r.seq, r.cls]);
      const last = out.at(-1);
      if (last) this.lastTaken = last.seq;
      return out;
    });
  }

  /** Makes the next `take` start after the last acknowledged record (call it when a connection is lost). */
  rewind(): Promise<void> {
    return this.reading(() => {
      for (const r of Object.values(this.readers)) r.reset(this.ackedSeq);
      this.taken = [];
      this.lastTaken = this.ackedSeq;
      return Promise.resolve();
    });
  }

  /**
   * The broker took every taken record up to `seq` (a higher value is clamped
   * to the last record taken). Resolves true once that is persisted (from
   * then on never replayed, even after a restart), false when ack.json cannot
   * be written (retried at the next ack). Never rejects.
   */
  ack(seq: number): Promise<boolean> {
    const upTo = Math.min(seq, this.lastTaken);
    if (upTo > this.ackedSeq) {
      this.ackedSeq = upTo;
      let i = 0;
      for (; i < this.taken.length && (this.taken[i] as [number, RecordClass])[0] <= upTo; i++) {
        const [s, cls] = this.taken[i] as [number, RecordClass];
        const seg = this.store.segs[cls].find((x) => x.firstSeq <= s && s <= x.lastSeq);
        if (seg && seg.unacked > 0) seg.unacked--;
      }
      this.taken.splice(0, i);
    }
    if (this.store.persistedAck >= upTo) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      this.ackWaiters.push({ seq: upTo, resolve });
      this.ackWriting ??= this.writeAcks();
    });
  }

  /** Resolves once everything appended before the call is on disk and fsynced. */
  async flush(): Promise<void> {
    while (this.draining) await this.draining;
    await this.store.exclusive(() => this.store.sync());
  }

  /** Refuses new appends, writes and fsyncs what is queued, persists the ack position, closes the files. */
  async close(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'closing';
    await this.flush();
    while (this.ackWriting) await this.ackWriting;
    await this.reading(() => this.store.exclusive(() => this.store.closeAll()));
    this.state = 'closed';
  }

  /** Open and accepting records (not yet opened, unusable, or closed: false). */
  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** Unacknowledged records by class (on disk and queued). */
  pending(): { telemetry: number; events: number; total: number } {
    const count = (cls: RecordClass): number => this.store.segs[cls].reduce((n, s) => n + s.unacked, 0) + this.queue.filter((q) => q.cls === cls).length;
    const telemetry = count('telemetry');
    const events = count('event');
    return { telemetry, events, total: telemetry + events };
  }

  stats(): SpoolStats {
    const p = this.pending();
    return {
      ...this.counts,
      diskBytes: this.store.bytes,
      segments: this.store.segs.telemetry.length + this.store.segs.event.length,
      pending: { telemetry: p.telemetry, events: p.events },
      queued: this.queue.length,
      queuedBytes: this.queuedBytes,
      ackedSeq: this.ackedSeq,
      nextSeq: this.nextSeq,
    };
  }

  /** The one writer: batches of queued appends, in order. Never rejects. */
  private async drain(): Promise<void> {
    await Promise.resolve(); // `draining` is set before this can clear it
    try {
      while (this.queue.length > 0) {
        let n = 0;
        let bytes = 0;
        while (n < this.queue.length && (n === 0 || bytes < BATCH_BYTES)) bytes += (this.queue[n++] as Queued).cost;
        const batch = this.queue.splice(0, n);
        this.queuedBytes -= bytes;
        try {
          await this.store.exclusive(() => this.store.writeBatch(batch));
        } catch (err) {
          this.counts.writeErrors++;
          this.warn({ dir: this.dir, err }, 'spool: cannot write (check spool.dir, its permissions and free space)');
          for (const q of batch) q.resolve({ ok: false, reason: 'write-failed' });
          this.writtenThrough = Math.max(this.writtenThrough, (batch.at(-1) as Queued).seq);
        }
      }
    } finally {
      this.draining = undefined;
    }
  }

  /** Persists the ack position, coalescing acks that arrive meanwhile; then deletes acknowledged segments. Never rejects. */
  private async writeAcks(): Promise<void> {
    await Promise.resolve();
    try {
      while (this.ackWaiters.length > 0) {
        const target = this.ackedSeq;
        const waiters = this.ackWaiters.filter((w) => w.seq <= target);
        this.ackWaiters = this.ackWaiters.filter((w) => w.seq > target);
        let ok = true;
        try {
          await saveAck(this.dir, { version: 1, ackedSeq: target, nextSeq: this.nextSeq });
          this.counts.ackWrites++;
          this.store.persistedAck = Math.max(this.store.persistedAck, target);
        } catch (err) {
          ok = false;
          this.counts.ackWriteErrors++;
          this.warn({ dir: this.dir, err }, 'spool: cannot write ack.json; acknowledged records may be sent again after a restart');
        }
        for (const w of waiters) w.resolve(ok);
        if (!ok) {
          for (const w of this.ackWaiters) w.resolve(false);
          this.ackWaiters = [];
          break;
        }
        await this.store.exclusive(() => this.store.removeAcked()).catch((err: unknown) => this.warn({ dir: this.dir, err }, 'spool: cannot delete acknowledged segments'));
      }
    } finally {
      this.ackWriting = undefined;
    }
  }

  private reading<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.readLock.then(fn, fn);
    this.readLock = run.catch(() => undefined);
    return run;
  }

  /** Queue full and an event waiting: queued telemetry (oldest first) makes way. */
  private evictQueuedTelemetry(need: number): void {
    for (let i = 0; i < this.queue.length && this.queuedBytes + need > this.cfg.maxQueueBytes; ) {
      const q = this.queue[i] as Queued;
      if (q.cls !== 'telemetry') {
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      this.queuedBytes -= q.cost;
      this.counts.telemetryDropped++;
      q.resolve({ ok: false, reason: 'dropped' });
    }
  }

  private refuse(cls: RecordClass, msg: string): void {
    if (cls === 'event') this.counts.eventsRefused++;
    else this.counts.telemetryDropped++;
    this.warn({ dir: this.dir, eventsRefused: this.counts.eventsRefused, telemetryDropped: this.counts.telemetryDropped }, msg);
  }

  /** Counts a damaged range once (it is met again at every read of its segment). */
  private damage(c: CorruptRange, warn = true): void {
    const key = `${c.file}:${c.start}`;
    if (this.knownDamage.has(key)) return;
    this.knownDamage.add(key);
    this.counts.corruptRanges++;
    this.counts.corruptBytes += c.end - c.start;
    if (warn) this.warn({ dir: this.dir, ...c }, 'spool: damaged record skipped while reading (bad checksum)');
  }

  /** A warning at most once a minute per message (the counts in its fields say how many since). */
  private warn(fields: Record<string, unknown>, msg: string): void {
    const t = this.now();
    if (t - (this.lastWarnAt.get(msg) ?? -Infinity) < WARN_EVERY_MS) return;
    this.lastWarnAt.set(msg, t);
    this.log.warn(fields, msg);
  }
}
