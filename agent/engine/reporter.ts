/**
 * Persisted before reported: the engine's state is saved (coalesced, in
 * order, off the event loop: the writes run in libuv's pool so device answers
 * keep flowing), and events, state messages and command results wait in an
 * outbox until the file that reflects them is on disk.
 *
 * A save also waits for the `settled` gate (the engine's: the latest
 * curtailment wave's answers are in, bounded by the wave's own cap), so that
 * taking the snapshot, checking it against the schema and the file system
 * work do not run among the answers being read. Nothing is reported before
 * the save, so what central control sees is never ahead of the file.
 */
import type { Logger } from 'pino';
import { toRackpilotError } from '../../drivers/lib/errors.js';
import type { EngineStateStore, PersistedState } from './state-store.js';

export class Reporter {
  private dirty = false;
  private saving: Promise<void> | null = null;
  private outbox: (() => void)[] = [];

  constructor(
    private readonly store: EngineStateStore,
    private readonly snapshot: () => PersistedState,
    private readonly log: Logger,
    /** Resolves when a save may start (the engine: its latest wave's answers are in). Never rejects. */
    private readonly settled: () => Promise<void> | undefined = () => undefined,
  ) {}

  /** Marks the state changed; it is saved after the current tick (after the sends). */
  persist(): void {
    this.dirty = true;
    this.saving ??= this.loop();
  }

  /** Runs `fn` now, or once the pending save is on disk. */
  report(fn: () => void): void {
    if (this.saving || this.dirty) {
      this.outbox.push(fn);
      return;
    }
    try {
      fn();
    } catch (err) {
      this.log.error({ err }, 'engine report sink failed');
    }
  }

  /** Resolves when nothing is left to save. */
  async idle(): Promise<void> {
    while (this.saving) await this.saving;
  }

  private async loop(): Promise<void> {
    await new Promise<void>((r) => setImmediate(r));
    while (this.dirty) {
      const gate = this.settled();
      if (gate) await gate;
      this.dirty = false;
      try {
        await this.store.saveAsync(this.snapshot());
      } catch (err) {
        this.log.error({ error: toRackpilotError(err).toJSON() }, 'could not persist the curtailment state');
      }
    }
    this.saving = null;
    const out = this.outbox;
    this.outbox = [];
    for (const fn of out) this.report(fn);
  }
}
