/**
 * Signal-to-dispatch latency benchmark (prints figures; a missed target is
 * printed, not an exit code):
 *
 *   rackpilot bench curtail [--devices 256] [--trials 100] [--json] [--no-rss] [--rss-seconds 60]
 *                           [--warmup 3] [--poll-ms 5000] [--families luxos,antminer,...] [--antminer-ack-ms 0]
 *                           [--state-dir DIR] [--no-keep-warm] [--no-drivers-only] [--gap-ms 0] [--poll-concurrency N]
 *
 * A rack of N simulated miners (families round-robin, acknowledging at once)
 * runs in a child process (sim-host.ts); the agent runs here and is what is
 * measured. Each trial sets a soft GPIO input that a signal condition
 * watches, i.e. the code path of a real GPIO edge, and takes on one
 * high-resolution clock: signal -> first command issued to the OS (the
 * agent's own decision time), -> last command issued, -> last device
 * acknowledged. "Issued" is seen by instrumenting this process's sockets
 * (wire-probe.ts). Between trials: restore (untimed) and reset. The engine's
 * own share comes from its activation records: when it called the first and
 * the last device's driver.
 *
 * Two baselines run in the same trials, each followed by a restore: the
 * drivers alone (the agent's own driver instances, their plain curtail()
 * called in a loop with no engine and no armed sends) and the floor. The
 * order of the three rotates from trial to trial, so none of them always
 * follows the same work.
 *
 * The floor (floor.ts) replays the very bytes the agent sent, raw, to the
 * same simulators, its sends timed by the same wire probe; the ratios agent
 * / floor say what the agent's software adds. The simulators run at nice 19:
 * on a rack the devices do not share the controller's CPU. The agent and the
 * floor (this process, every thread of it) run at the service unit's nice
 * -10 when allowed (root), as the installed agent does. A last phase (rss-phase.ts) runs
 * the agent as its own process polling the rack and reports its RSS and CPU.
 * The agent under test is driven through agent-under-test.ts.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { cpus, getPriority, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { findDriver } from '../../drivers/registry.js';
import { pollConfigSchema } from '../../agent/config.js';
import { resolveFamilies, type DeviceBlock } from '../sim/catalog.js';
import { CurrentAgent, type AgentUnderTest } from './agent-under-test.js';
import { Floor, planFromCapture } from './floor.js';
import { fdLimitProblem, portRangeProblem } from './limits.js';
import { LOW_MEMORY_NODE_FLAGS } from '../../agent/runtime.js';
import { rssPhase, type RssFigures } from './rss-phase.js';
import { startSimHost } from './sim-host.js';
import { fmtMs, fmtSummary, ratio, summarize, table, type Summary } from './stats.js';
import { WireProbe } from './wire-probe.js';
import { closeWaiting, waitingCount } from '../../drivers/lib/socket-reaper.js';

export interface EngineBenchOptions {
  devices: number;
  trials: number;
  warmup: number;
  /** The agent's telemetry poll interval during the trials and the RSS phase. */
  pollMs: number;
  /** Devices a poll cycle reads at once, in the trials and the RSS phase (default: `poll.concurrency`'s default). */
  pollConcurrency?: number;
  /** 0: no RSS/CPU phase. */
  rssSeconds: number;
  families?: string[];
  antminerAckMs: number;
  /** Where the agent keeps its state and evidence (default: a temp folder, removed after). */
  stateDir?: string;
  /** false: `keepWarm: false` on every device block that has the key (default true: the drivers' default). */
  keepWarm?: boolean;
  /** false: no drivers-only baseline (default true). */
  driversOnly?: boolean;
  /**
   * Quiet time before each timed agent and drivers-only trial (default 0), as
   * between real curtailments: idle connections time out meanwhile (the
   * simulated web servers drop them after 5 s) unless kept warm.
   */
  gapMs?: number;
  /** Progress lines on stderr. */
  progress?: (line: string) => void;
}

export const TARGETS = { decisionP99Ms: 0.5, ratioMax: 1.3, rssMaxMB: 80 } as const;

export interface EngineBenchReport {
  devices: number;
  trials: number;
  families: Record<string, number>;
  node: string;
  /** The flags node ran this bench (the agent and the floor) under: agent/runtime.ts's low-memory profile or none. */
  nodeFlags: string[];
  cpus: number;
  /** The nice value the agent and the floor ran at (the unit's -10 when allowed). */
  agentNice: number;
  pollMs: number;
  pollConcurrency: number;
  agent: {
    decision: Summary;
    /** From the signal to the engine's call of the first / last device's driver (activation records' dispatchAt). */
    engineFirstCall: Summary;
    engineLastCall: Summary;
    lastIssued: Summary;
    lastAck: Summary;
    /** Trials where some device's command or acknowledgement was missing. */
    incompleteTrials: number;
    /** Family of the device that acknowledged last, per trial. */
    lastAckBy: Record<string, number>;
  };
  floor: {
    firstSent: Summary;
    lastSent: Summary;
    lastAnswer: Summary;
    incompleteTrials: number;
    /** Device-trials whose answer's outcome differed from the agent's (e.g. a refused replay). */
    mismatched: number;
    lastAnswerBy: Record<string, number>;
    /** How the capture replays, e.g. `fresh/eof 114, warm/http 85, h2 29`. */
    replay: string;
    problems: string[];
  };
  /** The drivers-only baseline, from the start of its loop; absent when not run. */
  drivers?: {
    firstIssued: Summary;
    lastIssued: Summary;
    lastAck: Summary;
    /** Trials where some device's command or acknowledgement was missing. */
    incompleteTrials: number;
    lastAckBy: Record<string, number>;
  };
  /** Whether the HTTP drivers kept their connections warm. */
  keepWarm: boolean;
  /** Quiet time before each timed trial (ms). */
  gapMs: number;
  ratios: { lastIssued: { p50: number; p99: number }; lastAck: { p50: number; p99: number } };
  /**
   * Per family, over every device and trial: from the signal to its command issued / acknowledged; the floor's the
   * same; the drivers-only baseline's from its loop's start (NaN when not run).
   */
  perFamily: Record<string, { issued: Summary; ack: Summary; driversIssued: Summary; driversAck: Summary; floorSent: Summary; floorAnswer: Summary }>;
  rss?: RssFigures;
  /** The same under the low-memory node flags (agent/runtime.ts). */
  rssLow?: RssFigures;
  targets: { name: string; value: number; limit: number; met: boolean }[];
}

/** Every `host:port` a device block names (port, webPort, apiPort, ...) -> its device id. */
function destinations(devices: readonly { id: string; host: string }[]): { deviceOf: Map<string, string>; destsOf: Map<string, string[]> } {
  const deviceOf = new Map<string, string>();
  const destsOf = new Map<string, string[]>();
  for (const d of devices) {
    const dests: string[] = [];
    for (const [k, v] of Object.entries(d)) {
      if ((k === 'port' || k.endsWith('Port')) && typeof v === 'number') {
        const dest = `${d.host}:${String(v)}`;
        dests.push(dest);
        deviceOf.set(dest, d.id);
      }
    }
    destsOf.set(d.id, dests);
  }
  return { deviceOf, destsOf };
}

function tally(m: Record<string, number>, k: string | undefined): void {
  if (k !== undefined) m[k] = (m[k] ?? 0) + 1;
}

/** The device with the largest time, and that time. */
function latest(times: ReadonlyMap<string, number>): { id: string | undefined; at: number } {
  let id: string | undefined;
  let at = -Infinity;
  for (const [k, v] of times) {
    if (v > at) {
      at = v;
      id = k;
    }
  }
  return { id, at };
}

/** The device block with `keepWarm: false` where its driver's schema takes that key. */
function withoutKeepWarm(b: DeviceBlock): DeviceBlock {
  const off = { ...b, keepWarm: false };
  return findDriver(b.driver)?.configSchema.safeParse(off).success ? off : b;
}

/** Each device's first command issued (the earliest first touch of any of its destinations). */
function issuedAt(probe: WireProbe, destsOf: ReadonlyMap<string, string[]>): Map<string, number> {
  const issued = new Map<string, number>();
  for (const [id, dests] of destsOf) {
    let first = Infinity;
    for (const d of dests) first = Math.min(first, probe.firstAt.get(d) ?? Infinity);
    if (first !== Infinity) issued.set(id, first);
  }
  return issued;
}

function earliest(times: ReadonlyMap<string, number>): number {
  let at = Infinity;
  for (const v of times.values()) at = Math.min(at, v);
  return at;
}

/** The service unit's Nice= (install.sh): the agent's CPU priority on a controller. */
const UNIT_NICE = -10;

/**
 * Sets the nice value of every thread of a process (pid 0: this one, where
 * the agent and the floor run); returns the main thread's value after, and
 * says so when the change was not allowed (raising a priority needs root).
 */
function renice(pid: number, nice: number, what: string, say: (line: string) => void): number {
  // every thread, as the unit's Nice= does (set before exec, so every thread inherits it): setpriority() on a
  // pid moves that one thread only, and V8's GC and compiler threads (started before this) would stay at 0
  const self = pid === 0 ? process.pid : pid;
  let tids: number[];
  try {
    tids = readdirSync(`/proc/${self}/task`).map(Number);
  } catch {
    tids = [self];
  }
  for (const tid of tids) {
    try {
      setPriority(tid, nice);
    } catch (err) {
      say(`could not put ${what} at nice ${nice} (${err instanceof Error ? err.message : String(err)}): it stays at nice ${getPriority(self)}`);
      break;
    }
  }
  return getPriority(self);
}

/** Runs the benchmark and returns its figures (nothing printed but progress). */
export async function engineBench(o: EngineBenchOptions): Promise<EngineBenchReport> {
  const say = o.progress ?? ((): void => undefined);
  const sim = await startSimHost({ devices: o.devices, ...(o.families ? { families: o.families } : {}), antminerAckMs: o.antminerAckMs });
  // On a rack the miners' firmware runs on the miners; here the simulators share this machine's cores with the
  // agent. At the lowest priority they take the CPU only when the agent (and the floor, in this same process)
  // leaves it, as the devices would: otherwise a simulator busy with the previous trial's reads preempts the
  // agent in the middle of its hot path (milliseconds on a 2-core machine).
  renice(sim.pid, 19, 'the simulators (they then compete with the agent for the CPU)', say);
  // the agent and the floor at the service's priority, as installed
  const agentNice = renice(0, UNIT_NICE, 'the agent and the floor', say);
  const probe = new WireProbe();
  // an operator's agent reads poll.concurrency devices at once unless configured otherwise
  const pollConcurrency = o.pollConcurrency ?? pollConfigSchema.parse({}).concurrency;
  const stateDir = mkdtempSync(join(o.stateDir ?? tmpdir(), 'rackpilot-engine-bench-'));
  let agent: AgentUnderTest | undefined;
  let floor: Floor | undefined;
  try {
    const { deviceOf, destsOf } = destinations(sim.devices);
    const familyOf = (id: string | undefined): string | undefined => (id === undefined ? undefined : sim.familyOf[id]);
    const families: Record<string, number> = {};
    for (const d of sim.devices) tally(families, sim.familyOf[d.id]);
    say(`sims: ${o.devices} devices (${Object.entries(families).map(([f, n]) => `${f} x${n}`).join(', ')}) in process ${sim.pid}`);

    const keepWarm = o.keepWarm ?? true;
    const devices = keepWarm ? sim.devices : sim.devices.map(withoutKeepWarm);
    agent = new CurrentAgent({ devices, brokerUrl: sim.brokerUrl, pollMs: o.pollMs, pollConcurrency, stateDir, simReset: () => sim.reset() });
    await agent.start();
    probe.install();
    for (let i = 0; i < o.warmup; i++) {
      agent.trigger();
      await agent.waitAcked();
      await agent.reset();
    }

    // capture (untimed): what each device's connections carry from the signal to its acknowledgement
    await agent.quiesce?.(true);
    probe.arm(true);
    agent.trigger();
    const capturedAcks = (await agent.waitAcked()).acks;
    probe.disarm();
    await agent.quiesce?.(false);
    await agent.reset();
    const { plan, problems } = planFromCapture(probe.traces, capturedAcks, deviceOf);
    floor = new Floor(plan);
    const replay = floor.describe();
    say(`capture: ${capturedAcks.size}/${o.devices} acknowledged; floor replays ${replay}${problems.length ? `; ${problems.length} problem(s)` : ''}`);

    const a = {
      decision: [] as number[],
      engineFirst: [] as number[],
      engineLast: [] as number[],
      lastIssued: [] as number[],
      lastAck: [] as number[],
      incomplete: 0,
      lastAckBy: {} as Record<string, number>,
    };
    const runDrivers = (o.driversOnly ?? true) && agent.curtailDriversOnly !== undefined;
    const dr = { first: [] as number[], last: [] as number[], ack: [] as number[], incomplete: 0, lastAckBy: {} as Record<string, number> };
    const f = { first: [] as number[], last: [] as number[], answer: [] as number[], incomplete: 0, mismatched: 0, lastAnswerBy: {} as Record<string, number> };
    type FamilyTimes = { issued: number[]; ack: number[]; dIssued: number[]; dAck: number[]; sent: number[]; answer: number[] };
    /** Per family: each device's time from the signal (agent) or the start (drivers only, floor), over all trials. */
    const fam = new Map<string, FamilyTimes>();
    const famOf = (id: string): FamilyTimes => {
      const k = sim.familyOf[id] ?? '?';
      let v = fam.get(k);
      if (!v) fam.set(k, (v = { issued: [], ack: [], dIssued: [], dAck: [], sent: [], answer: [] }));
      return v;
    };
    const gap = (): Promise<void> => (o.gapMs ? new Promise((r) => setTimeout(r, o.gapMs)) : Promise.resolve());
    // Before each timed run: the connections the agent finished with and has not closed yet
    // (drivers/lib/socket-reaper.ts puts the closes off until its wave's answers are in) are closed now,
    // and the simulators get a moment to take the FINs; otherwise the closes would land in whatever is
    // timed next, the floor's trial included.
    const closed = async (): Promise<void> => {
      if (waitingCount() === 0) return;
      closeWaiting();
      await new Promise((r) => setTimeout(r, 20));
    };
    // Each trial runs the agent, the floor and the drivers alone one after the other; the order rotates
    // from trial to trial, so that none of them always follows the same work (a busy or an idle rack,
    // warm or cold caches) and the comparison carries no order bias.
    const aut: AgentUnderTest = agent;
    const fl: Floor = floor;
    for (let i = 0; i < o.trials; i++) {
      const runAgent = async (): Promise<void> => {
        await closed();
        await gap();
        probe.arm();
        const t = aut.trigger();
        const { acks, dispatched } = await aut.waitAcked();
        probe.disarm();
        const issued = issuedAt(probe, destsOf);
        if (issued.size > 0) {
          a.decision.push(earliest(issued) - t);
          a.lastIssued.push(latest(issued).at - t);
        }
        if (dispatched.size > 0) {
          a.engineFirst.push(earliest(dispatched) - t);
          a.engineLast.push(latest(dispatched).at - t);
        }
        for (const [id, at] of issued) famOf(id).issued.push(at - t);
        for (const [id, at] of acks) famOf(id).ack.push(at - t);
        const lastAck = latest(acks);
        if (acks.size > 0) a.lastAck.push(lastAck.at - t);
        tally(a.lastAckBy, familyOf(lastAck.id));
        if (issued.size < o.devices || acks.size < o.devices) a.incomplete++;
        await aut.reset();
      };
      const runFloor = async (): Promise<void> => {
        await fl.prepare();
        await closed();
        // the floor's sends are seen by the same probe as the agent's: both pay its cost, both are timed alike
        probe.arm();
        const r = await fl.trial();
        probe.disarm();
        const sent = issuedAt(probe, destsOf);
        if (sent.size > 0) {
          f.first.push(earliest(sent) - r.t0);
          f.last.push(latest(sent).at - r.t0);
        }
        for (const [id, at] of sent) famOf(id).sent.push(at - r.t0);
        for (const [id, at] of r.answered) famOf(id).answer.push(at - r.t0);
        const lastAnswer = latest(r.answered);
        if (r.answered.size > 0) f.answer.push(lastAnswer.at - r.t0);
        tally(f.lastAnswerBy, familyOf(lastAnswer.id));
        if (r.failed.size > 0 || r.answered.size < plan.size) f.incomplete++;
        f.mismatched += r.mismatched.length;
        if (i === 0 && (r.failed.size > 0 || r.mismatched.length > 0)) {
          const why = [...r.failed].slice(0, 3).map(([d, e]) => `${d}: ${e}`);
          say(`floor trial 1: ${r.failed.size} failed, ${r.mismatched.length} answered differently from the agent (${[...why, ...r.mismatched.slice(0, 3)].join('; ')})`);
        }
        await aut.restoreAll();
      };
      const runDriversAlone = async (): Promise<void> => {
        if (runDrivers && aut.curtailDriversOnly) {
          await closed();
          await gap();
          probe.arm();
          const d = await aut.curtailDriversOnly();
          probe.disarm();
          const dIssued = issuedAt(probe, destsOf);
          if (dIssued.size > 0) {
            dr.first.push(earliest(dIssued) - d.t0);
            dr.last.push(latest(dIssued).at - d.t0);
          }
          for (const [id, at] of dIssued) famOf(id).dIssued.push(at - d.t0);
          for (const [id, at] of d.acks) famOf(id).dAck.push(at - d.t0);
          const dLast = latest(d.acks);
          if (d.acks.size > 0) dr.ack.push(dLast.at - d.t0);
          tally(dr.lastAckBy, familyOf(dLast.id));
          if (dIssued.size < o.devices || d.acks.size < o.devices) dr.incomplete++;
          if (i === 0 && d.failed.size > 0) say(`drivers-only trial 1: ${d.failed.size} failed (${[...d.failed].slice(0, 3).map(([k, e]) => `${k}: ${e}`).join('; ')})`);
          await aut.restoreAll();
        }
      };
      const order = [runAgent, runFloor, runDriversAlone];
      for (let k = 0; k < i % order.length; k++) order.push(order.shift() as () => Promise<void>);
      for (const run of order) await run();
      if ((i + 1) % 10 === 0 || i + 1 === o.trials) say(`trial ${i + 1}/${o.trials}`);
    }
    await floor.close();
    floor = undefined;
    probe.uninstall();
    await agent.stop();
    agent = undefined;

    const agentFig = {
      decision: summarize(a.decision),
      engineFirstCall: summarize(a.engineFirst),
      engineLastCall: summarize(a.engineLast),
      lastIssued: summarize(a.lastIssued),
      lastAck: summarize(a.lastAck),
    };
    const floorFig = { firstSent: summarize(f.first), lastSent: summarize(f.last), lastAnswer: summarize(f.answer) };
    const ratios = {
      lastIssued: { p50: ratio(agentFig.lastIssued.p50, floorFig.lastSent.p50), p99: ratio(agentFig.lastIssued.p99, floorFig.lastSent.p99) },
      lastAck: { p50: ratio(agentFig.lastAck.p50, floorFig.lastAnswer.p50), p99: ratio(agentFig.lastAck.p99, floorFig.lastAnswer.p99) },
    };
    // the agent's memory both ways: under node's JIT (no flags), and under the low-memory profile the service runs (agent/runtime.ts)
    const rss = o.rssSeconds > 0 ? await rssPhase(sim, { ...o, pollConcurrency }) : undefined;
    const rssLow = o.rssSeconds > 0 ? await rssPhase(sim, { ...o, pollConcurrency, flags: LOW_MEMORY_NODE_FLAGS }) : undefined;
    const target = (name: string, value: number, limit: number): EngineBenchReport['targets'][number] => ({ name, value, limit, met: value <= limit });
    const targets = [
      target('decision p99 (ms)', agentFig.decision.p99, TARGETS.decisionP99Ms),
      target('last issued / floor, p50', ratios.lastIssued.p50, TARGETS.ratioMax),
      target('last issued / floor, p99', ratios.lastIssued.p99, TARGETS.ratioMax),
      target('last ack / floor, p50', ratios.lastAck.p50, TARGETS.ratioMax),
      target('last ack / floor, p99', ratios.lastAck.p99, TARGETS.ratioMax),
      ...(rss ? [target('agent peak RSS, JIT / no node flags (MB)', (rss.peakMiB * 1024 * 1024) / 1e6, TARGETS.rssMaxMB)] : []),
      ...(rssLow ? [target('agent peak RSS, low-memory profile, the service (MB)', (rssLow.peakMiB * 1024 * 1024) / 1e6, TARGETS.rssMaxMB)] : []),
    ];
    return {
      devices: o.devices,
      trials: o.trials,
      families,
      node: process.version,
      nodeFlags: [...process.execArgv],
      cpus: cpus().length,
      agentNice,
      pollMs: o.pollMs,
      pollConcurrency,
      agent: { ...agentFig, incompleteTrials: a.incomplete, lastAckBy: a.lastAckBy },
      floor: { ...floorFig, incompleteTrials: f.incomplete, mismatched: f.mismatched, lastAnswerBy: f.lastAnswerBy, replay, problems },
      ...(runDrivers
        ? { drivers: { firstIssued: summarize(dr.first), lastIssued: summarize(dr.last), lastAck: summarize(dr.ack), incompleteTrials: dr.incomplete, lastAckBy: dr.lastAckBy } }
        : {}),
      keepWarm,
      gapMs: o.gapMs ?? 0,
      ratios,
      perFamily: Object.fromEntries(
        [...fam].map(([k, v]) => [
          k,
          {
            issued: summarize(v.issued),
            ack: summarize(v.ack),
            driversIssued: summarize(v.dIssued),
            driversAck: summarize(v.dAck),
            floorSent: summarize(v.sent),
            floorAnswer: summarize(v.answer),
          },
        ]),
      ),
      ...(rss ? { rss } : {}),
      ...(rssLow ? { rssLow } : {}),
      targets,
    };
  } finally {
    probe.uninstall();
    await floor?.close().catch(() => undefined);
    await agent?.stop().catch(() => undefined);
    await sim.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

function fmtP(s: Summary): string {
  return `${fmtMs(s.p50)} / ${fmtMs(s.p99)}`;
}

function fmtRatio(x: number): string {
  return Number.isFinite(x) ? x.toFixed(2) : '-';
}

export function formatReport(r: EngineBenchReport): string {
  const out: string[] = [];
  out.push(
    `rackpilot bench curtail: ${r.devices} simulated devices (${Object.entries(r.families).map(([f, n]) => `${f} x${n}`).join(', ')}), ${r.trials} trials, node ${r.node} (${r.nodeFlags.length > 0 ? r.nodeFlags.join(' ') : 'no node flags'}), ${r.cpus} CPUs, agent and floor at nice ${r.agentNice}, simulators at nice 19, poll every ${r.pollMs} ms (${r.pollConcurrency} devices at once)${r.gapMs ? `, ${r.gapMs} ms quiet before each trial` : ''}${r.keepWarm ? '' : ', HTTP keep-warm off'}`,
  );
  out.push('');
  out.push(
    table([
      ['from the signal (GPIO edge) to ...', 'p50 / p99 / max (ms)'],
      ['engine: first driver call', fmtSummary(r.agent.engineFirstCall)],
      ['engine: last driver call', fmtSummary(r.agent.engineLastCall)],
      ['agent: first command issued (decision)', fmtSummary(r.agent.decision)],
      ['agent: last command issued to the OS', fmtSummary(r.agent.lastIssued)],
      ['agent: last device acknowledged', fmtSummary(r.agent.lastAck)],
      ...(r.drivers
        ? [
            ['drivers only (from the loop): first command issued', fmtSummary(r.drivers.firstIssued)],
            ['drivers only: last command issued', fmtSummary(r.drivers.lastIssued)],
            ['drivers only: last device acknowledged', fmtSummary(r.drivers.lastAck)],
          ]
        : []),
      ['floor: first send issued', fmtSummary(r.floor.firstSent)],
      ['floor: last send issued', fmtSummary(r.floor.lastSent)],
      ['floor: last answer received', fmtSummary(r.floor.lastAnswer)],
    ]),
  );
  out.push('');
  out.push(
    table([
      ['agent / floor', 'p50', 'p99'],
      ['last command issued', fmtRatio(r.ratios.lastIssued.p50), fmtRatio(r.ratios.lastIssued.p99)],
      ['last acknowledged', fmtRatio(r.ratios.lastAck.p50), fmtRatio(r.ratios.lastAck.p99)],
    ]),
  );
  const by = (m: Record<string, number>): string =>
    Object.entries(m)
      .sort((x, y) => y[1] - x[1])
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
  out.push('');
  out.push(
    table([
      ['per device, by family (p50 / p99 ms)', 'agent issued', 'agent acked', 'drivers issued', 'drivers acked', 'floor sent', 'floor answered'],
      ...Object.entries(r.perFamily).map(([k, v]) => [k, fmtP(v.issued), fmtP(v.ack), fmtP(v.driversIssued), fmtP(v.driversAck), fmtP(v.floorSent), fmtP(v.floorAnswer)]),
    ]),
  );
  out.push('');
  out.push(
    `last to acknowledge, per trial: agent ${by(r.agent.lastAckBy) || '-'}${r.drivers ? `; drivers only ${by(r.drivers.lastAckBy) || '-'}` : ''}; floor ${by(r.floor.lastAnswerBy) || '-'}`,
  );
  out.push(`floor replay: ${r.floor.replay}`);
  if (r.agent.incompleteTrials > 0) out.push(`agent: ${r.agent.incompleteTrials} trial(s) with a device not commanded or not acknowledged`);
  if (r.drivers && r.drivers.incompleteTrials > 0) out.push(`drivers only: ${r.drivers.incompleteTrials} trial(s) with a device not commanded or not acknowledged`);
  if (r.floor.incompleteTrials > 0 || r.floor.mismatched > 0) {
    out.push(`floor: ${r.floor.incompleteTrials} incomplete trial(s), ${r.floor.mismatched} answer(s) not as the agent's`);
  }
  for (const p of r.floor.problems.slice(0, 5)) out.push(`capture: ${p}`);
  if (r.rss) {
    out.push('');
    out.push(
      `agent process (${r.rss.build} build) polling every ${r.pollMs} ms (${r.pollConcurrency} at once), over ${r.rss.seconds} s, no node flags (JIT): RSS peak ${r.rss.peakMiB.toFixed(1)} MiB, steady ${r.rss.steadyMiB.toFixed(1)} MiB; CPU ${r.rss.cpuPercent.toFixed(1)} %`,
    );
    if (r.rssLow) {
      out.push(
        `  with the low-memory node flags the service runs (agent/runtime.ts): RSS peak ${r.rssLow.peakMiB.toFixed(1)} MiB, steady ${r.rssLow.steadyMiB.toFixed(1)} MiB; CPU ${r.rssLow.cpuPercent.toFixed(1)} %`,
      );
    }
  }
  out.push('');
  out.push(
    table([
      ['target', 'value', 'limit', ''],
      ...r.targets.map((t) => [t.name, t.name.includes('ms') ? fmtMs(t.value) : t.value.toFixed(2), String(t.limit), t.met ? 'met' : 'MISSED']),
    ]),
  );
  return out.join('\n');
}

function usage(): string {
  return 'usage: rackpilot bench curtail [--devices N] [--trials T] [--json] [--no-rss] [--rss-seconds S] [--warmup W] [--poll-ms MS] [--families a,b] [--antminer-ack-ms MS] [--state-dir DIR] [--no-keep-warm] [--no-drivers-only] [--gap-ms MS] [--poll-concurrency N]';
}

/** `rackpilot bench curtail ...`: prints the report; 0 unless the benchmark itself broke (2: bad arguments or limits). */
export async function runEngineBench(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        devices: { type: 'string', default: '256' },
        trials: { type: 'string', default: '100' },
        warmup: { type: 'string', default: '3' },
        'poll-ms': { type: 'string', default: '5000' },
        'rss-seconds': { type: 'string', default: '60' },
        'no-rss': { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        families: { type: 'string' },
        'antminer-ack-ms': { type: 'string', default: '0' },
        'state-dir': { type: 'string' },
        'no-keep-warm': { type: 'boolean', default: false },
        'no-drivers-only': { type: 'boolean', default: false },
        'gap-ms': { type: 'string', default: '0' },
        'poll-concurrency': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n${usage()}`);
    return 2;
  }
  if (values.help) {
    console.log(usage());
    return 0;
  }
  const ints: [string, string, number][] = [
    ['devices', values.devices, 1],
    ['trials', values.trials, 1],
    ['warmup', values.warmup, 0],
    ['poll-ms', values['poll-ms'], 100],
    ['rss-seconds', values['rss-seconds'], 1],
    ['antminer-ack-ms', values['antminer-ack-ms'], 0],
    ['gap-ms', values['gap-ms'], 0],
    ...(values['poll-concurrency'] !== undefined ? [['poll-concurrency', values['poll-concurrency'], 1] as [string, string, number]] : []),
  ];
  const bad = ints.filter(([, v, min]) => !/^\d+$/.test(v) || Number(v) < min).map(([k, , min]) => `--${k}: expected a whole number >= ${min}`);
  let families: string[] | undefined;
  if (values.families !== undefined) {
    const res = resolveFamilies(values.families.split(','));
    if (res.ok) families = res.entries.map((e) => e.family);
    else bad.push(`--families: ${res.error}`);
  }
  if (bad.length > 0) {
    console.error(`${bad.join('\n')}\n${usage()}`);
    return 2;
  }
  const devices = Number(values.devices);
  const limits = [fdLimitProblem(devices), portRangeProblem(devices)].filter((p) => p !== undefined);
  if (limits.length > 0) {
    console.error(limits.join('\n'));
    return 2;
  }
  try {
    const report = await engineBench({
      devices,
      trials: Number(values.trials),
      warmup: Number(values.warmup),
      pollMs: Number(values['poll-ms']),
      rssSeconds: values['no-rss'] ? 0 : Number(values['rss-seconds']),
      antminerAckMs: Number(values['antminer-ack-ms']),
      keepWarm: !values['no-keep-warm'],
      driversOnly: !values['no-drivers-only'],
      gapMs: Number(values['gap-ms']),
      ...(values['poll-concurrency'] !== undefined ? { pollConcurrency: Number(values['poll-concurrency']) } : {}),
      ...(values['state-dir'] !== undefined ? { stateDir: values['state-dir'] } : {}),
      ...(families ? { families } : {}),
      progress: (line) => process.stderr.write(`${line}\n`),
    });
    console.log(values.json ? JSON.stringify(report, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) : formatReport(report));
    return 0;
  } catch (err) {
    console.error(`bench curtail failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return 1;
  }
}
