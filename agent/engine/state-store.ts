/**
 * The engine's persisted state: which demands are active, which devices the
 * engine holds down (and how), and the restore hold-off, so an agent
 * restarted in the middle of a curtailment neither forgets to restore nor
 * restores too early. One small JSON file, replaced atomically on every
 * change (drivers/lib/atomic-file.ts). The engine saves with `saveAsync`
 * (coalesced, off the event loop) and reports nothing until the file that
 * reflects it is on disk (agent/engine/reporter.ts); `save` is the blocking
 * form for tools and tests.
 *
 * Loading never throws: a missing file is `none`; a file that cannot be read
 * or does not validate is `corrupt` (moved aside to `<file>.corrupt-<ts>`
 * when possible), and the engine then fails safe by shedding.
 */
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import { mkdir } from 'node:fs/promises';
import { removeStaleTemps, writeFileAtomic, writeFileAtomicSync } from '../../drivers/lib/atomic-file.js';
import { RackpilotError } from '../../drivers/lib/errors.js';
import { DEMAND_SOURCES, type Demand } from './types.js';

const epochMs = z.number().nonnegative();

export const demandSchema = z.object({
  key: z.string().min(1),
  source: z.enum(DEMAND_SOURCES),
  kind: z.enum(['shed', 'budget']),
  maxW: z.number().nonnegative().optional(),
  devices: z.array(z.string().min(1)).optional(),
  since: epochMs,
  startsAt: epochMs.optional(),
  until: epochMs.optional(),
  holdOffMs: z.number().int().nonnegative(),
  commandId: z.string().nullable().optional(),
  value: z.number().nullable().optional(),
});

const shedRecordSchema = z.object({
  via: z.enum(['curtail', 'alternative', 'cut']),
  at: epochMs,
  outlets: z.array(z.object({ pdu: z.string().min(1), outlet: z.string().min(1) })).optional(),
  previous: z.object({ profile: z.string().optional(), powerTargetW: z.number().positive().optional() }).optional(),
  loadW: z.number().nonnegative().optional(),
  rank: z.number().int().nonnegative().optional(),
});

export const PHASES = ['idle', 'curtailing', 'curtailed', 'holdoff', 'restoring'] as const;

export const persistedStateSchema = z.object({
  version: z.literal(1),
  savedAt: epochMs,
  phase: z.enum(PHASES),
  demands: z.array(demandSchema),
  shed: z.record(z.string().min(1), shedRecordSchema),
  holdOffUntil: epochMs.nullable(),
});

export interface ShedRecord {
  via: 'curtail' | 'alternative' | 'cut';
  at: number;
  /** For `cut`: the outlets switched off, to switch back on at restore. */
  outlets?: { pdu: string; outlet: string }[];
  /** For `alternative`: what to set back at restore (the profile or power target in force before). */
  previous?: { profile?: string; powerTargetW?: number };
  /** The draw before it was shed (W; the restore ramp's expected load). */
  loadW?: number;
  /** Position in its wave's shed order (the ramp restores in reverse). */
  rank?: number;
}

export interface PersistedState {
  version: 1;
  /** Epoch ms. */
  savedAt: number;
  phase: (typeof PHASES)[number];
  /** Active demands. */
  demands: Demand[];
  /** Devices the engine holds down, by id. */
  shed: Record<string, ShedRecord>;
  holdOffUntil: number | null;
}

// the schema and the interfaces must describe the same thing (both directions)
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _demandMatches: Same<z.output<typeof demandSchema>, Demand> = true;
const _stateMatches: Same<z.output<typeof persistedStateSchema>, PersistedState> = true;

export type LoadResult = { kind: 'none' } | { kind: 'ok'; state: PersistedState } | { kind: 'corrupt'; error: string; movedTo: string | null };

export class EngineStateStore {
  constructor(
    readonly file: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Reads the file. Never throws (see the file comment). */
  load(): LoadResult {
    removeStaleTemps(this.file);
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return { kind: 'none' };
      // unreadable (permissions, a folder in its place, I/O error): cannot know what was held down
      return { kind: 'corrupt', error: `cannot read engine state file ${this.file}: ${(err as Error).message}`, movedTo: null };
    }
    let error: string;
    try {
      const parsed = persistedStateSchema.safeParse(JSON.parse(text));
      if (parsed.success) return { kind: 'ok', state: parsed.data };
      const first = parsed.error.issues[0];
      error = `invalid content${first ? ` at ${first.path.join('.') || '(root)'}: ${first.message}` : ''}`;
    } catch (err) {
      error = `not JSON (${(err as Error).message})`;
    }
    return { kind: 'corrupt', error: `engine state file ${this.file}: ${error}`, movedTo: this.moveAside() };
  }

  /**
   * Replaces the file with `s` (atomic, durable, blocking). Creates the folder
   * (0750) if missing. Throws a RackpilotError, the previous file left as it
   * was: STATE_WRITE_FAILED when the file cannot be written, INTERNAL when `s`
   * is not a valid state (it would not load back).
   */
  save(s: PersistedState): void {
    const parsed = persistedStateSchema.safeParse(s);
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      throw new RackpilotError('INTERNAL', `refusing to save an invalid engine state${first ? ` (${first.path.join('.')}: ${first.message})` : ''}`, { file: this.file });
    }
    try {
      mkdirSync(dirname(this.file), { recursive: true, mode: 0o750 });
      writeFileAtomicSync(this.file, `${JSON.stringify(parsed.data)}\n`, 0o640);
    } catch (err) {
      throw new RackpilotError('STATE_WRITE_FAILED', `cannot write engine state file ${this.file}: ${(err as Error).message} (check the state folder, its permissions and free space)`, {
        file: this.file,
      });
    }
  }

  /** As `save`, without blocking the event loop (the engine's path: the writes run in libuv's pool). */
  async saveAsync(s: PersistedState): Promise<void> {
    const parsed = persistedStateSchema.safeParse(s);
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      throw new RackpilotError('INTERNAL', `refusing to save an invalid engine state${first ? ` (${first.path.join('.')}: ${first.message})` : ''}`, { file: this.file });
    }
    try {
      await mkdir(dirname(this.file), { recursive: true, mode: 0o750 });
      await writeFileAtomic(this.file, `${JSON.stringify(parsed.data)}\n`, 0o640);
    } catch (err) {
      throw new RackpilotError('STATE_WRITE_FAILED', `cannot write engine state file ${this.file}: ${(err as Error).message} (check the state folder, its permissions and free space)`, {
        file: this.file,
      });
    }
  }

  /** Moves a corrupt file out of the way (kept for inspection); null when that failed too. */
  private moveAside(): string | null {
    const base = `${this.file}.corrupt-${this.now()}`;
    let to = base;
    for (let i = 1; existsSync(to); i++) to = `${base}-${i}`;
    try {
      renameSync(this.file, to);
      return to;
    } catch {
      return null;
    }
  }
}
