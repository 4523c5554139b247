/**
 * Remembers, per GPU UUID, the power limit in force before a curtail, in a
 * small JSON file, so a restore after a crash (or an agent restart in the
 * middle of a curtailment) still returns the right value. Writes are atomic
 * (drivers/lib/atomic-file.ts: temp file, fsync, rename, fsync of the folder).
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../lib/atomic-file.js';
import { RackpilotError } from '../lib/errors.js';

const entrySchema = z.object({
  /** The software limit (mW) in force before the first curtail. */
  preCurtailLimitMw: z.number().int().nonnegative(),
  /** The cap (mW) set by the last curtail. */
  capMw: z.number().int().nonnegative(),
  /** Epoch ms of the first curtail. */
  since: z.number(),
  /** A restore failed: the GPU is still capped and needs one. */
  restorePending: z.boolean().default(false),
});

const fileSchema = z.object({ version: z.literal(1), gpus: z.record(z.string(), entrySchema) });

export type CapEntry = z.output<typeof entrySchema>;

export class GpuStateStore {
  private gpus: Record<string, CapEntry> = {};
  private loaded = false;
  private writing: Promise<void> = Promise.resolve();
  readonly file: string;

  constructor(
    private readonly dir: string,
    deviceId: string,
  ) {
    this.file = join(dir, `gpu-${deviceId}.json`);
  }

  /** Reads the file once (missing file = nothing remembered). A corrupt file is an error: we will not guess limits. */
  async load(): Promise<void> {
    if (this.loaded) return;
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.loaded = true;
        return;
      }
      throw new RackpilotError('INTERNAL', `cannot read GPU state file ${this.file}: ${(err as Error).message} (check stateDir and its permissions)`, {
        file: this.file,
      });
    }
    let parsed: z.output<typeof fileSchema>;
    try {
      parsed = fileSchema.parse(JSON.parse(text));
    } catch {
      throw new RackpilotError(
        'INTERNAL',
        `GPU state file ${this.file} is corrupt; it holds the limits to restore after a curtail. Fix or remove it (then set the limits by hand with nvidia-smi -pl)`,
        { file: this.file },
      );
    }
    this.gpus = parsed.gpus;
    this.loaded = true;
  }

  get(uuid: string): CapEntry | undefined {
    return this.gpus[uuid];
  }

  /** UUIDs with a remembered pre-curtail limit. */
  capped(): string[] {
    return Object.keys(this.gpus);
  }

  get restorePending(): boolean {
    return Object.values(this.gpus).some((e) => e.restorePending);
  }

  /**
   * Records a cap. The pre-curtail limit is kept from the first curtail: a
   * second curtail while capped never overwrites it with the cap. Re-capping
   * clears a pending restore: the GPU is deliberately capped again.
   */
  remember(uuid: string, currentLimitMw: number, capMw: number, now: number): Promise<void> {
    return this.mutate((gpus) => {
      const prev = gpus[uuid];
      return { ...gpus, [uuid]: prev ? { ...prev, capMw, restorePending: false } : { preCurtailLimitMw: currentLimitMw, capMw, since: now, restorePending: false } };
    });
  }

  forget(uuids: readonly string[]): Promise<void> {
    return this.mutate((gpus) => {
      if (!uuids.some((u) => u in gpus)) return undefined;
      const next = { ...gpus };
      for (const u of uuids) delete next[u];
      return next;
    });
  }

  markRestorePending(uuids: readonly string[], pending: boolean): Promise<void> {
    return this.mutate((gpus) => {
      const next = { ...gpus };
      for (const u of uuids) {
        const e = next[u];
        if (e) next[u] = { ...e, restorePending: pending };
      }
      return next;
    });
  }

  /**
   * Serialised change: builds the new map from the current one, writes it,
   * and only then makes it current, so memory never says what the file does
   * not (undefined = no change).
   */
  private mutate(change: (gpus: Readonly<Record<string, CapEntry>>) => Record<string, CapEntry> | undefined): Promise<void> {
    const next = this.writing
      .catch(() => undefined)
      .then(async () => {
        const gpus = change(this.gpus);
        if (!gpus) return;
        await this.write(JSON.stringify({ version: 1, gpus }, null, 2));
        this.gpus = gpus;
      });
    this.writing = next;
    return next;
  }

  private async write(body: string): Promise<void> {
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o750 });
      // the folder is fsynced too: the rename is only durable then (power loss right after a first curtail)
      await writeFileAtomic(this.file, body, 0o640);
    } catch (err) {
      throw new RackpilotError('INTERNAL', `cannot write GPU state file ${this.file}: ${(err as Error).message} (check stateDir and its permissions)`, {
        file: this.file,
      });
    }
  }
}
