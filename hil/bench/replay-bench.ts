/**
 * Benchmark (prints figures; asserts nothing): replay of a store-and-forward
 * backlog and its effect on the curtailment path.
 *  - a 24-hour backlog (17 280 telemetry messages at 5 s, of this rack's
 *    real telemetry size) is put in the agent's spool before it starts;
 *  - the agent connects (embedded broker in the simulators' process) and
 *    replays it at `--rate` per second while a soft GPIO trip is pulsed every
 *    `--every-ms`: signal -> last device acknowledged, per trial, from the
 *    engine's activation records;
 *  - once the backlog is gone, the same trials again: the baseline.
 * Prints replay rate and duration, disk bytes per spooled message, and the
 * curtail figures with and without the replay.
 *
 *   node dist/hil/bench/replay-bench.js [--devices 16] [--messages 17280] [--rate 200] [--trials 20] [--every-ms 1500]
 */
import { setMaxListeners } from 'node:events';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { Agent } from '../../agent/agent.js';
import { validateConfig } from '../../agent/config.js';
import { hrNow } from '../../agent/engine/clock.js';
import type { ActivationRecord } from '../../agent/engine/evidence.js';
import { telemetryMessage } from '../../agent/messages.js';
import { Spool, spoolConfigSchema } from '../../agent/spool.js';
import { softGpio } from '../../drivers/gpio/soft.js';
import { sleep } from '../../drivers/lib/deadline.js';
import { rackTopics } from '../../protocol/topics.js';
import { startSimHost } from './sim-host.js';
import { fmtSummary, summarize } from './stats.js';
import { tempDir } from '../testing/temp-dir.js';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '16' },
    messages: { type: 'string', default: '17280' },
    rate: { type: 'string', default: '200' },
    trials: { type: 'string', default: '20' },
    'every-ms': { type: 'string', default: '1500' },
  },
});
const n = Number(values.devices);
const messages = Number(values.messages);
const rate = Number(values.rate);
const trials = Number(values.trials);
const everyMs = Number(values['every-ms']);
for (const [k, v] of Object.entries({ devices: n, messages, rate, trials, 'every-ms': everyMs })) {
  if (!Number.isInteger(v) || v < 1) {
    console.error(`--${k}: expected a positive integer`);
    process.exit(2);
  }
}

const TRIP = 'bench-trip';
const chip = `rackpilot-replay-${Math.random().toString(36).slice(2, 8)}`;
const line = softGpio.chip(chip).line(3);

async function main(): Promise<void> {
  const host = await startSimHost({ devices: n });
  const dir = tempDir('rackpilot-replay-');
  const site = 'bench';
  const rack = `replay${n}`;
  const res = validateConfig({
    site,
    rack,
    mqtt: { url: host.brokerUrl, protocolVersion: 4, replayPerS: rate },
    poll: { intervalMs: 5000, deadlineMs: 3000, concurrency: 64 },
    actions: { deadlineMs: 5000 },
    log: { level: 'silent' },
    stateDir: dir,
    health: { port: 0 },
    engine: { restore: { stepDevices: 4096, stepIntervalMs: 0 } },
    devices: [...host.devices, { id: TRIP, driver: 'gpio', backend: 'soft', chip, offset: 3, direction: 'in', debounceMs: 0 }],
    signals: [{ id: TRIP, source: TRIP, channel: 'input', above: 0.5, forMs: 0, demand: 'shed', holdOffMs: 0 }],
  });
  if (!res.ok) throw new Error(res.errors.join('\n'));

  // a telemetry message of this rack, as the agent builds it, repeated: the backlog
  const topics = rackTopics(site, rack);
  setMaxListeners(4 * n + 64); // the probe's single poll cycle below runs outside a started poller
  const probe = new Agent(res.config, pino({ level: 'silent' }));
  await Promise.all(probe.devices.map((d) => d.start().catch(() => undefined)));
  await probe.poller.pollOnce();
  const sample = JSON.stringify(telemetryMessage({ site, rack }, probe.devices, probe.poller.latest, 0, 5000));
  await Promise.all(probe.devices.map((d) => d.stop().catch(() => undefined)));
  const spoolDir = join(dir, 'spool');
  const pre = new Spool({ ...spoolConfigSchema.parse({}), dir: spoolDir }, pino({ level: 'silent' }));
  await pre.open();
  // every message a little different (as 24 hours of readings are), so compression is not flattered
  const base = JSON.parse(sample) as { seq: number; devices: Record<string, unknown>[] };
  const vary = (i: number): string => {
    base.seq = i;
    for (const d of base.devices) for (const [k, v] of Object.entries(d)) if (typeof v === 'number' && k !== 'intervalMs') d[k] = Math.round(v * (0.97 + Math.random() * 0.06) * 100) / 100;
    return JSON.stringify(base);
  };
  const t0 = hrNow();
  let refused = 0;
  for (let i = 0; i < messages; i += 256) {
    // in batches: the spool's write queue is bounded (maxQueueBytes)
    const batch: Promise<{ ok: boolean }>[] = [];
    for (let j = i; j < Math.min(messages, i + 256); j++) batch.push(pre.append('telemetry', topics.telemetry, vary(j)));
    refused += (await Promise.all(batch)).filter((r) => !r.ok).length;
  }
  const writeMs = hrNow() - t0;
  if (refused > 0) console.error(`warning: the spool refused ${refused} of ${messages} messages`);
  await pre.close();
  const diskBytes = readdirSync(spoolDir).filter((f) => f.endsWith('.seg')).reduce((s, f) => s + statSync(join(spoolDir, f)).size, 0);

  const acts: ActivationRecord[] = [];
  const agent = new Agent(res.config, pino({ level: 'silent' }), { onActivation: (r) => acts.push(r) });
  const startAt = hrNow();
  await agent.start();

  const trial = async (): Promise<number | null> => {
    const before = acts.length;
    const at = hrNow();
    line.set(1);
    const end = Date.now() + 10_000;
    while (acts.length === before && Date.now() < end) await sleep(5);
    const rec = acts[before];
    line.set(0);
    await agent.engine.restore(null).catch(() => undefined);
    await host.reset();
    if (!rec) return null;
    const acks = rec.devices.map((d) => d.ackAt ?? Number.NaN).filter(Number.isFinite);
    return acks.length ? Math.max(...acks) - at : null;
  };

  while (!agent.bridge.connected) await sleep(20);
  while (agent.rackState !== 'running') await sleep(20);
  const during: number[] = [];
  const replayedAt: number[] = [];
  for (let i = 0; i < trials && agent.spool.pending().total > 0; i++) {
    const x = await trial();
    if (x !== null) during.push(x);
    replayedAt.push(agent.bridge.stats.replayed);
    await sleep(everyMs);
  }
  while (agent.spool.pending().total > 0) await sleep(50);
  const replayMs = hrNow() - startAt;
  const baseline: number[] = [];
  for (let i = 0; i < trials; i++) {
    const x = await trial();
    if (x !== null) baseline.push(x);
    await sleep(everyMs);
  }
  await agent.stop();
  await host.close();

  const kb = (b: number): string => `${(b / 1024).toFixed(1)} KiB`;
  console.log(`replay bench: ${n} simulated devices, backlog ${messages} telemetry messages of ${kb(Buffer.byteLength(sample))} JSON, replay at ${rate}/s, node ${process.version}`);
  console.log(`spool: written in ${(writeMs / 1000).toFixed(1)} s (${Math.round(messages / (writeMs / 1000))}/s), ${(diskBytes / 1024 / 1024).toFixed(1)} MiB on disk, ${Math.round(diskBytes / messages)} bytes per message`);
  console.log(`replay: ${agent.bridge.stats.replayed} messages in ${(replayMs / 1000).toFixed(1)} s from start (${Math.round(agent.bridge.stats.replayed / (replayMs / 1000))}/s incl. start-up)`);
  console.log(`signal -> last device acknowledged, p50 / p99 / max (ms):`);
  console.log(`  during the replay (${during.length} trials)  ${during.length ? fmtSummary(summarize(during)) : '-'}`);
  console.log(`  after it (baseline, ${baseline.length})       ${baseline.length ? fmtSummary(summarize(baseline)) : '-'}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
