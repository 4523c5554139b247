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
 * A process that runs `probeBefore` once, calls keepCompiledCode() with its
 * default number of major GCs before the switch (or does not call it),
 * allocates until it switched (or for as long), then runs `probeAfter` once
 * and allocates through many more major GCs. V8 names on stdout (--trace-flush-bytecode) each function whose
 * bytecode it drops; returns which of the two it dropped.
 */
function flushed(keep: boolean): { before: boolean; after: boolean } {
  const runtime = new URL('./runtime.js', import.meta.url).href;
  const script = `
    const { keepCompiledCode } = await import(${JSON.stringify(runtime)});
    // garbage that lives through a few scavenges, so that it is promoted and major GCs come often
    const held = [];
    const churn = () => { const k = []; for (let j = 0; j < 20000; j++) k.push({ j, s: 'x' + j }); held.push(k); if (held.length > 3) held.shift(); };
    function probeBefore(x) { const o = { a: x, b: [x, x + 1] }; return JSON.stringify(o).length; }
    probeBefore(1);
    let kept = false;
    if (${String(keep)}) keepCompiledCode({ maxWaitMs: 60000 }).then(() => { kept = true; });
    // the GC observer's entries come between turns of the event loop; so does the churn, as an agent's would
    const turn = () => new Promise((ok) => setImmediate(ok));
    for (let r = 0; r < (${String(keep)} ? 3000 : 60) && !kept; r++) { churn(); await turn(); }
    if (${String(keep)} && !kept) throw new Error('keepCompiledCode() never switched');
    function probeAfter(x) { const o = { a: x, b: [x, x + 2] }; return JSON.stringify(o).length; }
    probeAfter(1);
    for (let r = 0; r < 100; r++) { churn(); await turn(); }
  `;
  const r = spawnSync(process.execPath, ['--trace-flush-bytecode', '--max-old-space-size=32', '--input-type=module', '-'], { input: script, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const dropped = (name: string): boolean => new RegExp(`discarding compiled metadata for \\S+ <SharedFunctionInfo ${name}>`).test(r.stdout);
  return { before: dropped('probeBefore'), after: dropped('probeAfter') };
}

test('keepCompiledCode: code run once before the switch is dropped, code run after it is kept', () => {
  // the check itself: with flushing on throughout, V8 drops both
  assert.deepEqual(flushed(false), { before: true, after: true });
  assert.deepEqual(flushed(true), { before: true, after: false });
});
