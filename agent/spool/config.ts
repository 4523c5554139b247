/** The spool's config block and the shapes of its reports (agent/spool.ts). */
import { z } from 'zod';
import type { RecordClass } from './record.js';
import type { CorruptRange } from './segments.js';
import type { StoreCounters } from './store.js';

export const MiB = 1024 * 1024;

export const spoolConfigSchema = z
  .object({
    /** Default: `<stateDir>/spool`. */
    dir: z.string().min(1).optional(),
    /** All segment files together stay at or under this. */
    maxBytes: z.number().int().min(MiB).max(1024 ** 4).default(256 * MiB),
    /** One segment file (the unit telemetry is dropped in). Default: maxBytes / 16, within 64 KiB .. 64 MiB. */
    segmentBytes: z.number().int().min(64 * 1024).max(1024 ** 3).optional(),
    /** 0: fsync every batch before its appends resolve; N: fsync at most every N ms. */
    fsyncIntervalMs: z.number().int().min(0).max(60_000).default(0),
    /** Deflate payloads of 256 bytes and more. */
    compress: z.boolean().default(true),
    /** Appends waiting for the disk, at most (bytes before compression). */
    maxQueueBytes: z.number().int().min(64 * 1024).max(1024 ** 3).default(16 * MiB),
    /** A larger record is refused. */
    maxRecordBytes: z.number().int().min(1024).max(256 * MiB).default(8 * MiB),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.segmentBytes !== undefined && c.segmentBytes * 2 > c.maxBytes) ctx.addIssue({ code: 'custom', path: ['segmentBytes'], message: 'must be at most maxBytes / 2' });
    if (c.maxRecordBytes * 2 > c.maxBytes) ctx.addIssue({ code: 'custom', path: ['maxRecordBytes'], message: 'must be at most maxBytes / 2' });
  })
  .prefault({});

export type SpoolConfig = z.output<typeof spoolConfigSchema>;

export interface SpoolRecord {
  /** Global order of appends (both classes), from 1, increasing across restarts. */
  seq: number;
  cls: RecordClass;
  topic: string;
  payload: Buffer;
  /** Epoch ms of the append. */
  writtenAt: number;
}

export interface SpoolOpenReport {
  ackedSeq: number;
  nextSeq: number;
  pending: { telemetry: number; events: number };
  /** Damaged ranges found (torn tails, bad checksums); their records were skipped, every other one kept. */
  corrupt: CorruptRange[];
  /** Fully acknowledged or empty segments deleted. */
  removedSegments: number;
  /** The ack file was unreadable: everything on disk is replayed. */
  ackFileCorrupt: boolean;
}

export interface SpoolStats extends StoreCounters {
  diskBytes: number;
  segments: number;
  pending: { telemetry: number; events: number };
  queued: number;
  queuedBytes: number;
  ackedSeq: number;
  nextSeq: number;
  tooLarge: number;
  ackWrites: number;
  ackWriteErrors: number;
  /** Damaged ranges met (at open, or while reading), each counted once. */
  corruptRanges: number;
  corruptBytes: number;
}

