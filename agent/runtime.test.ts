import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { LOW_MEMORY_NODE_FLAGS, LOW_MEMORY_NODE_FLAG_RATIONALE, missingLowMemoryFlags } from './runtime.js';

test('this node takes every agent flag, starts without a warning and reports them in execArgv', () => {
  // the script on stdin, so that execArgv holds the flags alone
  const r = spawnSync(process.execPath, [...LOW_MEMORY_NODE_FLAGS, '-'], { input: 'process.stdout.write(JSON.stringify(process.execArgv))', encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '', 'no start-up warning (e.g. --jitless without --no-expose-wasm)');
  const execArgv = JSON.parse(r.stdout) as string[];
  assert.deepEqual(execArgv, [...LOW_MEMORY_NODE_FLAGS]);
  assert.deepEqual(missingLowMemoryFlags(execArgv), []);
});

test('missingLowMemoryFlags names what a hand-started process lacks', () => {
  assert.deepEqual(missingLowMemoryFlags([]), [...LOW_MEMORY_NODE_FLAGS]);
  const first = LOW_MEMORY_NODE_FLAGS[0] ?? '';
  assert.deepEqual(missingLowMemoryFlags(LOW_MEMORY_NODE_FLAGS.slice(1)), [first]);
});

test('every flag has a reason, none twice, and they fit a shebang line', () => {
  assert.equal(new Set(LOW_MEMORY_NODE_FLAGS).size, LOW_MEMORY_NODE_FLAGS.length);
  for (const [flag, why] of LOW_MEMORY_NODE_FLAG_RATIONALE) assert.ok(flag.startsWith('--') && why.length > 10, flag);
  // Linux reads at most 127 bytes of "#!..." before 5.1 (255 after): `env -S` must see every flag
  assert.ok(`#!/usr/bin/env -S node ${LOW_MEMORY_NODE_FLAGS.join(' ')}`.length <= 127);
});

/**
 * A process that compiles some code, then allocates through many major GCs;
 * V8 says on stderr (--trace-flush-bytecode) each function whose bytecode it
 * drops. Returns how many it dropped.
 */
function flushedFunctions(keep: boolean): number {
  const runtime = new URL('./runtime.js', import.meta.url).href;
  const script = `
    const { keepCompiledCode } = await import(${JSON.stringify(runtime)});
    if (${String(keep)}) keepCompiledCode();
    let keep = [];
    for (let r = 0; r < 150; r++) { for (let j = 0; j < 50000; j++) keep.push({ j, s: 'x' + j }); keep = []; }
  `;
  const r = spawnSync(process.execPath, ['--trace-flush-bytecode', '--max-old-space-size=32', '--input-type=module', '-'], { input: script, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return (r.stdout.match(/discarding compiled metadata/g) ?? []).length;
}

test('keepCompiledCode: V8 drops no bytecode afterwards (and this process shape does make it drop some without)', () => {
  assert.ok(flushedFunctions(false) > 0, 'the check itself: without keepCompiledCode() V8 flushes start-up code');
  assert.equal(flushedFunctions(true), 0);
});
