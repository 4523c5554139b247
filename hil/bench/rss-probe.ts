/**
 * Memory probe (prints figures; asserts nothing): a simulated rack (every
 * firmware family of hil/sim/catalog.ts, round-robin, or the ones named by
 * --families), the embedded broker, and the agent as its own process, polled
 * every --interval-ms. Prints the agent's RSS over time from /proc (VmRSS and
 * its anonymous/file parts) with the V8 breakdown (heapUsed, heapTotal,
 * external, arrayBuffers) reported from inside the agent by this same file,
 * preloaded there with `--import` (it then loads nothing else).
 *
 *   node dist/hil/bench/rss-probe.js [--miners 256] [--interval-ms 5000] [--duration-s 90] [--concurrency N]
 *                                    [--families luxos,antminer,...] [--bare] [--node-flag=--max-semi-space-size=1 ...]
 *
 * The poll reads `poll.concurrency` devices at once: its default (32) unless
 * --concurrency says otherwise. The agent runs under the low-memory node
 * profile (agent/runtime.ts LOW_MEMORY_NODE_FLAGS); --bare drops it.
 * --node-flag adds a flag after them (repeatable; a later V8 flag wins), to
 * compare V8 settings on the same rack.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tempDir } from '../testing/temp-dir.js';

const CHILD_ENV = 'RACKPILOT_RSS_PROBE_FILE';

interface HeapSample {
  t: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

/** Inside the agent: append the V8 breakdown to the probe's file once a second. */
function reportFromChild(file: string): void {
  const sample = (): void => {
    const m = process.memoryUsage();
    const s: HeapSample = { t: Date.now(), heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers };
    appendFileSync(file, `${JSON.stringify(s)}\n`);
  };
  sample();
  setInterval(sample, 1000).unref();
}

function procMem(pid: number): { rss: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) * 1024;
  return { rss: kib('VmRSS'), anon: kib('RssAnon'), file: kib('RssFile') + kib('RssShmem') };
}

const mib = (n: number | undefined): string => (n === undefined ? '-' : (n / 1048576).toFixed(1).padStart(6));

function lastHeap(file: string): HeapSample | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const line = text.trimEnd().split('\n').at(-1);
  return line ? (JSON.parse(line) as HeapSample) : undefined;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      miners: { type: 'string', default: '256' },
      'interval-ms': { type: 'string', default: '5000' },
      'duration-s': { type: 'string', default: '90' },
      concurrency: { type: 'string' },
      families: { type: 'string' },
      'node-flag': { type: 'string', multiple: true, default: [] },
      bare: { type: 'boolean', default: false },
    },
  });
  const miners = Number(values.miners);
  const intervalMs = Number(values['interval-ms']);
  const durationS = Number(values['duration-s']);
  const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);
  if (![miners, intervalMs, durationS, concurrency ?? 1].every((v) => Number.isInteger(v) && v > 0)) {
    console.error('--miners, --interval-ms, --duration-s and --concurrency take positive integers');
    process.exit(2);
  }
  // loaded here, not at the top: the agent preloads this file and must not pay for the simulators
  const { LOW_MEMORY_NODE_FLAGS } = await import('../../agent/runtime.js');
  const { startEmbeddedBroker } = await import('../../agent/embedded-broker.js');
  const { rackTopics } = await import('../../protocol/topics.js');
  const { SIM_CATALOG, startMixedRack } = await import('../sim/catalog.js');
  const { MqttWatch } = await import('../testing/mqtt-watch.js');
  const { freePort } = await import('../testing/ports.js');
  type Telemetry = import('../../protocol/messages.js').TelemetryMessage;

  const { familiesArg } = await import('./families-arg.js');
  const families = familiesArg(values.families) ?? [...SIM_CATALOG];
  const { sims, devices } = await startMixedRack(miners, families, { fast: true });
  const broker = await startEmbeddedBroker('127.0.0.1', await freePort());
  const site = 'probe';
  const rack = `r${miners}`;
  const t = rackTopics(site, rack);
  const dir = tempDir('rackpilot-rss-');
  const cfg = join(dir, 'agent.json.yaml');
  const heapFile = join(dir, 'heap.jsonl');
  writeFileSync(
    cfg,
    JSON.stringify({
      site,
      rack,
      mqtt: { url: broker.url, protocolVersion: 4 },
      poll: { intervalMs, deadlineMs: 2000, ...(concurrency !== undefined ? { concurrency } : {}) },
      actions: { deadlineMs: 30_000 },
      log: { level: 'warn' },
      devices,
    }),
  );
  const watch = await MqttWatch.connect(broker.url, t.telemetry);
  const flags = [...(values.bare ? [] : LOW_MEMORY_NODE_FLAGS), ...values['node-flag']];
  const { agentCli } = await import('./agent-cli.js');
  const cli = agentCli();
  const args = [...flags, '--import', fileURLToPath(import.meta.url), cli.path, 'run', '--config', cfg];
  const agent = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, [CHILD_ENV]: heapFile } });
  const pid = agent.pid ?? 0;
  console.log(`rss probe: ${miners} simulated miners of ${families.length} families, poll every ${intervalMs} ms (${concurrency ?? 'default'} at once), ${durationS} s, ${cli.build} agent, node ${process.version} ${flags.join(' ')}`);
  console.log('     s  online   seq    rss   anon   file | heapUsed heapTotal external arrayBuf (MiB)');
  const rss: number[] = [];
  const t0 = Date.now();
  try {
    while (Date.now() - t0 < durationS * 1000 && agent.exitCode === null) {
      await new Promise((r) => setTimeout(r, 1000));
      const m = procMem(pid);
      const h = lastHeap(heapFile);
      const tel = watch.messages.filter((x) => x.topic === t.telemetry).at(-1)?.json as Telemetry | undefined;
      const s = Math.round((Date.now() - t0) / 1000);
      if (tel?.summary.online === miners) rss.push(m.rss);
      if (s % 5 === 0) {
        console.log(
          `${String(s).padStart(6)} ${String(tel?.summary.online ?? '-').padStart(7)} ${String(tel?.seq ?? '-').padStart(5)} ${mib(m.rss)} ${mib(m.anon)} ${mib(m.file)} | ${mib(h?.heapUsed)}    ${mib(h?.heapTotal)}   ${mib(h?.external)}   ${mib(h?.arrayBuffers)}`,
        );
      }
    }
    const s = [...rss].sort((a, b) => a - b);
    console.log(`agent RSS with all ${miners} online (n=${s.length} samples): median ${mib(s[Math.floor(s.length / 2)])} MiB, max ${mib(s.at(-1))} MiB`);
  } finally {
    if (agent.exitCode === null && agent.signalCode === null) {
      agent.kill('SIGTERM');
      await new Promise((r) => agent.once('exit', r));
    }
    await watch.close();
    await broker.close();
    await Promise.all(sims.map((x) => x.close()));
  }
}

const childFile = process.env[CHILD_ENV];
if (childFile !== undefined) reportFromChild(childFile);
else
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
