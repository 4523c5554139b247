import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import type { DeviceDriver, Reading } from '../drivers/contract.js';
import { Poller } from './poller.js';

/** Drivers whose read() notes when it started and answers at once. */
function rack(n: number): { devices: DeviceDriver[]; started: string[] } {
  const started: string[] = [];
  const devices = Array.from({ length: n }, (_, i) => {
    const id = `m${i}`;
    const read = (): Promise<Reading> => {
      started.push(id);
      return Promise.resolve({ ts: Date.now(), freshness: 'fresh', online: true, state: 'running', powerW: 3000, fields: {} });
    };
    return { id, read } as unknown as DeviceDriver;
  });
  return { devices, started };
}

const opts = { intervalMs: 60_000, deadlineMs: 1000, concurrency: 2 };
const log = pino({ level: 'silent' });
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('holdUntil: no read starts until every hold settled (rejected ones too), then the cycle completes', async () => {
  const { devices, started } = rack(4);
  const cycles: number[] = [];
  const p = new Poller(devices, opts, (readings) => cycles.push(readings.size), log);
  let releaseA!: () => void;
  let failB!: (e: Error) => void;
  p.holdUntil(new Promise<void>((r) => (releaseA = r)));
  p.holdUntil(new Promise<void>((_r, j) => (failB = j)));
  const cycle = p.pollOnce();
  for (let i = 0; i < 5; i++) await tick();
  assert.deepEqual(started, []);
  releaseA();
  for (let i = 0; i < 5; i++) await tick();
  assert.deepEqual(started, [], 'the second hold still stands');
  failB(new Error('a wave that failed releases too'));
  await cycle;
  assert.deepEqual([...started].sort(), ['m0', 'm1', 'm2', 'm3']);
  assert.deepEqual(cycles, [4]);
  assert.equal(p.latest.size, 4);
});

test('holdUntil: reads already started go on; the rest wait', async () => {
  const started: string[] = [];
  let answerFirst!: () => void;
  const first = { id: 'slow', read: () => (started.push('slow'), new Promise<Reading>((r) => (answerFirst = () => r({ ts: Date.now(), freshness: 'fresh', online: true, state: 'running', powerW: 1, fields: {} })))) };
  const rest = rack(2);
  const p = new Poller([first as unknown as DeviceDriver, ...rest.devices], { ...opts, concurrency: 1 }, () => undefined, log);
  const cycle = p.pollOnce();
  await tick();
  assert.deepEqual(started, ['slow']);
  let release!: () => void;
  p.holdUntil(new Promise<void>((r) => (release = r)));
  answerFirst();
  for (let i = 0; i < 5; i++) await tick();
  assert.equal(p.latest.get('slow')?.powerW, 1, 'the read in flight was recorded');
  assert.deepEqual(rest.started, []);
  release();
  await cycle;
  assert.deepEqual(rest.started, ['m0', 'm1']);
});

test('stop() during a hold that never settles ends the cycle at once, without reading', async () => {
  const { devices, started } = rack(3);
  const p = new Poller(devices, opts, () => undefined, log);
  p.holdUntil(new Promise<void>(() => undefined));
  p.start();
  await new Promise((r) => setTimeout(r, 20)); // the first cycle started and waits
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise((_r, j) => (timer = setTimeout(() => j(new Error('stop() waited for the hold')), 2000)));
  await Promise.race([p.stop(), hung]);
  clearTimeout(timer);
  assert.deepEqual(started, []);
});
