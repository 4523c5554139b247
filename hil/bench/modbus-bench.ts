/**
 * Modbus meter benchmark (prints figures, asserts nothing), Modbus RTU over a
 * socat pty pair at 19200 baud 8N1, driver and simulated meter in this process:
 * 1. round trip of a 2-register read (median/p90), with the simulator pacing
 *    its answers at the real line time for 19200 baud (a pty itself has no
 *    baud rate) and without pacing (software + pty latency only);
 * 2. the sampling rate the driver achieves at sampleHz 20 (SDM630 map: one
 *    20-register block read per sample);
 * 3. a scripted frequency dip (50 -> 49.80 Hz for 300 ms) at a random phase
 *    of the sampling period -> the first sample showing it reaches a
 *    signal listener: latency, and latency beyond the 50 ms period.
 *   npm run bench:modbus
 */
import { ConditionState, signalConditionSchema } from '../../agent/signals.js';
import { pino } from 'pino';
import { ModbusLink } from '../../drivers/modbus-meter/link.js';
import { modbusMeterDriver } from '../../drivers/modbus-meter/index.js';
import { planReads, type RegisterDef } from '../../drivers/modbus-meter/maps.js';
import { modbusMeterConfigSchema } from '../../drivers/modbus-meter/schema.js';
import { readWireMs } from '../../drivers/modbus-meter/wire.js';
import { ModbusMeterSim } from '../sim/modbus-meter-sim.js';
import { ptyPair } from '../testing/pty.js';
import { findTool } from '../testing/tools.js';

const BAUD = 19200;
const READS = 300;
const RATE_SECONDS = 5;
const DIPS = 30;
const logger = pino({ level: 'silent' });

function stats(xs: number[], unit = 'ms', digits = 1): string {
  const s = [...xs].sort((a, b) => a - b);
  const pick = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
  return `median ${pick(0.5).toFixed(digits)} ${unit}, p90 ${pick(0.9).toFixed(digits)} ${unit}, max ${(s.at(-1) ?? NaN).toFixed(digits)} ${unit} (n=${s.length})`;
}

async function roundTrips(socat: string, paceWire: boolean): Promise<number[]> {
  const pty = await ptyPair(socat);
  const registers: RegisterDef[] = [{ name: 'frequencyHz', function: 4, address: 0x46, type: 'float32', wordOrder: 'big', scale: 1 }];
  const sim = new ModbusMeterSim({ meter: registers });
  await sim.attachRtu(pty.b, { baudRate: BAUD, paceWire });
  const cfg = modbusMeterConfigSchema.parse({ id: 'bench', driver: 'modbus-meter', transport: 'rtu', serial: { path: pty.a, baudRate: BAUD }, meter: 'generic', registers });
  const link = new ModbusLink(cfg, logger);
  await link.connect();
  const [block] = planReads(registers);
  if (!block) throw new Error('no block');
  const out: number[] = [];
  try {
    for (let i = 0; i < READS + 10; i++) {
      const t0 = performance.now();
      await link.readBlock(block, 1000);
      if (i >= 10) out.push(performance.now() - t0); // first reads warm up
    }
  } finally {
    await link.close();
    await sim.close();
    await pty.dispose();
  }
  return out;
}

async function samplingAndDips(socat: string): Promise<void> {
  const pty = await ptyPair(socat);
  const sim = new ModbusMeterSim({ meter: 'sdm630', frequencyHz: 50 });
  await sim.attachRtu(pty.b, { baudRate: BAUD });
  const cfg = modbusMeterConfigSchema.parse({ id: 'bench', driver: 'modbus-meter', transport: 'rtu', serial: { path: pty.a, baudRate: BAUD }, meter: 'sdm630', sampleHz: 20, timeouts: { readMs: 300 } });
  const driver = modbusMeterDriver.create(cfg, { logger, now: Date.now });
  let freq: { at: number; value: number }[] = [];
  // the agent's own signal condition on the same stream: below 49.85 Hz, no hold time
  let raisedAt: number[] = [];
  const cond = new ConditionState(
    signalConditionSchema.parse({ id: 'uf', source: 'bench', channel: 'frequencyHz', below: 49.85, forMs: 0, hysteresis: 0.05, releaseMs: 0 }),
    (ch) => {
      if (ch.type === 'signal.raised') raisedAt.push(Date.now());
    },
  );
  driver.onSignal((s) => {
    if (s.channel === 'frequencyHz' && s.fresh) freq.push({ at: Date.now(), value: s.value });
    if (s.channel === 'frequencyHz') cond.sample(s);
  });
  try {
    await driver.start();
    await new Promise((r) => setTimeout(r, 500));
    freq = [];
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, RATE_SECONDS * 1000));
    const n = freq.filter((f) => f.at >= t0).length;
    const reading = await driver.read({ deadlineMs: 100 });
    const gaps = freq.slice(1).map((f, i) => f.at - (freq[i]?.at ?? f.at));
    console.log(`sampling at sampleHz 20 (SDM630 block of 20 registers): ${(n / RATE_SECONDS).toFixed(1)} samples/s over ${RATE_SECONDS} s; driver's own figure ${String(reading.fields.sampleHz)} Hz; interval ${stats(gaps, 'ms', 0)}`);

    const latencies: number[] = [];
    const signalLatencies: number[] = [];
    for (let i = 0; i < DIPS; i++) {
      freq = [];
      raisedAt = [];
      const atMs = 200 + Math.random() * 100;
      const start = sim.model.runScenario([{ atMs, forMs: 300, frequencyHz: 49.8 }]);
      const dipAt = start + atMs;
      const until = Date.now() + 3000;
      let seen: number | undefined;
      while (seen === undefined && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 5));
        seen = freq.find((f) => f.value < 49.9)?.at;
      }
      if (seen !== undefined) latencies.push(seen - dipAt);
      if (raisedAt[0] !== undefined) signalLatencies.push(raisedAt[0] - dipAt);
      await new Promise((r) => setTimeout(r, 400)); // dip over
    }
    console.log(`frequency dip -> first sample showing it at the listener: ${stats(latencies)}`);
    console.log(`  beyond the 50 ms sampling period: ${stats(latencies.map((l) => l - 50))}`);
    console.log(`frequency dip -> signal raised (agent's condition: below 49.85 Hz, forMs 0): ${stats(signalLatencies)}`);
    console.log(`  beyond the 50 ms sampling period: ${stats(signalLatencies.map((l) => l - 50))}`);
    cond.stop();
  } finally {
    await driver.stop();
    await sim.close();
    await pty.dispose();
  }
}

async function main(): Promise<void> {
  const socat = findTool('socat');
  if (!socat) {
    console.log('socat not found: install it with "apt-get install socat"');
    process.exitCode = 1;
    return;
  }
  const line = { baudRate: BAUD, dataBits: 8 as const, parity: 'none' as const, stopBits: 1 as const };
  console.log(`Modbus RTU over a socat pty pair at ${BAUD} baud 8N1 (Node ${process.version})`);
  console.log(`computed line time of a 2-register read: ${readWireMs(line, 2, 0).toFixed(1)} ms (frames + 2 x t3.5), 20-register read: ${readWireMs(line, 20, 0).toFixed(1)} ms`);
  console.log(`2-register read round trip, sim paced at line time: ${stats(await roundTrips(socat, true), 'ms', 2)}`);
  console.log(`2-register read round trip, unpaced (software + pty only): ${stats(await roundTrips(socat, false), 'ms', 2)}`);
  await samplingAndDips(socat);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
