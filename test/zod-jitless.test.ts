/**
 * The agent's process never generates code for zod (agent/zod-jitless.ts):
 * a preload counts the parsers zod compiles with `new Function` (their
 * source reads a `payload`) while `rackpilot config check` parses a config,
 * in tsc's output and in the bundle a release installs (where the module's
 * order is esbuild's to keep).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { repoRoot } from '../hil/testing/root.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const root = repoRoot();
const dir = tempDir('rackpilot-zod-');
const preload = join(dir, 'count-codegen.mjs');
writeFileSync(
  preload,
  `const F = globalThis.Function;
let n = 0;
const count = (args) => { if (String(args.at(-1)).includes('payload')) n++; };
globalThis.Function = new Proxy(F, {
  construct(t, args, nt) { count(args); return Reflect.construct(t, args, nt); },
  apply(t, self, args) { count(args); return Reflect.apply(t, self, args); },
});
process.on('exit', () => process.stderr.write('zod-codegen=' + n + '\\n'));
`,
);

function codegens(args: string[]): { count: number; status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', preload, ...args], { encoding: 'utf8', cwd: root, timeout: 60_000 });
  const m = /zod-codegen=(\d+)/.exec(r.stderr);
  assert.ok(m, `no count reported: ${r.stderr}`);
  return { count: Number(m[1]), status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('zod generates no code in the agent', () => {
  test('the counter sees zod compile an object parser when nothing turns that off', () => {
    const script = join(dir, 'plain.mjs');
    writeFileSync(script, `import { z } from ${JSON.stringify(join(root, 'node_modules', 'zod', 'index.js'))};\nz.object({ a: z.number(), b: z.string() }).parse({ a: 1, b: 'x' });\n`);
    assert.ok(codegens([script]).count > 0);
  });

  for (const [build, cli] of [
    ['tsc output', join(root, 'dist', 'agent', 'cli.js')],
    ['bundle', join(root, 'dist', 'bundle', 'agent', 'cli.js')],
  ] as const) {
    test(`config check (${build}) parses the example config with no parser compiled`, { skip: existsSync(cli) ? false : `${cli} not built` }, () => {
      const r = codegens([cli, 'config', 'check', join(root, 'examples', 'rack.yaml')]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /rack\.yaml: OK/);
      assert.equal(r.count, 0);
    });
  }
});
