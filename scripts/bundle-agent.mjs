#!/usr/bin/env node
/**
 * The agent as it is installed: dist/agent/cli.js and everything it imports,
 * bundled by esbuild into one entry file plus the chunks its lazy imports
 * load (ES modules, code splitting), whitespace and comments removed, names
 * kept (stack traces and logs read as in the sources).
 *
 *   node scripts/bundle-agent.mjs [--out DIR]        (default dist/bundle/agent)
 *
 * Why: node keeps every loaded module's source text in the heap and one
 * module record per file; the agent loads ~700 files. Bundled, the agent
 * polling 256 devices holds about 4-5 MiB less RSS (hil/bench/rss-probe.ts).
 * `npm run build` runs this after tsc; scripts/bundle.sh puts the result in
 * place of dist/agent/cli.js in a release, so the service runs it.
 *
 * Two dependencies are changed on the way in: mqtt.js loads its WebSocket
 * transport only for a ws:// or wss:// broker (mqttLazyWs below), and zod
 * starts with its code generation off (zodJitless below).
 *
 * Left out of the bundle, and loaded from where they are at run time:
 *  - packages with native bindings (koffi, serialport, onoff/epoll), which
 *    load .node files relative to their own package;
 *  - the test rigs under dist/hil/ (simulators, benchmarks), which spawn
 *    their own files as child processes: the bundle imports them by their
 *    path relative to dist/agent/, where a release puts the bundle.
 */
import { build } from 'esbuild';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const distAgent = join(root, 'dist', 'agent');
const distHil = join(root, 'dist', 'hil') + sep;

/** Packages that load native code or files next to themselves: never bundled. */
export const EXTERNAL_PACKAGES = ['koffi', 'serialport', '@serialport/*', 'onoff', 'epoll'];

/** Imports of dist/hil/** stay imports, by their path from dist/agent/ (where the bundle runs in a release). */
const hilExternal = {
  name: 'hil-external',
  setup(b) {
    b.onResolve({ filter: /^\.\.?\// }, (args) => {
      const target = resolve(args.resolveDir, args.path);
      if (!target.startsWith(distHil)) return undefined;
      const path = relative(distAgent, target).split(sep).join('/');
      return { path: path.startsWith('.') ? path : `./${path}`, external: true };
    });
  },
};

/**
 * An esbuild plugin that rewrites one dependency file on the way in: the
 * first match of `expected` becomes `replacement`. The build fails, saying
 * `what` the file no longer does, when `expected` is not found (a new version
 * of the dependency: look again).
 */
function patchDependency(name, file, expected, replacement, what) {
  return {
    name,
    setup(b) {
      b.onLoad({ filter: file }, (args) => {
        const code = readFileSync(args.path, 'utf8');
        if (!expected.test(code)) {
          return { errors: [{ text: `${name}: ${args.path} no longer ${what} as expected; update scripts/bundle-agent.mjs` }] };
        }
        return { contents: code.replace(expected, replacement), loader: 'js' };
      });
    },
  };
}

/**
 * mqtt.js requires its WebSocket transport (the `ws` package, ~1 MiB of heap)
 * on its first connect whatever the URL's protocol; here it is required when
 * a ws:// or wss:// broker URL first uses it.
 */
const mqttLazyWs = patchDependency(
  'mqtt-lazy-ws',
  /[\\/]node_modules[\\/]mqtt[\\/]build[\\/]lib[\\/]connect[\\/]index\.js$/,
  /protocols\.ws = require\('\.\/ws'\)\.streamBuilder;\s*protocols\.wss = require\('\.\/ws'\)\.streamBuilder;/,
  "protocols.ws = (client, opts) => require('./ws').streamBuilder(client, opts); protocols.wss = protocols.ws;",
  'requires ./ws',
);

/**
 * zod starts with its code generation off (agent/zod-jitless.ts says why).
 * The CLI imports zod-jitless.js first, which is enough for tsc's output, but
 * esbuild's code splitting evaluates the shared chunks (zod's and the
 * schemas') before the entry's own modules, so in the bundle the setting
 * comes with zod's global config object itself.
 */
const zodJitless = patchDependency(
  'zod-jitless',
  /[\\/]node_modules[\\/]zod[\\/]v4[\\/]core[\\/]core\.js$/,
  /\(_a = globalThis\)\.__zod_globalConfig \?\? \(_a\.__zod_globalConfig = \{\}\);/,
  '(_a = globalThis).__zod_globalConfig ?? (_a.__zod_globalConfig = { jitless: true });',
  'creates its global config',
);

/** Bundles dist/agent/cli.js into `outDir` (emptied first), its esbuild metafile beside it (`../meta.json`); returns the files written. */
export async function bundleAgent(outDir = join(distAgent, '..', 'bundle', 'agent')) {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const res = await build({
    entryPoints: [join(distAgent, 'cli.js')],
    outdir: outDir,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: 'eof',
    chunkNames: 'chunk-[hash]',
    external: EXTERNAL_PACKAGES,
    plugins: [hilExternal, mqttLazyWs, zodJitless],
    // CommonJS dependencies call require(); an ES module has none of its own
    banner: { js: "import { createRequire as __rackpilotRequire } from 'node:module'; const require = __rackpilotRequire(import.meta.url);" },
    logLevel: 'warning',
    metafile: true,
  });
  // what went into each file, for `esbuild --analyze`-style questions (which chunk holds what); not shipped
  writeFileSync(join(outDir, '..', 'meta.json'), JSON.stringify(res.metafile));
  return Object.keys(res.metafile.outputs);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { out: { type: 'string' } } });
  const out = values.out ? resolve(values.out) : join(distAgent, '..', 'bundle', 'agent');
  const files = await bundleAgent(out);
  process.stdout.write(`bundle-agent: ${files.length} files in ${relative(process.cwd(), out) || '.'}\n`);
}
