import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { RackpilotError } from '../../drivers/lib/errors.js';
import { EngineStateStore, type PersistedState } from './state-store.js';
import { tempDir } from '../../hil/testing/temp-dir.js';

const STATE: PersistedState = {
  version: 1,
  savedAt: 1_700_000_000_123,
  phase: 'curtailed',
  demands: [
    { key: 'signal:underfreq', source: 'signal', kind: 'shed', since: 1_700_000_000_000, holdOffMs: 300_000 },
    { key: 'command:c1', source: 'command', kind: 'budget', maxW: 12_000, devices: ['s19-1'], since: 1_700_000_000_050, until: 1_700_000_900_000, holdOffMs: 0, commandId: 'c1' },
    { key: 'budget:evening', source: 'schedule', kind: 'budget', maxW: 8000, since: 1, startsAt: 2, until: 3, holdOffMs: 60_000, commandId: null },
  ],
  shed: {
    's19-1': { via: 'curtail', at: 1_700_000_000_010 },
    's19-2': { via: 'cut', at: 1_700_000_000_900, outlets: [{ pdu: 'pdu-a', outlet: '7' }] },
  },
  holdOffUntil: null,
};

describe('engine state store', () => {
  test('a missing file is none; save then load round-trips; the folder is created 0750', () => {
    const dir = join(tempDir('rp-engine-state-'), 'nested', 'state');
    const store = new EngineStateStore(join(dir, 'engine.json'));
    assert.deepEqual(store.load(), { kind: 'none' });
    store.save(STATE);
    assert.equal(statSync(dir).mode & 0o777, 0o750);
    assert.deepEqual(store.load(), { kind: 'ok', state: STATE });
    const next: PersistedState = { ...STATE, phase: 'holdoff', demands: [], shed: {}, holdOffUntil: 1_700_000_300_000 };
    store.save(next);
    assert.deepEqual(new EngineStateStore(join(dir, 'engine.json')).load(), { kind: 'ok', state: next });
    assert.deepEqual(readdirSync(dir), ['engine.json']);
  });

  test('a write killed before its rename leaves the old file (the stray temp file is cleared on load)', () => {
    const dir = tempDir('rp-engine-state-');
    const file = join(dir, 'engine.json');
    const store = new EngineStateStore(file);
    store.save(STATE);
    // what a kill mid-write leaves: a half-written temp file of another (dead) process
    writeFileSync(`${file}.999999.4.tmp`, JSON.stringify({ ...STATE, phase: 'idle' }).slice(0, 40));
    assert.deepEqual(store.load(), { kind: 'ok', state: STATE });
    assert.deepEqual(readdirSync(dir), ['engine.json']);
  });

  test('a truncated (not JSON) file is corrupt and moved aside, kept for inspection', () => {
    const dir = tempDir('rp-engine-state-');
    const file = join(dir, 'engine.json');
    const text = JSON.stringify(STATE).slice(0, 57);
    writeFileSync(file, text);
    const r = new EngineStateStore(file, () => 42).load();
    assert.equal(r.kind, 'corrupt');
    assert.ok(r.kind === 'corrupt');
    assert.match(r.error, /engine\.json: not JSON/);
    assert.equal(r.movedTo, `${file}.corrupt-42`);
    assert.equal(readFileSync(r.movedTo, 'utf8'), text);
    assert.equal(existsSync(file), false);
    assert.deepEqual(new EngineStateStore(file).load(), { kind: 'none' });
  });

  test('an empty file is corrupt; a second corrupt file in the same millisecond gets its own name', () => {
    const dir = tempDir('rp-engine-state-');
    const file = join(dir, 'engine.json');
    const store = new EngineStateStore(file, () => 7);
    writeFileSync(file, '');
    const a = store.load();
    writeFileSync(file, '{');
    const b = store.load();
    assert.ok(a.kind === 'corrupt' && b.kind === 'corrupt');
    assert.equal(a.movedTo, `${file}.corrupt-7`);
    assert.equal(b.movedTo, `${file}.corrupt-7-1`);
  });

  test('JSON of the wrong shape is corrupt, naming where', () => {
    const dir = tempDir('rp-engine-state-');
    const file = join(dir, 'engine.json');
    const cases: [unknown, RegExp][] = [
      [{ ...STATE, version: 2 }, /at version/],
      [{ ...STATE, phase: 'napping' }, /at phase/],
      [{ ...STATE, demands: [{ ...STATE.demands[0], source: 'rumour' }] }, /at demands\.0\.source/],
      [{ ...STATE, demands: [{ key: 'x', source: 'signal', kind: 'shed', since: 1 }] }, /at demands\.0\.holdOffMs/],
      [{ ...STATE, shed: { a: { via: 'pray', at: 1 } } }, /at shed\.a\.via/],
      [{ ...STATE, holdOffUntil: 'soon' }, /at holdOffUntil/],
      [[], /at \(root\)/],
    ];
    for (const [content, where] of cases) {
      writeFileSync(file, JSON.stringify(content));
      const r = new EngineStateStore(file).load();
      assert.ok(r.kind === 'corrupt', JSON.stringify(content));
      assert.match(r.error, where);
      assert.ok(r.movedTo !== null && existsSync(r.movedTo));
    }
  });

  test('an unreadable state path is corrupt (fail safe), not "nothing held down"', () => {
    const dir = tempDir('rp-engine-state-');
    // a folder where the file should be
    mkdirSync(join(dir, 'engine.json'));
    mkdirSync(join(dir, 'engine.json', 'x'));
    const a = new EngineStateStore(join(dir, 'engine.json')).load();
    assert.ok(a.kind === 'corrupt');
    assert.match(a.error, /cannot read engine state file/);
    assert.equal(a.movedTo, null);
    // a file where the folder should be
    writeFileSync(join(dir, 'plain'), 'x');
    const b = new EngineStateStore(join(dir, 'plain', 'engine.json')).load();
    assert.ok(b.kind === 'corrupt');
    assert.equal(b.movedTo, null);
    if (process.getuid?.() !== 0) {
      const locked = join(dir, 'locked');
      mkdirSync(locked, { mode: 0o000 });
      const c = new EngineStateStore(join(locked, 'engine.json')).load();
      assert.ok(c.kind === 'corrupt');
    }
  });

  test('a save that cannot be written throws and leaves the previous file', () => {
    const dir = tempDir('rp-engine-state-');
    writeFileSync(join(dir, 'plain'), 'x');
    assert.throws(
      () => new EngineStateStore(join(dir, 'plain', 'engine.json')).save(STATE),
      (err: unknown) => err instanceof RackpilotError && err.code === 'STATE_WRITE_FAILED' && /cannot write engine state file .*plain/.test(err.message),
    );
    // the target is a non-empty folder: the rename fails, nothing else changes
    const busy = join(dir, 'busy.json');
    mkdirSync(busy);
    writeFileSync(join(busy, 'keep'), 'x');
    assert.throws(() => new EngineStateStore(busy).save(STATE), RackpilotError);
    assert.deepEqual(readdirSync(dir).sort(), ['busy.json', 'plain']);
  });

  test('an invalid state is refused rather than written (it would not load back)', () => {
    const dir = tempDir('rp-engine-state-');
    const file = join(dir, 'engine.json');
    const store = new EngineStateStore(file);
    store.save(STATE);
    assert.throws(() => store.save({ ...STATE, holdOffUntil: Number.NaN }), /refusing to save an invalid engine state \(holdOffUntil/);
    assert.deepEqual(store.load(), { kind: 'ok', state: STATE });
  });

  test('SIGKILL during saves in a loop never leaves a file that does not load', async () => {
    const dir = tempDir('rp-engine-state-');
    const file = join(dir, 'engine.json');
    const moduleUrl = new URL('./state-store.js', import.meta.url).href;
    // saves states of very different sizes as fast as it can; savedAt encodes which one
    const child = `
      import { EngineStateStore } from ${JSON.stringify(moduleUrl)};
      const store = new EngineStateStore(process.env.RP_STATE_FILE);
      const pad = 'x'.repeat(2000);
      for (let i = 0; ; i++) {
        const n = i % 40;
        const demands = Array.from({ length: n }, (_, k) => ({ key: 'command:' + k + pad, source: 'command', kind: 'shed', since: i, holdOffMs: 1000 }));
        store.save({ version: 1, savedAt: i, phase: 'curtailed', demands, shed: {}, holdOffUntil: null });
        if (i === 0) process.stdout.write('ready\\n');
      }
    `;
    let highest = -1;
    for (let round = 0; round < 6; round++) {
      const p = spawn(process.execPath, ['--input-type=module', '-e', child], { env: { ...process.env, RP_STATE_FILE: file }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<NodeJS.Signals | null>((resolve) => p.on('exit', (_code, sig) => resolve(sig)));
      await new Promise<void>((resolve, reject) => {
        p.stdout.once('data', () => resolve());
        p.once('exit', () => reject(new Error(`child exited before its first save: ${stderr}`)));
      });
      // let it save a while (a different moment each round), then kill it without warning
      await new Promise((r) => setTimeout(r, 15 + round * 23));
      p.kill('SIGKILL');
      assert.equal(await exited, 'SIGKILL');
      const r = new EngineStateStore(file).load();
      assert.equal(r.kind, 'ok', JSON.stringify(r));
      assert.ok(r.kind === 'ok');
      assert.equal(r.state.demands.length, r.state.savedAt % 40, 'the file holds one whole save');
      highest = Math.max(highest, r.state.savedAt);
      assert.deepEqual(readdirSync(dir), ['engine.json'], 'the stray temp file of the killed process is cleared');
    }
    assert.ok(highest > 0, 'the child got past its first save');
  });
});
