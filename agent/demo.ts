/**
 * `rackpilot demo`: a rack of simulated miners of mixed firmware families on
 * loopback (families assigned round-robin from hil/sim/catalog.ts), an
 * embedded broker (unless --broker), and the agent on them; prints what to
 * watch and type.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Logger } from 'pino';
import { resolveFamilies, SIM_CATALOG, startMixedRack, type CatalogEntry, type StartedSim } from '../hil/sim/catalog.js';
import { Agent } from './agent.js';
import { validateConfig } from './config.js';
import { startEmbeddedBroker, type EmbeddedBroker } from './embedded-broker.js';
import { startGpuRack, type GpuRack } from '../hil/sim/gpu-rack.js';
import { METER_ID, PDU_ID, startPowerRack, TRIP_ID, type PowerRack } from '../hil/sim/power-rack.js';

export interface DemoOptions {
  broker?: string | undefined;
  /** Number of simulated miners; default: one per family. */
  asics?: number | undefined;
  /** Families to mix, round-robin (driver ids); default: every family in the catalog. */
  families?: readonly string[] | undefined;
  site: string;
  rack: string;
  port: number;
  intervalMs: number;
  /** Miners sleep and wake in a few hundred ms instead of seconds (tests). */
  fast?: boolean | undefined;
  /** Scripted under-frequency dip in the simulated meter, this many ms after start (none when undefined). */
  dipAtMs?: number | undefined;
  /** Scripted opening of the utility trip contact (software GPIO), this many ms after start. */
  tripAtMs?: number | undefined;
  /** Where the agent keeps its curtailment state and evidence log (default: a fresh temporary folder). */
  stateDir?: string | undefined;
  /** The local /healthz and /metrics port (`--health-port`, default 9108); 0 or absent: an ephemeral one. */
  healthPort?: number | undefined;
  /** Hold-off after a signal clears before load comes back (default 10 s, so the demo shows the ramp). */
  holdOffMs?: number | undefined;
}

export interface RunningDemo {
  agent: Agent;
  sims: StartedSim[];
  /** The meter, PDU and GPIO lines of the rack. */
  power: PowerRack;
  /** Two simulated GPU servers (mock NVML: one local, one behind gpu-node), or why there are none. */
  gpus: GpuRack | { skip: string };
  /** The families in the rack, in round-robin order. */
  families: CatalogEntry[];
  broker: EmbeddedBroker | undefined;
  brokerUrl: string;
  stop(): Promise<void>;
}

/** The families a demo rack cycles through; throws a clear error naming unknown ones. */
export function demoFamilies(opts: Pick<DemoOptions, 'families'>): CatalogEntry[] {
  if (opts.families === undefined) return [...SIM_CATALOG];
  const res = resolveFamilies(opts.families);
  if (!res.ok) throw new Error(`--families: ${res.error}`);
  return res.entries;
}

export async function startDemo(opts: DemoOptions, log: Logger): Promise<RunningDemo> {
  const families = demoFamilies(opts);
  const n = opts.asics ?? families.length;
  if (!Number.isInteger(n) || n < 1) throw new Error(`--asics: expected a positive integer, got ${n}`);
  const { sims, devices } = await startMixedRack(n, families, { fast: opts.fast === true });
  let broker: EmbeddedBroker | undefined;
  let power: PowerRack | undefined;
  let gpus: GpuRack | { skip: string } | undefined;
  try {
    power = await startPowerRack({ miners: sims });
    gpus = await startGpuRack();
    const gpuDevices = 'skip' in gpus ? [] : gpus.devices;
    const rackPower = power;
    const miners = devices.map((d, i) => ({ ...d, feed: [rackPower.feedOf(i)] }));
    if (!opts.broker) broker = await startEmbeddedBroker('127.0.0.1', opts.port);
    const brokerUrl = opts.broker ?? (broker as EmbeddedBroker).url;
    const parsed = validateConfig({
      site: opts.site,
      rack: opts.rack,
      // the embedded aedes broker speaks MQTT 3.1.1 only: skip the MQTT 5 attempt
      mqtt: { url: brokerUrl, protocolVersion: broker ? 4 : 'auto', reconnect: { minMs: 250, maxMs: 5000 } },
      poll: { intervalMs: opts.intervalMs, deadlineMs: 2000 },
      actions: { deadlineMs: 20_000 },
      devices: [...miners, ...gpuDevices, ...power.devices],
      signals: power.signals.map((sig) => ({ ...sig, holdOffMs: opts.holdOffMs ?? 10_000 })),
      stateDir: opts.stateDir ?? mkdtempSync(join(tmpdir(), 'rackpilot-demo-')),
      health: { port: opts.healthPort ?? 0 },
      // miners that ignore a curtail get their PDU outlet cut; the ramp brings back three devices a second
      engine: { hardCut: miners.map((m) => m.id), restore: { stepDevices: 3, stepIntervalMs: 1000 } },
    });
    if (!parsed.ok) throw new Error(`demo config invalid:\n  ${parsed.errors.join('\n  ')}`);
    const agent = new Agent(parsed.config, log);
    await agent.start();
    const rackGpus = gpus;
    if (opts.dipAtMs !== undefined) power.scriptDip(opts.dipAtMs, 2000);
    if (opts.tripAtMs !== undefined) power.scriptTrip(opts.tripAtMs, 3000);
    return {
      agent,
      sims,
      power,
      gpus,
      families,
      broker,
      brokerUrl,
      stop: async () => {
        await agent.stop();
        await broker?.close();
        await rackPower.close();
        if (rackGpus && !('skip' in rackGpus)) await rackGpus.close();
        await Promise.all(sims.map((s) => s.close()));
      },
    };
  } catch (err) {
    await broker?.close();
    await power?.close();
    if (gpus && !('skip' in gpus)) await gpus.close();
    await Promise.all(sims.map((s) => s.close()));
    throw err;
  }
}

/** "LuxOS x2, Antminer (stock) x1, ...": what the rack is made of. */
export function describeRack(d: Pick<RunningDemo, 'sims' | 'families'>): string {
  return d.families
    .map((f) => ({ f, k: d.sims.filter((s) => s.family === f.family).length }))
    .filter(({ k }) => k > 0)
    .map(({ f, k }) => `${f.label} (${f.family}) x${k}`)
    .join(', ');
}

export function demoBanner(d: RunningDemo, opts: DemoOptions): string {
  const t = d.agent.topics;
  const u = new URL(d.brokerUrl);
  const hp = `-h ${u.hostname} -p ${u.port || '1883'}`;
  const present = d.families.filter((f) => d.sims.some((s) => s.family === f.family)).length;
  return [
    '',
    `rackpilot demo: ${d.sims.length} simulated miner(s) of ${present} firmware famil${present === 1 ? 'y' : 'ies'}, site "${opts.site}", rack "${opts.rack}"`,
    `  ${describeRack(d)}`,
    `broker: ${d.brokerUrl}${d.broker ? ' (embedded aedes, MQTT 3.1.1)' : ''}`,
    '',
    'Watch everything the agent publishes:',
    `  mosquitto_sub ${hp} -v -t '${t.root}/#'`,
    '',
    `Curtail the whole rack (every miner goes to its sleep level${opts.fast ? '' : ' in a few seconds'}, each confirmed by read-back):`,
    `  mosquitto_pub ${hp} -t '${t.cmd}' -m '{"id":"demo-curtail-1","command":"curtail"}'`,
    '',
    'Restore it (load comes back as a ramp, three devices a second):',
    `  mosquitto_pub ${hp} -t '${t.cmd}' -m '{"id":"demo-restore-1","command":"restore"}'`,
    '',
    'Or hold the rack under a power budget (least efficient miners are shed first; GPUs are capped only if that is not enough):',
    `  mosquitto_pub ${hp} -t '${t.cmd}' -m '{"id":"demo-budget-1","command":"set-budget","params":{"maxW":9000}}'`,
    `  mosquitto_pub ${hp} -t '${t.cmd}' -m '{"id":"demo-budget-2","command":"clear-budget"}'`,
    '',
    'skip' in d.gpus
      ? `GPUs: none (${d.gpus.skip})`
      : 'GPUs: two simulated GPU servers (2 GPUs each, mock NVML): gpu-server-01 read locally, gpu-server-02 through rackpilot gpu-node; a curtail caps them to 50 % and a restore returns their exact previous limits.',
    `Power side: a Modbus meter (${METER_ID}), an SNMP PDU (${PDU_ID}) feeding every miner, a utility trip contact (GPIO ${TRIP_ID}), the controller's health.`,
    ...(opts.dipAtMs !== undefined ? [`  scripted: grid frequency dips to 59.80 Hz ${opts.dipAtMs / 1000} s after start for 2 s -> signal "underfrequency" on ${t.events}`] : []),
    ...(opts.tripAtMs !== undefined ? [`  scripted: the trip contact opens ${opts.tripAtMs / 1000} s after start for 3 s -> signal "utility-trip" on ${t.events}`] : []),
    `  each signal sheds the whole rack at once (miners sleep, GPUs are capped); load comes back ${(opts.holdOffMs ?? 10_000) / 1000} s after it clears.`,
    '',
    ...healthLines(d),
    `Evidence log (every activation's timings, rack power at 100 ms): ${d.agent.evidenceDir}`,
    `  node dist/agent/cli.js events export --dir ${d.agent.evidenceDir} --table devices`,
    '',
    `Results arrive on ${t.cmdResult}; the protocol is described in protocol/README.md.`,
    'Press Ctrl-C to stop.',
    '',
  ].join('\n');
}

function healthLines(d: RunningDemo): string[] {
  const a = d.agent.health.address();
  if (!a) return ['Health endpoint: not listening (see the log)', ''];
  const base = `http://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
  return ['Health and Prometheus metrics (local only):', `  curl -s ${base}/healthz`, `  curl -s ${base}/metrics | grep ^rackpilot_`, ''];
}

const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

function intOpt(v: string | undefined, name: string, min: number, max: number): number | string | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) return `--${name}: expected an integer from ${min} to ${max}, got "${v}"`;
  return n;
}

/**
 * The `rackpilot demo` command line: `[--broker URL] [--asics N] [--families a,b]
 * [--site S] [--rack R] [--port P] [--interval MS] [--fast] [--dip-at S] [--trip-at S] [--hold-off S] [--state-dir DIR]
 * [--health-port P] [--log-level L]`.
 * Every error is reported at once.
 */
export function parseDemoArgs(args: string[]): { ok: true; opts: DemoOptions; logLevel: string } | { ok: false; error: string } {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        broker: { type: 'string' },
        asics: { type: 'string' },
        families: { type: 'string' },
        site: { type: 'string' },
        rack: { type: 'string' },
        port: { type: 'string' },
        interval: { type: 'string' },
        fast: { type: 'boolean' },
        'dip-at': { type: 'string' },
        'trip-at': { type: 'string' },
        'hold-off': { type: 'string' },
        'state-dir': { type: 'string' },
        'health-port': { type: 'string' },
        'log-level': { type: 'string' },
      },
    }));
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
  const errors: string[] = [];
  const site = values.site ?? 'demo-site';
  const rack = values.rack ?? 'rack-01';
  if (!ID_RE.test(site)) errors.push(`--site: "${site}" must be 1-64 of letters, digits, "_" and "-"`);
  if (!ID_RE.test(rack)) errors.push(`--rack: "${rack}" must be 1-64 of letters, digits, "_" and "-"`);
  if (values.broker !== undefined && !/^(mqtts?|wss?):\/\/\S+$/.test(values.broker)) {
    errors.push(`--broker: expected a URL such as mqtt://127.0.0.1:1883, got "${values.broker}"`);
  }
  let families: string[] | undefined;
  if (values.families !== undefined) {
    const res = resolveFamilies(values.families.split(','));
    if (res.ok) families = res.entries.map((e) => e.family);
    else errors.push(`--families: ${res.error}`);
  }
  const num = (v: string | undefined, name: string, def: number | undefined, min: number, max: number): number | undefined => {
    const r = intOpt(v, name, min, max);
    if (typeof r === 'string') errors.push(r);
    return typeof r === 'number' ? r : def;
  };
  const asics = num(values.asics, 'asics', undefined, 1, 512);
  const port = num(values.port, 'port', 1883, 1, 65535) as number;
  const intervalMs = num(values.interval, 'interval', 2000, 100, 60_000) as number;
  // scripted power events (seconds after start; 0 turns one off)
  const dipAt = num(values['dip-at'], 'dip-at', 20, 0, 86_400) as number;
  const tripAt = num(values['trip-at'], 'trip-at', 40, 0, 86_400) as number;
  const holdOff = num(values['hold-off'], 'hold-off', 10, 0, 86_400) as number;
  const healthPort = num(values['health-port'], 'health-port', 9108, 0, 65535) as number;
  if (errors.length > 0) return { ok: false, error: errors.join('\n') };
  return {
    ok: true,
    opts: {
      broker: values.broker,
      asics,
      families,
      site,
      rack,
      port,
      intervalMs,
      fast: values.fast === true,
      dipAtMs: dipAt > 0 ? dipAt * 1000 : undefined,
      tripAtMs: tripAt > 0 ? tripAt * 1000 : undefined,
      holdOffMs: holdOff * 1000,
      stateDir: values['state-dir'],
      healthPort,
    },
    logLevel: values['log-level'] ?? 'warn',
  };
}
