/**
 * Persisted before reported (reporter.ts): saves coalesce, reports wait in
 * the outbox for the save, and a save waits for the gate the engine gives
 * (its latest wave's answers), taking its snapshot only then.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { Reporter } from './reporter.js';
import type { EngineStateStore, PersistedState } from './state-store.js';

const state = (n: number): PersistedState => ({ version: 1, savedAt: n, phase: 'curtailing', demands: [], shed: {}, holdOffUntil: null });

/** A store that records what it was given, each save taking `delayMs`; `fail` makes saves throw. */
class RecordingStore {
  saved: number[] = [];
  fail = false;
  constructor(private readonly delayMs = 5) {}
  async saveAsync(s: PersistedState): Promise<void> {
    await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.fail) throw new Error('disk full');
    this.saved.push(s.savedAt);
  }
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('Reporter', () => {
  test('reports wait for the save that reflects them, and changes made meanwhile are saved once, after it', async () => {
    const store = new RecordingStore();
    let n = 0;
    const r = new Reporter(store as unknown as EngineStateStore, () => state(++n), pino({ level: 'silent' }));
    const out: string[] = [];
    r.report(() => out.push('before any change'));
    assert.deepEqual(out, ['before any change'], 'nothing to save: a report goes out at once');
    r.persist();
    r.report(() => out.push('a'));
    await turn();
    r.persist();
    r.persist();
    r.report(() => out.push('b'));
    assert.deepEqual(out, ['before any change'], 'held while a save is due');
    await r.idle();
    assert.deepEqual(out, ['before any change', 'a', 'b']);
    assert.deepEqual(store.saved, [1, 2], 'the first save, then one for both later changes');
  });

  test('a save waits for the gate, takes its snapshot after it, and the reports wait as well', async () => {
    const store = new RecordingStore(1);
    let release!: () => void;
    let gate: Promise<void> | undefined = new Promise<void>((r) => (release = r));
    let snapshots = 0;
    const r = new Reporter(
      store as unknown as EngineStateStore,
      () => state(++snapshots),
      pino({ level: 'silent' }),
      () => gate,
    );
    const out: string[] = [];
    r.persist();
    r.report(() => out.push('curtail.started'));
    for (let i = 0; i < 5; i++) await turn();
    await new Promise((res) => setTimeout(res, 20));
    assert.equal(snapshots, 0, 'no snapshot while the gate is shut');
    assert.deepEqual(store.saved, []);
    assert.deepEqual(out, [], 'nothing reported before the state is on disk');
    gate = undefined;
    release();
    await r.idle();
    assert.equal(snapshots, 1);
    assert.deepEqual(store.saved, [1]);
    assert.deepEqual(out, ['curtail.started']);
  });

  test('a failed save is logged, and what waited for it is still reported', async () => {
    const store = new RecordingStore(1);
    store.fail = true;
    const errors: string[] = [];
    const log = pino({ level: 'error' }, { write: (line: string) => errors.push(line) });
    const r = new Reporter(store as unknown as EngineStateStore, () => state(1), log);
    const out: string[] = [];
    r.persist();
    r.report(() => out.push('event'));
    await r.idle();
    assert.deepEqual(out, ['event']);
    assert.equal(errors.length, 1);
    assert.match(errors[0] ?? '', /could not persist the curtailment state/);
    assert.match(errors[0] ?? '', /disk full/);
  });
});
