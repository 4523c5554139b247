/**
 * Spool benchmark (prints figures, asserts nothing): a 24-hour telemetry
 * backlog (17 280 messages, one per 5 s) of a 16-device and of a 256-device
 * rack, built with agent/messages.ts telemetryMessage() from realistic
 * readings (values change every message), written to the spool and replayed.
 * Prints message size, write rate, disk bytes per message, open (scan) time,
 * replay rate (take 100 + ack), and the event loop's delay meanwhile, for
 * each fsync policy: every batch (0) and at most every 1000 ms. Also the
 * same with every append awaited one after another (one fsync per message).
 *   npx tsc -p tsconfig.json --outDir .tmp/x && node .tmp/x/hil/bench/spool-bench.js [--quick]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pino } from 'pino';
import type { DeviceDriver, Reading } from '../../drivers/contract.js';
import { telemetryMessage } from '../../agent/messages.js';
import { Spool, spoolConfigSchema } from '../../agent/spool.js';

const QUICK = process.argv.includes('--quick');
const BACKLOG = QUICK ? 2000 : 17_280;
const SEQUENTIAL = QUICK ? 200 : 1000;
const log = pino({ level: 'warn' });

let rnd = 12345;
function rand(): number {
  rnd = (rnd * 1103515245 + 12345) % 2147483648;
  return rnd / 2147483648;
}
const r1 = (x: number): number => Math.round(x * 10) / 10;

/** A rack: mostly ASICs, some GPU nodes, a meter and two PDUs. */
function rack(n: number): DeviceDriver[] {
  return Array.from({ length: n }, (_, i) => {
    const kind = i === 0 ? 'meter' : i <= 2 ? 'pdu' : i % 8 === 0 ? 'gpu' : 'asic';
    const driverId = kind === 'asic' ? ['antminer', 'whatsminer-v3', 'braiins', 'luxos'][i % 4] : kind === 'gpu' ? 'gpu-node' : kind === 'meter' ? 'modbus-meter' : 'pdu-snmp';
    return { id: `${kind}-${String(i).padStart(3, '0')}`, kind, driverId } as unknown as DeviceDriver;
  });
}

function reading(d: DeviceDriver, at: number): Reading {
  const base = { ts: at - Math.floor(rand() * 4000), freshness: 'fresh' as const, online: true, state: 'running' as const };
  if (d.kind === 'asic') {
    return {
      ...base,
      powerW: Math.round(3200 + rand() * 300),
      fields: {
        hashrateThs: r1(105 + rand() * 10),
        nominalHashrateThs: 110,
        hashrate5sThs: r1(100 + rand() * 15),
        temperatureC: r1(60 + rand() * 15),
        chipTempMaxC: r1(70 + rand() * 15),
        inletTempC: r1(25 + rand() * 5),
        fanRpm: Math.round(4000 + rand() * 2000),
        fanCount: 4,
        boards: 3,
        chainsOk: 3,
        frequencyMhz: 525,
        workMode: 'normal',
        pool: 'stratum+tcp://pool.example.com:3333',
        acceptedShares: Math.round(rand() * 1e6),
        rejectedPct: r1(rand()),
        uptimeS: Math.round(rand() * 1e6),
        firmware: '2024.03.1-rackpilot',
      },
    };
  }
  if (d.kind === 'gpu') {
    return {
      ...base,
      powerW: Math.round(4000 + rand() * 2500),
      fields: { gpuCount: 8, utilizationPct: r1(rand() * 100), memoryPct: r1(rand() * 100), temperatureC: r1(55 + rand() * 25), powerLimitW: 700, capped: false, workload: 'inference' },
    };
  }
  if (d.kind === 'meter') {
    return { ...base, powerW: Math.round(400_000 + rand() * 20_000), fields: { voltageV: r1(400 + rand() * 4), currentA: r1(600 + rand() * 30), frequencyHz: Math.round((49.95 + rand() * 0.1) * 1000) / 1000, powerFactor: 0.98, energyKwh: Math.round(rand() * 1e7) } };
  }
  return { ...base, powerW: Math.round(60_000 + rand() * 5000), fields: { outlets: 24, outletsOn: 24, currentA: r1(90 + rand() * 10), voltageV: r1(230 + rand() * 3) } };
}

function messages(devices: number, count: number): string[] {
  const drivers = rack(devices);
  const t0 = Date.UTC(2025, 0, 1);
  return Array.from({ length: count }, (_, k) => {
    const at = t0 + k * 5000;
    const readings = new Map(drivers.map((d) => [d.id, reading(d, at)]));
    return JSON.stringify(telemetryMessage({ site: 'site-a', rack: 'rack-07' }, drivers, readings, k, 5000, at));
  });
}

const fmt = (x: number, d = 0): string => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

async function run(label: string, pool: string[], count: number, over: Record<string, unknown>): Promise<void> {
  const msg = (i: number): string => pool[i % pool.length] as string;
  const dir = mkdtempSync(join(tmpdir(), 'rp-spool-bench-'));
  const cfg = spoolConfigSchema.parse({ dir, maxBytes: 8 * 1024 ** 3, segmentBytes: 64 * 1024 ** 2, ...over });
  const raw = Array.from({ length: count }, (_, i) => msg(i).length).reduce((a, b) => a + b, 0);
  const topic = 'rackpilot/v1/site-a/rack-07/telemetry';
  const loop = monitorEventLoopDelay({ resolution: 5 });

  let s = new Spool({ ...cfg, dir }, log);
  await s.open();
  // sequential: each append awaited before the next (a lone message every 5 s pays this)
  let t = performance.now();
  for (let i = 0; i < SEQUENTIAL; i++) await s.append('telemetry', topic, msg(i));
  const seqMs = performance.now() - t;
  loop.enable();
  t = performance.now();
  // pipelined: the backlog as fast as the disk takes it (group commit), 4 MiB of appends in flight
  const inFlight = new Set<Promise<boolean>>();
  let flightBytes = 0;
  let refused = 0;
  for (let i = SEQUENTIAL; i < count; i++) {
    const m = msg(i);
    flightBytes += m.length;
    const p: Promise<boolean> = s.append('telemetry', topic, m).then((r) => {
      if (!r.ok) refused++;
      flightBytes -= m.length;
      return inFlight.delete(p);
    });
    inFlight.add(p);
    while (flightBytes > 4 * 1024 ** 2) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  await s.flush();
  const writeMs = performance.now() - t;
  loop.disable();
  const writeLoop = { p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 };
  const st = s.stats();
  await s.close();

  loop.reset();
  loop.enable();
  t = performance.now();
  s = new Spool({ ...cfg, dir }, log);
  const rep = await s.open();
  const openMs = performance.now() - t;
  t = performance.now();
  let n = 0;
  let bytes = 0;
  for (;;) {
    const got = await s.take(100);
    if (got.length === 0) break;
    n += got.length;
    for (const r of got) bytes += r.payload.length;
    await s.ack((got.at(-1) as { seq: number }).seq);
  }
  const replayMs = performance.now() - t;
  loop.disable();
  await s.close();
  rmSync(dir, { recursive: true, force: true });

  const piped = count - SEQUENTIAL;
  const stored = st.written;
  process.stdout.write(
    `${label}: ${fmt(count)} msgs (${stored} stored, ${refused} refused), ${fmt(raw / count / 1024, 1)} KiB of JSON each; disk ${fmt(st.diskBytes / stored)} B/msg (${fmt(st.diskBytes / 1024 ** 2, 1)} MiB for the backlog)\n` +
      `  write, awaited one by one: ${fmt((SEQUENTIAL / seqMs) * 1000)} msg/s (${fmt(seqMs / SEQUENTIAL, 2)} ms each)\n` +
      `  write, pipelined:          ${fmt((piped / writeMs) * 1000)} msg/s, ${fmt((raw / writeMs) * 1000 / 1024 ** 2, 1)} MiB/s of JSON; ${st.fsyncs} fsyncs; event loop delay p99 ${fmt(writeLoop.p99, 1)} ms, max ${fmt(writeLoop.max, 1)} ms\n` +
      `  open (scan ${rep.pending.telemetry} records): ${fmt(openMs)} ms; replay (take 100 + ack): ${fmt((n / replayMs) * 1000)} msg/s, ${fmt((bytes / replayMs) * 1000 / 1024 ** 2, 1)} MiB/s, ${fmt(replayMs / 1000, 2)} s for the backlog; ` +
      `event loop delay p99 ${fmt(loop.percentile(99) / 1e6, 1)} ms, max ${fmt(loop.max / 1e6, 1)} ms\n`,
  );
}

async function main(): Promise<void> {
  for (const devices of [16, 256]) {
    // distinct messages, cycled (each is compressed on its own, so a pool is as good as all 17 280; 17 280 x 120 KiB would not fit the heap)
    const pool = messages(devices, devices > 16 ? 200 : 1000);
    for (const fsyncIntervalMs of [0, 1000]) {
      await run(`${devices} devices, compressed, fsync ${fsyncIntervalMs === 0 ? 'every batch' : 'every 1000 ms'}`, pool, BACKLOG, { fsyncIntervalMs });
    }
    await run(`${devices} devices, uncompressed, fsync every batch`, pool, devices > 16 ? Math.min(3000, BACKLOG) : BACKLOG, { fsyncIntervalMs: 0, compress: false });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${String(err)}\n`);
  process.exit(1);
});
