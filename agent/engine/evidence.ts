/**
 * The evidence log of every activation, in the shape frequency-reserve
 * markets ask for (Swedish FFR: active power at 100 ms resolution from 10 s
 * before an activation to 15 min after it), plus each device's dispatch,
 * acknowledgement and confirmation times.
 *
 * Power samples (any rate) land in a ring on a `resolutionMs` grid (the last
 * value per slot wins; a slot without a sample is a gap, null, never
 * invented). The ring always holds the last `preMs` and more, so an
 * activation's window starts `preMs` before its signal. Each open window is
 * written out every ~10 s as a `power` chunk (the first one includes the
 * pre-window), so a crash loses at most ~10 s; overlapping activations each
 * get their own window.
 *
 * On disk: JSON lines in `dir`, `evidence.jsonl` (newest) then
 * `evidence.1.jsonl` … `evidence.<maxFiles-1>.jsonl` (oldest); a write that
 * would take a file past `maxFileBytes` rotates first, so the total never
 * passes maxFiles × maxFileBytes. Lines:
 *   {"type":"activation", ...ActivationRecord}   at begin, and again at complete (the last one wins)
 *   {"type":"power","activation":ID,"t0":EPOCHMS,"stepMs":100,"w":[W|null,...]}
 * Writes are appends through one serial queue, off the caller's path; the
 * queue is capped (drops are counted and logged). A line torn by a crash is
 * skipped on read, and the next append starts on a fresh line.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { appendFile, mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import { hrNow } from './clock.js';

export const evidenceConfigSchema = z
  .object({
    /** Default: `<stateDir>/evidence`. */
    dir: z.string().min(1).optional(),
    /** A file is rotated before a write would take it past this size. */
    maxFileBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .max(1024 ** 3)
      .default(5 * 1024 * 1024),
    /** Files kept (the current one included); the oldest is deleted at rotation. */
    maxFiles: z.number().int().min(1).max(100).default(10),
    /** Power grid step. */
    resolutionMs: z.number().int().min(10).max(1000).default(100),
    /** Power kept from before the signal. */
    preMs: z.number().int().min(0).max(60_000).default(10_000),
    /** Power kept after the signal. */
    postMs: z.number().int().min(0).max(3_600_000).default(900_000),
  })
  .strict()
  .prefault({});

export type EvidenceConfig = z.output<typeof evidenceConfigSchema>;

const STEPS = ['curtail', 'retry', 'alternative', 'cut', 'alarm', 'restore'] as const;

const deviceTimingSchema = z.object({
  id: z.string(),
  action: z.string(),
  ok: z.boolean(),
  dispatchAt: z.number(),
  ackAt: z.number().optional(),
  confirmAt: z.number().optional(),
  steps: z.array(
    z.object({
      step: z.enum(STEPS),
      at: z.number(),
      ok: z.boolean(),
      error: z.object({ code: z.string(), message: z.string() }).optional(),
    }),
  ),
  measuredW: z.number().nullable().optional(),
});

export const activationRecordSchema = z.object({
  id: z.string().min(1),
  trigger: z.object({
    demand: z.string(),
    source: z.string(),
    kind: z.enum(['shed', 'budget']),
    maxW: z.number().optional(),
    signal: z.string().optional(),
    value: z.number().nullable().optional(),
    commandId: z.string().nullable().optional(),
  }),
  signalAt: z.number(),
  decidedAt: z.number(),
  devices: z.array(deviceTimingSchema),
  powerBeforeW: z.number().nullable(),
  powerAfterW: z.number().nullable(),
  completedAt: z.number().optional(),
});

export const powerChunkSchema = z.object({
  activation: z.string().min(1),
  t0: z.number(),
  stepMs: z.number().positive(),
  w: z.array(z.number().nullable()),
});

/** All times are fractional epoch ms (`performance.timeOrigin + performance.now()`). */
export interface DeviceTiming {
  id: string;
  action: string;
  ok: boolean;
  dispatchAt: number;
  ackAt?: number;
  confirmAt?: number;
  steps: { step: (typeof STEPS)[number]; at: number; ok: boolean; error?: { code: string; message: string } }[];
  measuredW?: number | null;
}

export interface ActivationRecord {
  /** e.g. `act-<epochms>-<n>`. */
  id: string;
  trigger: { demand: string; source: string; kind: 'shed' | 'budget'; maxW?: number; signal?: string; value?: number | null; commandId?: string | null };
  /** When the signal was measured / the command received. */
  signalAt: number;
  /** When the engine issued the first action. */
  decidedAt: number;
  devices: DeviceTiming[];
  /** Mean of the samples in the 1 s before signalAt (filled by `begin` from the ring when it has any). */
  powerBeforeW: number | null;
  /** Mean of the last 1 s of samples before completedAt (filled by `complete`). */
  powerAfterW: number | null;
  completedAt?: number;
}

export type PowerChunk = z.output<typeof powerChunkSchema>;

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _recordMatches: Same<z.output<typeof activationRecordSchema>, ActivationRecord> = true;

/** A window is written out this often (and so a crash loses at most about this much). */
export const CHUNK_INTERVAL_MS = 10_000;
/** Slots this recent are not written yet: samples arrive late (a meter poll's round trip). */
export const SETTLE_MS = 2_000;
/** Lines waiting for the disk at most; more are dropped (and counted). */
export const QUEUE_MAX = 1024;
/** Activations remembered at most (open windows and ones not completed yet). */
const OPEN_MAX = 256;
/** A chunk holds at most this many slots (bounded lines). */
const CHUNK_MAX_SLOTS = 1200;
const WARN_EVERY_MS = 60_000;

export function evidenceFileName(index: number): string {
  return index === 0 ? 'evidence.jsonl' : `evidence.${index}.jsonl`;
}

const FILE_RE = /^evidence(?:\.(\d+))?\.jsonl$/;

interface Window {
  rec: ActivationRecord;
  /** Next slot to write. */
  next: number;
  /** First slot past the window. */
  end: number;
  completed: boolean;
}

export interface EvidenceStats {
  linesWritten: number;
  /** Lines lost: queue full, a line larger than maxFileBytes, or a failed write. */
  linesDropped: number;
  writeErrors: number;
  openWindows: number;
}

export class EvidenceLog {
  private readonly res: number;
  private readonly cap: number;
  private readonly slotOf: Float64Array;
  private readonly val: Float64Array;
  private latest = -Infinity;
  private readonly windows = new Map<string, Window>();
  private timer: NodeJS.Timeout | undefined;
  private readonly queue: string[] = [];
  private draining: Promise<void> | undefined;
  /** Size of the current file; undefined: not known yet (stat before the next write). */
  private size: number | undefined;
  private tornTail = false;
  private readonly counts: EvidenceStats = { linesWritten: 0, linesDropped: 0, writeErrors: 0, openWindows: 0 };
  private readonly lastWarnAt = new Map<string, number>();

  constructor(
    private readonly cfg: EvidenceConfig & { dir: string },
    private readonly log: Logger,
    private readonly now: () => number = hrNow,
  ) {
    this.res = cfg.resolutionMs;
    // the pre-window, plus room for late flushes
    this.cap = Math.ceil((cfg.preMs + 6 * CHUNK_INTERVAL_MS) / cfg.resolutionMs);
    this.slotOf = new Float64Array(this.cap).fill(-1);
    this.val = new Float64Array(this.cap);
  }

  /** Starts the periodic write-out. No I/O here; the folder is created at the first write. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.writeDue(false), CHUNK_INTERVAL_MS);
    this.timer.unref();
  }

  /** Stops the write-out, writes every open window up to now (closing them) and waits for the disk. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.writeDue(true);
    await this.drained();
  }

  /** Writes the settled part of every open window and waits for the queue to reach the disk. */
  async flush(): Promise<void> {
    this.writeDue(false);
    await this.drained();
  }

  stats(): EvidenceStats {
    return { ...this.counts, openWindows: [...this.windows.values()].filter((w) => w.next < w.end).length };
  }

  /** Records rack power measured at `ts` (epoch ms). Null: the meter had no value (a gap). */
  samplePower(watts: number | null, ts: number): void {
    if (!Number.isFinite(ts) || ts < 0) return;
    const s = Math.floor(ts / this.res);
    if (s <= this.latest - this.cap) return; // older than the ring
    if (s > this.latest) this.latest = s;
    const i = s % this.cap;
    this.slotOf[i] = s;
    this.val[i] = watts !== null && Number.isFinite(watts) ? watts : NaN;
  }

  /** Opens an activation's window (the pre-window comes from the ring) and writes its record. */
  begin(rec: ActivationRecord): void {
    if (this.windows.has(rec.id)) {
      this.log.warn({ activation: rec.id }, 'evidence: activation already begun; ignored');
      return;
    }
    if (this.windows.size >= OPEN_MAX) this.evictOne();
    const r = copyRecord(rec);
    r.powerBeforeW = this.mean(r.signalAt - 1000, r.signalAt) ?? r.powerBeforeW;
    this.windows.set(r.id, {
      rec: r,
      next: Math.floor((r.signalAt - this.cfg.preMs) / this.res),
      end: Math.floor((r.signalAt + this.cfg.postMs) / this.res) + 1,
      completed: false,
    });
    this.enqueue(JSON.stringify({ type: 'activation', ...r }));
  }

  /** Completes an activation: fills powerAfterW, writes the record again, returns it (undefined: unknown id). Its window stays open to its end. */
  complete(id: string, devices: DeviceTiming[], completedAt: number): ActivationRecord | undefined {
    const w = this.windows.get(id);
    if (!w) {
      this.log.warn({ activation: id }, 'evidence: complete for an unknown activation; ignored');
      return undefined;
    }
    const r = copyRecord({ ...w.rec, devices, completedAt });
    r.powerAfterW = this.mean(completedAt - 1000, completedAt);
    w.rec = r;
    w.completed = true;
    if (w.next >= w.end) this.windows.delete(id);
    this.enqueue(JSON.stringify({ type: 'activation', ...r }));
    return copyRecord(r);
  }

  /** The activation records on disk, the last version of each, oldest first. */
  list(): ActivationRecord[] {
    return readEvidence(this.cfg.dir).activations;
  }

  /** Mean of the non-null slots starting in [from, to); null when none. */
  private mean(from: number, to: number): number | null {
    let sum = 0;
    let n = 0;
    for (let s = Math.ceil(from / this.res); s * this.res < to; s++) {
      const v = this.slot(s);
      if (!Number.isNaN(v)) {
        sum += v;
        n++;
      }
    }
    return n > 0 ? sum / n : null;
  }

  private slot(s: number): number {
    const i = ((s % this.cap) + this.cap) % this.cap;
    return this.slotOf[i] === s ? (this.val[i] as number) : NaN;
  }

  /** Queues the due part of every window as power chunks; `all`: up to now, unsettled slots included. */
  private writeDue(all: boolean): void {
    const upto = Math.floor((this.now() - (all ? 0 : SETTLE_MS)) / this.res) + (all ? 1 : 0);
    for (const [id, w] of this.windows) {
      const last = Math.min(upto, w.end);
      while (w.next < last) {
        const n = Math.min(last - w.next, CHUNK_MAX_SLOTS);
        const values: (number | null)[] = new Array<number | null>(n);
        for (let k = 0; k < n; k++) {
          const v = this.slot(w.next + k);
          values[k] = Number.isNaN(v) ? null : v;
        }
        this.enqueue(JSON.stringify({ type: 'power', activation: id, t0: w.next * this.res, stepMs: this.res, w: values }));
        w.next += n;
      }
      if (all) w.end = Math.min(w.end, w.next); // stopped: the window ends here
      if (w.next >= w.end && w.completed) this.windows.delete(id);
    }
  }

  /** Too many activations remembered: forget the oldest (closed first), so memory stays bounded. */
  private evictOne(): void {
    let victim: string | undefined;
    for (const [id, w] of this.windows) {
      if (w.next >= w.end) {
        victim = id;
        break;
      }
      victim ??= id;
    }
    if (victim === undefined) return;
    this.windows.delete(victim);
    this.warnLimited({ activation: victim, max: OPEN_MAX }, 'evidence: too many activations open; the oldest is no longer recorded');
  }

  private enqueue(line: string): void {
    if (this.queue.length >= QUEUE_MAX) {
      this.dropped(1, 'evidence: write queue full (disk too slow?); lines dropped');
      return;
    }
    this.queue.push(line);
    // drain() clears `draining` itself, in the same tick as its last look at the queue (it always awaits first)
    this.draining ??= this.drain();
  }

  private async drained(): Promise<void> {
    while (this.draining) await this.draining;
  }

  private dropped(n: number, msg: string, err?: unknown): void {
    this.counts.linesDropped += n;
    this.warnLimited({ dir: this.cfg.dir, dropped: this.counts.linesDropped, writeErrors: this.counts.writeErrors, ...(err ? { err } : {}) }, msg);
  }

  /** A warning at most once a minute per message (counts in the fields say how many since). */
  private warnLimited(fields: Record<string, unknown>, msg: string): void {
    const t = this.now();
    if (t - (this.lastWarnAt.get(msg) ?? -Infinity) < WARN_EVERY_MS) return;
    this.lastWarnAt.set(msg, t);
    this.log.warn(fields, msg);
  }

  /** The one writer: appends queued lines in order, rotating before a file would pass its cap. Never rejects. */
  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const lines = this.queue.splice(0, 64);
        try {
          await this.appendLines(lines);
        } catch (err) {
          this.counts.writeErrors++;
          this.size = undefined; // stat again next time
          this.dropped(lines.length, 'evidence: cannot write the evidence log (check evidence.dir, its permissions and free space)', err);
        }
      }
    } finally {
      this.draining = undefined;
    }
  }

  private async appendLines(lines: string[]): Promise<void> {
    const cur = join(this.cfg.dir, evidenceFileName(0));
    if (this.size === undefined) await this.prepare(cur);
    let batch = this.tornTail ? '\n' : '';
    let batchBytes = batch.length;
    let batchLines = 0;
    const append = async (): Promise<void> => {
      await appendFile(cur, batch, { mode: 0o640 });
      this.tornTail = false;
      this.size = (this.size ?? 0) + batchBytes;
      this.counts.linesWritten += batchLines;
      batch = '';
      batchBytes = 0;
      batchLines = 0;
    };
    for (const line of lines) {
      const bytes = Buffer.byteLength(line) + 1;
      if (bytes > this.cfg.maxFileBytes) {
        this.dropped(1, 'evidence: a record larger than maxFileBytes was dropped');
        continue;
      }
      if ((this.size ?? 0) + batchBytes + bytes > this.cfg.maxFileBytes) {
        if (batchBytes > 0) await append();
        await this.rotate();
      }
      batch += `${line}\n`;
      batchBytes += bytes;
      batchLines++;
    }
    if (batchBytes > 0) await append();
  }

  /** Before the first write: the folder, the current size, a torn last line, files past maxFiles (a smaller config). */
  private async prepare(cur: string): Promise<void> {
    await mkdir(this.cfg.dir, { recursive: true, mode: 0o750 });
    for (const name of await readdir(this.cfg.dir)) {
      const m = FILE_RE.exec(name);
      if (m?.[1] !== undefined && Number(m[1]) >= this.cfg.maxFiles) await unlink(join(this.cfg.dir, name)).catch(() => undefined);
    }
    let size = 0;
    try {
      size = (await stat(cur)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    this.tornTail = false;
    if (size > 0) {
      const fh = await open(cur, 'r');
      try {
        const b = Buffer.alloc(1);
        await fh.read(b, 0, 1, size - 1);
        this.tornTail = b[0] !== 0x0a;
      } finally {
        await fh.close();
      }
    }
    this.size = size;
    if (size + (this.tornTail ? 1 : 0) >= this.cfg.maxFileBytes) await this.rotate();
  }

  /** evidence.jsonl -> .1 -> .2 …; the oldest falls off. */
  private async rotate(): Promise<void> {
    const dir = this.cfg.dir;
    if (this.cfg.maxFiles === 1) {
      await unlink(join(dir, evidenceFileName(0))).catch(ignoreEnoent);
    } else {
      for (let i = this.cfg.maxFiles - 1; i >= 1; i--) {
        await rename(join(dir, evidenceFileName(i - 1)), join(dir, evidenceFileName(i))).catch(ignoreEnoent);
      }
    }
    this.size = 0;
    this.tornTail = false;
  }
}

function ignoreEnoent(err: unknown): void {
  if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
}

/** A copy holding exactly the documented fields (a caller's richer objects do not leak into the file format). */
function copyRecord(r: ActivationRecord): ActivationRecord {
  const t = r.trigger;
  return {
    id: r.id,
    trigger: {
      demand: t.demand,
      source: t.source,
      kind: t.kind,
      ...(t.maxW !== undefined ? { maxW: t.maxW } : {}),
      ...(t.signal !== undefined ? { signal: t.signal } : {}),
      ...(t.value !== undefined ? { value: t.value } : {}),
      ...(t.commandId !== undefined ? { commandId: t.commandId } : {}),
    },
    signalAt: r.signalAt,
    decidedAt: r.decidedAt,
    devices: r.devices.map(copyDevice),
    powerBeforeW: r.powerBeforeW,
    powerAfterW: r.powerAfterW,
    ...(r.completedAt !== undefined ? { completedAt: r.completedAt } : {}),
  };
}

function copyDevice(d: DeviceTiming): DeviceTiming {
  return {
    id: d.id,
    action: d.action,
    ok: d.ok,
    dispatchAt: d.dispatchAt,
    ...(d.ackAt !== undefined ? { ackAt: d.ackAt } : {}),
    ...(d.confirmAt !== undefined ? { confirmAt: d.confirmAt } : {}),
    steps: d.steps.map((s) => ({ step: s.step, at: s.at, ok: s.ok, ...(s.error ? { error: { code: s.error.code, message: s.error.message } } : {}) })),
    ...(d.measuredW !== undefined ? { measuredW: d.measuredW } : {}),
  };
}

export interface EvidenceContents {
  /** The last version of each activation record, in order of first appearance (oldest first). */
  activations: ActivationRecord[];
  /** Power chunks by activation id, in file order. */
  power: Map<string, PowerChunk[]>;
  /** Lines that did not parse or validate (a torn last line, say). */
  skipped: number;
}

/** Evidence files in `dir`, oldest first. Throws node's error when the folder cannot be read. */
export function evidenceFiles(dir: string): string[] {
  const files: { name: string; index: number }[] = [];
  for (const name of readdirSync(dir)) {
    const m = FILE_RE.exec(name);
    if (m) files.push({ name, index: m[1] === undefined ? 0 : Number(m[1]) });
  }
  return files.sort((a, b) => b.index - a.index).map((f) => join(dir, f.name));
}

/** Reads every evidence file in `dir` (oldest first), skipping lines that do not parse. */
export function readEvidence(dir: string): EvidenceContents {
  const byId = new Map<string, ActivationRecord>();
  const power = new Map<string, PowerChunk[]>();
  let skipped = 0;
  for (const file of evidenceFiles(dir)) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue; // rotated away meanwhile
    }
    for (const line of text.split('\n')) {
      if (line.length === 0) continue;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch {
        skipped++;
        continue;
      }
      const type = (obj as { type?: unknown } | null)?.type;
      if (type === 'activation') {
        const r = activationRecordSchema.safeParse(obj);
        if (r.success) byId.set(r.data.id, r.data);
        else skipped++;
      } else if (type === 'power') {
        const c = powerChunkSchema.safeParse(obj);
        if (!c.success) {
          skipped++;
          continue;
        }
        const list = power.get(c.data.activation);
        if (list) list.push(c.data);
        else power.set(c.data.activation, [c.data]);
      } else skipped++;
    }
  }
  return { activations: [...byId.values()], power, skipped };
}
