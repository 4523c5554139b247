/**
 * Benchmark (prints figures; asserts nothing): a rack of simulated miners
 * (LuxOS by default; with --mix every firmware family of hil/sim/catalog.ts,
 * round-robin, or the ones named by --families), the embedded broker, and the
 * agent as its own process.
 *  - curtail/restore: command published -> final result received, and the
 *    agent's own receipt -> all-devices-confirmed time (result.durationMs);
 *  - telemetry poll cost: agent CPU ms per poll cycle and RSS, from /proc.
 *
 *   npm run bench -- [--miners 64] [--runs 5] [--sleep-delay-ms 0] [--wake-ramp-ms 0] [--cycles 20]
 *                    [--interval-ms 1000] [--mix] [--families luxos,antminer,...]
 *
 * A large rack needs file descriptors (listeners and connections of every
 * simulator here, the agent's sockets there): the benchmark checks the limit
 * against --miners up front and says how far to raise it rather than failing
 * half-way with EMFILE.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startEmbeddedBroker } from '../../agent/embedded-broker.js';
import type { CommandResult, TelemetryMessage } from '../../protocol/messages.js';
import { rackTopics } from '../../protocol/topics.js';
import { SIM_CATALOG, startMixedRack, type CatalogEntry, type StartedSim } from '../sim/catalog.js';
import { familiesArg } from './families-arg.js';
import { LuxosSim } from '../sim/luxos-sim.js';
import { MqttWatch } from '../testing/mqtt-watch.js';
import { freePort } from '../testing/ports.js';
import { agentCli } from './agent-cli.js';
import { fdLimitProblem, nofile, portRangeProblem } from './limits.js';
import { tempDir } from '../testing/temp-dir.js';

const { values } = parseArgs({
  options: {
    miners: { type: 'string', default: '64' },
    runs: { type: 'string', default: '5' },
    'sleep-delay-ms': { type: 'string', default: '0' },
    'wake-ramp-ms': { type: 'string', default: '0' },
    cycles: { type: 'string', default: '20' },
    'interval-ms': { type: 'string', default: '1000' },
    mix: { type: 'boolean', default: false },
    families: { type: 'string' },
  },
});
const miners = Number(values.miners);
const runs = Number(values.runs);
const cycles = Number(values.cycles);
const intervalMs = Number(values['interval-ms']);
const sleepDelayMs = Number(values['sleep-delay-ms']);
const wakeRampMs = Number(values['wake-ramp-ms']);
for (const [k, v] of Object.entries({ miners, runs, cycles, 'interval-ms': intervalMs, 'sleep-delay-ms': sleepDelayMs, 'wake-ramp-ms': wakeRampMs })) {
  if (!Number.isInteger(v) || v < (k.endsWith('-ms') && k !== 'interval-ms' ? 0 : 1)) {
    console.error(`--${k}: expected a ${k.endsWith('-ms') && k !== 'interval-ms' ? 'non-negative' : 'positive'} integer`);
    process.exit(2);
  }
}
/** Families of a mixed rack (--mix: all of them; --families implies --mix); undefined: LuxOS only. */
const mixFamilies: CatalogEntry[] | undefined = familiesArg(values.families) ?? (values.mix ? [...SIM_CATALOG] : undefined);

/** Stops with the reason when the open-file or ephemeral-port limit is too low for n miners. */
function checkLimits(n: number): void {
  const problems = [fdLimitProblem(n, 'miners'), portRangeProblem(n, 'miners')].filter((p) => p !== undefined);
  if (problems.length === 0) return;
  console.error(problems.join('\n'));
  process.exit(2);
}

const CLK_TCK = 100; // Linux USER_HZ

function procStat(pid: number): { cpuMs: number; rssKiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]); // utime + stime
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = /VmRSS:\s+(\d+)/.exec(status);
  return { cpuMs: (ticks * 1000) / CLK_TCK, rssKiB: rss ? Number(rss[1]) : 0 };
}

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const pick = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
  return `median ${pick(0.5).toFixed(0)} ms, p90 ${pick(0.9).toFixed(0)} ms, max ${(s.at(-1) ?? NaN).toFixed(0)} ms (n=${s.length})`;
}

interface Rack {
  devices: Record<string, unknown>[];
  /** Family of each device id (mixed racks). */
  familyOf: Map<string, string>;
  describe: string;
  close(): Promise<void>;
}

async function startLuxosRack(n: number): Promise<Rack> {
  const sims: LuxosSim[] = [];
  for (let i = 0; i < n; i++) {
    const sim = new LuxosSim({ sleepDelayMs, wakeRampMs });
    await sim.listen();
    sims.push(sim);
  }
  return {
    devices: sims.map((s, i) => ({ id: `m${i}`, driver: 'luxos', host: '127.0.0.1', port: s.server.port, confirmPollMs: 50 })),
    familyOf: new Map(sims.map((_, i) => [`m${i}`, 'luxos'])),
    describe: `${n} simulated LuxOS miners`,
    close: async () => {
      await Promise.all(sims.map((s) => s.close()));
    },
  };
}

async function startMix(n: number, families: CatalogEntry[]): Promise<Rack> {
  const { sims, devices } = await startMixedRack(n, families, { fast: true, timing: { sleepDelayMs, wakeRampMs } });
  const count = (f: string): number => sims.filter((s: StartedSim) => s.family === f).length;
  return {
    devices,
    familyOf: new Map(devices.map((d, i) => [d.id, (sims[i] as StartedSim).family])),
    describe: `${n} simulated miners of ${families.length} families (${families.map((f) => `${f.family} x${count(f.family)}`).join(', ')})`,
    close: async () => {
      await Promise.all(sims.map((s) => s.close()));
    },
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

async function main(): Promise<void> {
  checkLimits(miners);
  const simRack = mixFamilies ? await startMix(miners, mixFamilies) : await startLuxosRack(miners);
  const broker = await startEmbeddedBroker('127.0.0.1', await freePort());
  const site = 'bench';
  const rack = `r${miners}`;
  const t = rackTopics(site, rack);
  const dir = tempDir('rackpilot-bench-');
  const cfg = join(dir, 'agent.json.yaml');
  writeFileSync(
    cfg,
    JSON.stringify({
      site,
      rack,
      mqtt: { url: broker.url, protocolVersion: 4 }, // the embedded aedes broker is MQTT 3.1.1
      poll: { intervalMs, deadlineMs: 2000, concurrency: 64 },
      actions: { deadlineMs: 30_000 },
      log: { level: 'warn' },
      stateDir: dir,
      devices: simRack.devices,
    }),
  );
  const watch = await MqttWatch.connect(broker.url, `${t.root}/#`);
  const agent = spawn(process.execPath, [agentCli().path, 'run', '--config', cfg], { stdio: ['ignore', 'ignore', 'inherit'] });
  const pid = agent.pid ?? 0;
  try {
    await watch.waitFor((m) => m.topic === t.telemetry && (m.json as TelemetryMessage).summary.online === miners, 60_000, 'first full telemetry');
    const node = process.version;
    console.log(`rackpilot benchmark: ${simRack.describe}, node ${node}, sim sleep delay ${sleepDelayMs} ms, wake ramp ${wakeRampMs} ms, open-file limit ${nofile().soft}`);

    // --- poll cost ---
    const s0 = procStat(pid);
    const seq0 = (watch.messages.filter((m) => m.topic === t.telemetry).at(-1)?.json as TelemetryMessage).seq;
    await watch.next((m) => m.topic === t.telemetry && (m.json as TelemetryMessage).seq >= seq0 + cycles, (cycles + 10) * intervalMs * 2, `${cycles} cycles`);
    const s1 = procStat(pid);
    const tms = watch.messages.filter((m) => m.topic === t.telemetry).map((m) => m.text.length);
    console.log(`telemetry poll: ${((s1.cpuMs - s0.cpuMs) / cycles).toFixed(1)} CPU ms per cycle (agent process, all work incl. MQTT, over ${cycles} cycles at ${intervalMs} ms); agent RSS ${(s1.rssKiB / 1024).toFixed(1)} MiB; telemetry message ${tms.at(-1) ?? 0} bytes`);

    // --- curtail / restore ---
    const curtailWall: number[] = [];
    const curtailAgent: number[] = [];
    const restoreWall: number[] = [];
    const restoreAgent: number[] = [];
    /** Per family and action: each device's receipt -> confirmed time (ms). */
    const perFamily = new Map<string, number[]>();
    const fullPowerW = (watch.messages.filter((m) => m.topic === t.telemetry).at(-1)?.json as TelemetryMessage).summary.powerW;
    for (let r = 0; r < runs; r++) {
      // each round starts from a rack at full power (a restore confirms when hashing resumes, before the ramp ends)
      await watch.next(
        (m) => m.topic === t.telemetry && (m.json as TelemetryMessage).summary.powerW >= 0.97 * fullPowerW,
        120_000,
        'rack back at full power',
      );
      for (const [command, wall, own] of [
        ['curtail', curtailWall, curtailAgent],
        ['restore', restoreWall, restoreAgent],
      ] as const) {
        const id = `bench-${command}-${r}-${Date.now()}`;
        const t0 = performance.now();
        await watch.publish(t.cmd, JSON.stringify({ id, command }));
        const m = await watch.next((x) => x.topic === t.cmdResult && (x.json as CommandResult).id === id && (x.json as CommandResult).status !== 'accepted', 60_000, `${command} result`);
        const res = m.json as CommandResult;
        if (res.status !== 'succeeded') throw new Error(`${command} ${res.status}: ${res.error?.message ?? ''}`);
        wall.push(performance.now() - t0);
        own.push(res.result?.durationMs ?? NaN);
        for (const d of res.result?.devices ?? []) {
          const key = `${command} ${simRack.familyOf.get(d.id) ?? '?'}`;
          if (d.tookMs !== undefined) perFamily.set(key, [...(perFamily.get(key) ?? []), d.tookMs]);
        }
      }
    }
    console.log(`curtail, command published -> result received: ${stats(curtailWall)}`);
    console.log(`curtail, agent receipt -> all ${miners} confirmed by read-back: ${stats(curtailAgent)}`);
    console.log(`restore, command published -> result received: ${stats(restoreWall)}`);
    console.log(`restore, agent receipt -> all ${miners} confirmed: ${stats(restoreAgent)}`);
    if (mixFamilies) {
      for (const command of ['curtail', 'restore']) {
        const parts = mixFamilies.map((f) => {
          const xs = perFamily.get(`${command} ${f.family}`) ?? [];
          return `${f.family} ${median(xs).toFixed(0)}/${Math.max(...xs).toFixed(0)}`;
        });
        console.log(`${command}, per device receipt -> confirmed by family (median/max ms): ${parts.join(', ')}`);
      }
    }
    const s2 = procStat(pid);
    console.log(`agent RSS after ${runs} curtail/restore rounds: ${(s2.rssKiB / 1024).toFixed(1)} MiB`);
  } finally {
    if (agent.exitCode === null && agent.signalCode === null) {
      agent.kill('SIGTERM');
      await new Promise((r) => agent.once('exit', r));
    }
    await watch.close();
    await broker.close();
    await simRack.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
