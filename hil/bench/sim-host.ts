/**
 * The simulated rack of the signal-to-dispatch benchmark, in a process of
 * its own so that the simulators' work never runs on the measured agent's
 * event loop. Run as a child (`startSimHost()` spawns it):
 *  - starts N simulators, ASIC families round-robin from SIM_CATALOG with
 *    `fast` timing and the power model's sleep/wake delays at 0 (a device
 *    acknowledges and reaches its new state at once), plus an embedded MQTT
 *    broker for the agent;
 *  - prints `{"ready":{devices,brokerUrl}}` as one JSON line on stdout;
 *  - obeys line commands on stdin, answering one JSON line each:
 *    `reset` (every simulator back to mining, without going through the
 *    agent), `ping`;
 *  - closes everything and exits when stdin closes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../agent/embedded-broker.js';
import { resolveFamilies, SIM_CATALOG, startMixedRack, type CatalogEntry, type DeviceBlock, type StartedSim } from '../sim/catalog.js';

export interface SimHostOptions {
  devices: number;
  /** Families, round-robin (default: every family of SIM_CATALOG). */
  families?: readonly string[];
  /**
   * How long the Antminer's set_miner_conf.cgi takes to answer. The catalog's
   * `fast` timing keeps 30 ms of the real firmware's ~20 s; the benchmark
   * wants every device to acknowledge at once (default 0).
   */
  antminerAckMs?: number;
}

export interface SimHostReady {
  devices: DeviceBlock[];
  /** Family of each device, by id. */
  familyOf: Record<string, string>;
  brokerUrl: string;
}

export interface SimHost extends SimHostReady {
  readonly pid: number;
  /** Every simulator back to mining (the simulators' power model; the agent's restore resets the rest). */
  reset(): Promise<void>;
  close(): Promise<void>;
}

type Reply = { ready: SimHostReady } | { ok: string } | { error: string };

/** Spawns the sim host and waits until its rack is listening. */
export async function startSimHost(o: SimHostOptions): Promise<SimHost> {
  const args = [fileURLToPath(import.meta.url), '--devices', String(o.devices), '--antminer-ack-ms', String(o.antminerAckMs ?? 0)];
  if (o.families) args.push('--families', o.families.join(','));
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const waiting: ((r: Reply) => void)[] = [];
  let exited: string | undefined;
  const fail = (why: string): void => {
    exited = why;
    for (const w of waiting.splice(0)) w({ error: why });
  };
  lines.on('line', (line) => {
    let r: Reply;
    try {
      r = JSON.parse(line) as Reply;
    } catch {
      process.stderr.write(`sim-host: ${line}\n`);
      return;
    }
    waiting.shift()?.(r);
  });
  child.once('exit', (code, sig) => fail(`sim host exited (${sig ?? `code ${String(code)}`})`));
  child.once('error', (err) => fail(`sim host failed: ${err.message}`));
  const next = (): Promise<Reply> => (exited !== undefined ? Promise.resolve({ error: exited }) : new Promise((r) => waiting.push(r)));
  const command = async (cmd: string): Promise<void> => {
    const p = next();
    child.stdin?.write(`${cmd}\n`);
    const r = await p;
    if (!('ok' in r)) throw new Error(`sim host: ${cmd}: ${'error' in r ? r.error : 'unexpected answer'}`);
  };
  const first = await next();
  if (!('ready' in first)) {
    await stopChild(child);
    throw new Error(`sim host did not start: ${'error' in first ? first.error : 'unexpected answer'}`);
  }
  return {
    ...first.ready,
    pid: child.pid ?? 0,
    reset: () => command('reset'),
    close: () => stopChild(child),
  };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.stdin?.end();
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await gone;
  clearTimeout(t);
}

// ---- the child ------------------------------------------------------------

function say(r: Reply): void {
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

async function hostMain(): Promise<void> {
  const { values } = parseArgs({
    options: { devices: { type: 'string', default: '256' }, families: { type: 'string' }, 'antminer-ack-ms': { type: 'string', default: '0' } },
  });
  const n = Number(values.devices);
  const ackMs = Number(values['antminer-ack-ms']);
  let entries: readonly CatalogEntry[] = SIM_CATALOG;
  if (values.families !== undefined) {
    const res = resolveFamilies(values.families.split(','));
    if (!res.ok) throw new Error(`--families: ${res.error}`);
    entries = res.entries;
  }
  let broker: EmbeddedBroker | undefined;
  let sims: StartedSim[] = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(sims.map((s) => s.close().catch(() => undefined)));
    await broker?.close().catch(() => undefined);
  };
  try {
    broker = await startEmbeddedBroker('127.0.0.1', 0);
    const rack = await startMixedRack(n, entries, { fast: true, timing: { sleepDelayMs: 0, wakeRampMs: 0 }, antminerCgiDelayMs: ackMs });
    sims = rack.sims;
    const familyOf = Object.fromEntries(rack.devices.map((d, i) => [d.id, sims[i]?.family ?? '?']));
    say({ ready: { devices: rack.devices, familyOf, brokerUrl: broker.url } });
  } catch (err) {
    await closeAll();
    throw err;
  }
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const cmd = line.trim();
    if (cmd === 'reset') {
      for (const s of sims) s.sim.power.set('mining');
      say({ ok: 'reset' });
    } else if (cmd === 'ping') {
      say({ ok: 'ping' });
    } else if (cmd !== '') {
      say({ error: `unknown command "${cmd}" (reset, ping)` });
    }
  }
  await closeAll();
}

function isMain(): boolean {
  const arg = process.argv[1];
  if (arg === undefined) return false;
  try {
    return realpathSync(arg) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  hostMain().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`sim-host: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
