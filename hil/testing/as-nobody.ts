/**
 * Runs a compiled module's function as an unprivileged user (uid/gid 65534,
 * "nobody"), for tests that check permission errors while the suite runs as
 * root (root passes every file permission check). The module and the modules
 * it imports by relative path are copied to a world-readable temporary
 * folder first: the checkout itself may sit where nobody cannot enter (a
 * clone under /root). Modules that import npm packages are refused.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const IMPORT_RE = /^\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|^\s*import\s*['"]([^'"]+)['"]/gm;

/** The module and everything it imports by relative path, as absolute paths. */
function closure(entry: string): string[] {
  const seen = new Set<string>();
  const visit = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT_RE)) {
      const spec = m[1] ?? m[2];
      if (!spec || spec.startsWith('node:')) continue;
      if (!spec.startsWith('.')) throw new Error(`${file} imports the package "${spec}": runAsNobody copies relative imports only`);
      visit(resolve(dirname(file), spec));
    }
  };
  visit(entry);
  return [...seen];
}

/**
 * Calls `fn(...args)` exported by the compiled module `modulePath` in a child
 * process running as uid/gid 65534 and returns what it resolved to (JSON), or
 * `{ error: { code, message } }` when it threw.
 */
export function runAsNobody(modulePath: string, fn: string, args: unknown[]): unknown {
  const files = closure(resolve(modulePath));
  const base = dirname(resolve(modulePath));
  const common = files.reduce((acc, f) => {
    let d = acc;
    while (!f.startsWith(`${d}/`)) d = dirname(d);
    return d;
  }, base);
  const dir = mkdtempSync(join(tmpdir(), 'rp-nobody-'));
  try {
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'package.json'), '{"type":"module"}\n');
    for (const f of files) {
      const to = join(dir, relative(common, f));
      mkdirSync(dirname(to), { recursive: true, mode: 0o755 });
      copyFileSync(f, to);
      chmodSync(to, 0o644);
    }
    for (let d = dirname(join(dir, relative(common, modulePath))); d.startsWith(dir); d = dirname(d)) chmodSync(d, 0o755);
    const mod = pathToFileURL(join(dir, relative(common, resolve(modulePath)))).href;
    const script = `import(${JSON.stringify(mod)}).then((m) => m[${JSON.stringify(fn)}](...${JSON.stringify(args)})).then((v) => console.log(JSON.stringify({ value: v ?? null })), (e) => console.log(JSON.stringify({ error: { code: e.code, message: e.message } })))`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { uid: 65534, gid: 65534, cwd: dir, encoding: 'utf8', timeout: 30_000 });
    if (r.status !== 0) throw new Error(`child as nobody failed (${r.status}): ${r.stderr}`);
    const out = JSON.parse(r.stdout) as { value?: unknown; error?: unknown };
    return 'error' in out ? { error: out.error } : out.value;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
