/**
 * The last phase of the signal-to-dispatch benchmark (engine-bench.ts): the
 * agent as its own process (`rackpilot run`), polling the simulated rack,
 * with its RSS and CPU sampled from /proc, under the node flags given: none
 * (the default profile) or the low-memory profile (agent/runtime.ts).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TelemetryMessage } from '../../protocol/messages.js';
import { rackTopics } from '../../protocol/topics.js';
import { MqttWatch } from '../testing/mqtt-watch.js';
import type { SimHost } from './sim-host.js';
import { hrNow } from './stats.js';
import { agentCli } from './agent-cli.js';

export interface RssPhaseOptions {
  devices: number;
  /** The agent's telemetry poll interval. */
  pollMs: number;
  /** Devices read at once by a poll cycle (default: the config's default, as an operator gets it). */
  pollConcurrency?: number;
  /** How long to sample once every device reads online. */
  rssSeconds: number;
  /** Node flags for the agent process (default none). */
  flags?: readonly string[];
  progress?: (line: string) => void;
}

export interface RssFigures {
  /** Which build of the agent ran (agent-cli.ts). */
  build: 'bundled' | 'unbundled';
  seconds: number;
  peakMiB: number;
  steadyMiB: number;
  cpuPercent: number;
}

const CLK_TCK = 100; // Linux USER_HZ

function procStat(pid: number): { cpuMs: number; rssKiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]); // utime + stime
  const rss = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpuMs: (ticks * 1000) / CLK_TCK, rssKiB: rss ? Number(rss[1]) : 0 };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function rssPhase(sim: Pick<SimHost, 'devices' | 'brokerUrl'>, o: RssPhaseOptions): Promise<RssFigures> {
  const site = 'bench';
  const rack = `rss${o.devices}`;
  const dir = mkdtempSync(join(tmpdir(), 'rackpilot-engine-bench-'));
  const cfg = join(dir, 'agent.yaml');
  writeFileSync(
    cfg,
    JSON.stringify({
      site,
      rack,
      mqtt: { url: sim.brokerUrl, protocolVersion: 4 },
      poll: { intervalMs: o.pollMs, deadlineMs: 3000, ...(o.pollConcurrency !== undefined ? { concurrency: o.pollConcurrency } : {}) },
      log: { level: 'warn' },
      stateDir: dir,
      evidence: { dir: join(dir, 'evidence') },
      devices: sim.devices,
    }),
  );
  const t = rackTopics(site, rack);
  const watch = await MqttWatch.connect(sim.brokerUrl, t.telemetry);
  const { path: cli, build } = agentCli();
  const child = spawn(process.execPath, [...(o.flags ?? []), cli, 'run', '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  const pid = child.pid ?? 0;
  // the agent's own log (warnings) is kept for when it exits early, not printed over the report
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => {
    stderr = (stderr + b.toString('utf8')).slice(-4000);
  });
  let peakKiB = 0;
  const sampler = setInterval(() => {
    try {
      peakKiB = Math.max(peakKiB, procStat(pid).rssKiB);
    } catch {
      // exited
    }
  }, 250);
  const exited = new Promise<never>((_r, reject) => {
    child.once('exit', (code, sig) => reject(new Error(`the agent process (${cli}) exited early (${sig ?? `code ${String(code)}`}): ${stderr.trim()}`)));
  });
  exited.catch(() => undefined);
  try {
    await Promise.race([watch.waitFor((m) => (m.json as TelemetryMessage | undefined)?.summary.online === o.devices, 120_000, `first telemetry with all ${o.devices} devices online`), exited]);
    o.progress?.(`rss: agent process polling ${o.devices} devices every ${o.pollMs} ms; sampling for ${o.rssSeconds} s`);
    const s0 = procStat(pid);
    const w0 = hrNow();
    const samples: number[] = [];
    const end = w0 + o.rssSeconds * 1000;
    while (hrNow() < end) {
      await sleep(Math.min(1000, Math.max(0, end - hrNow())));
      const s = procStat(pid);
      samples.push(s.rssKiB);
      peakKiB = Math.max(peakKiB, s.rssKiB);
    }
    const s1 = procStat(pid);
    const wall = hrNow() - w0;
    const late = samples.slice(Math.floor(samples.length / 2)).sort((a, b) => a - b);
    const steady = late[Math.floor(late.length / 2)] ?? s1.rssKiB;
    return { build, seconds: Math.round(wall / 1000), peakMiB: peakKiB / 1024, steadyMiB: steady / 1024, cpuPercent: ((s1.cpuMs - s0.cpuMs) / wall) * 100 };
  } finally {
    clearInterval(sampler);
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await gone;
    }
    await watch.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
