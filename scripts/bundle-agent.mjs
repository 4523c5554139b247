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
 * mqtt.js requires its WebSocket transport (the `ws` package, ~1 MiB of heap)
 * on its first connect whatever the URL's protocol; here it is required when
 * a ws:// or wss:// broker URL first uses it. The build fails if mqtt's code
 * no longer reads as expected (a new mqtt version: look again).
 */
const MQTT_WS_EAGER = /protocols\.ws = require\('\.\/ws'\)\.streamBuilder;\s*protocols\.wss = require\('\.\/ws'\)\.streamBuilder;/;
const mqttLazyWs = {
  name: 'mqtt-lazy-ws',
  setup(b) {
    b.onLoad({ filter: /[\\/]node_modules[\\/]mqtt[\\/]build[\\/]lib[\\/]connect[\\/]index\.js$/ }, (args) => {
      const code = readFileSync(args.path, 'utf8');
      if (!MQTT_WS_EAGER.test(code)) {
        return { errors: [{ text: `mqtt-lazy-ws: ${args.path} no longer requires ./ws as expected; update scripts/bundle-agent.mjs` }] };
      }
      const lazy = "protocols.ws = (client, opts) => require('./ws').streamBuilder(client, opts); protocols.wss = protocols.ws;";
      return { contents: code.replace(MQTT_WS_EAGER, lazy), loader: 'js' };
    });
  },
};

/**
 * zod starts with its code generation off (agent/zod-jitless.ts says why).
 * The CLI imports zod-jitless.js first, which is enough for tsc's output, but
 * esbuild's code splitting evaluates the shared chunks (zod's and the
 * schemas') before the entry's own modules, so in the bundle the setting
 * comes with zod's global config object itself. The build fails if zod's code
 * no longer reads as expected (a new zod version: look again).
 */
const ZOD_GLOBAL_CONFIG = /\(_a = globalThis\)\.__zod_globalConfig \?\? \(_a\.__zod_globalConfig = \{\}\);/;
const zodJitless = {
  name: 'zod-jitless',
  setup(b) {
    b.onLoad({ filter: /[\\/]node_modules[\\/]zod[\\/]v4[\\/]core[\\/]core\.js$/ }, (args) => {
      const code = readFileSync(args.path, 'utf8');
      if (!ZOD_GLOBAL_CONFIG.test(code)) {
        return { errors: [{ text: `zod-jitless: ${args.path} no longer creates its global config as expected; update scripts/bundle-agent.mjs` }] };
      }
      return { contents: code.replace(ZOD_GLOBAL_CONFIG, '(_a = globalThis).__zod_globalConfig ?? (_a.__zod_globalConfig = { jitless: true });'), loader: 'js' };
    });
  },
};

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
