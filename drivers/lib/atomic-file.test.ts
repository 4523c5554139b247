import assert from 'node:assert/strict';
import fs, { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { mock, test } from 'node:test';
import { removeStaleTemps, writeFileAtomic, writeFileAtomicSync } from './atomic-file.js';
import { tempDir } from '../../hil/testing/temp-dir.js';

for (const [name, write] of [
  // eslint-disable-next-line @typescript-eslint/require-await
  ['sync', async (p: string, d: string, m?: number) => writeFileAtomicSync(p, d, m)],
  ['async', writeFileAtomic],
] as const) {
  test(`${name}: writes, replaces, applies the mode to a new file and leaves no temp file`, async () => {
    const dir = tempDir('rp-atomic-');
    const file = join(dir, 'state.json');
    await write(file, 'one', 0o600);
    assert.equal(readFileSync(file, 'utf8'), 'one');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    await write(file, 'two');
    assert.equal(readFileSync(file, 'utf8'), 'two');
    assert.deepEqual(readdirSync(dir), ['state.json']);
  });

  test(`${name}: a failed rename leaves the target as it was and removes the temp file`, async () => {
    const dir = tempDir('rp-atomic-');
    const target = join(dir, 'busy');
    mkdirSync(target);
    writeFileSync(join(target, 'inside'), 'x'); // a non-empty folder cannot be renamed over
    await assert.rejects(write(target, 'new'), (err: NodeJS.ErrnoException) => typeof err.code === 'string');
    assert.deepEqual(readdirSync(dir), ['busy']);
    assert.deepEqual(readdirSync(target), ['inside']);
  });

  test(`${name}: a missing folder is an error (the caller creates it)`, async () => {
    const dir = tempDir('rp-atomic-');
    await assert.rejects(write(join(dir, 'no', 'file'), 'x'), { code: 'ENOENT' });
  });
}

test('sync: the folder is fsynced after the rename', () => {
  const dir = tempDir('rp-atomic-');
  const opened = new Map<number, string>();
  const synced: string[] = [];
  const realOpen = fs.openSync;
  const realFsync = fs.fsyncSync;
  const o = mock.method(fs, 'openSync', (...args: Parameters<typeof fs.openSync>) => {
    const fd = realOpen(...args);
    opened.set(fd, String(args[0]));
    return fd;
  });
  const f = mock.method(fs, 'fsyncSync', (fd: number) => {
    synced.push(opened.get(fd) ?? `fd ${fd}`);
    realFsync(fd);
  });
  syncBuiltinESMExports();
  try {
    writeFileAtomicSync(join(dir, 'f.json'), '{}');
  } finally {
    o.mock.restore();
    f.mock.restore();
    syncBuiltinESMExports();
  }
  assert.equal(synced.length, 2, synced.join(', '));
  assert.match(synced[0] ?? '', /f\.json\.\d+\.\d+\.tmp$/);
  assert.equal(synced[1], dir);
});

test('removeStaleTemps removes the temp files other processes left, nothing else', () => {
  const dir = tempDir('rp-atomic-');
  const file = join(dir, 'state.json');
  const names = ['state.json', 'state.json.1.3.tmp', 'state.json.999999.12.tmp', `state.json.${process.pid}.1.tmp`, 'state.json.corrupt-1', 'other.json.1.1.tmp'];
  for (const n of names) writeFileSync(join(dir, n), 'x');
  assert.equal(removeStaleTemps(file), 2);
  assert.deepEqual(readdirSync(dir).sort(), ['other.json.1.1.tmp', 'state.json', `state.json.${process.pid}.1.tmp`, 'state.json.corrupt-1'].sort());
  assert.equal(removeStaleTemps(join(dir, 'missing', 'x.json')), 0);
});
