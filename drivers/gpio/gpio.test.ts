/**
 * The GPIO driver through the software backend: edges both ways, debounce,
 * active-low, the edge filter, outputs confirmed by read-back, timestamps.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { pino } from 'pino';
import type { SignalSample } from '../contract.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { sleep } from '../lib/deadline.js';
import { GpioDriver } from './driver.js';
import { gpioDriver } from './index.js';
import { gpioConfigSchema, type GpioConfig } from './schema.js';
import { softGpio } from './soft.js';

const ctx = { logger: pino({ level: 'silent' }), now: Date.now };
const CHIP = 'pinctrl-bcm2711';

function config(extra: Record<string, unknown>): GpioConfig {
  return gpioConfigSchema.parse({ id: 'trip1', driver: 'gpio', backend: 'soft', chip: CHIP, offset: 17, direction: 'in', ...extra });
}

const started: GpioDriver[] = [];
async function startDriver(extra: Record<string, unknown>): Promise<GpioDriver> {
  const d = gpioDriver.create(config(extra), ctx);
  await d.start();
  started.push(d);
  return d;
}

function collect(d: GpioDriver): SignalSample[] {
  const got: SignalSample[] = [];
  d.onSignal((s) => got.push(s));
  return got;
}

/** Waits until `cond` holds (polling), failing after `ms`. */
async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail('condition not reached in time');
    await sleep(5);
  }
}

afterEach(async () => {
  for (const d of started.splice(0)) await d.stop();
  softGpio.reset();
});

describe('gpio config', () => {
  test('chip + offset or a global line, exactly one', () => {
    assert.ok(gpioConfigSchema.safeParse({ id: 'g', driver: 'gpio', line: 529, direction: 'in' }).success);
    assert.ok(gpioConfigSchema.safeParse({ id: 'g', driver: 'gpio', chip: CHIP, offset: 4, direction: 'out', initial: true }).success);
    const bad = [
      { direction: 'in' },
      { chip: CHIP, direction: 'in' },
      { chip: CHIP, offset: 1, line: 513, direction: 'in' },
      { line: 513, direction: 'out', edge: 'both' },
      { line: 513, direction: 'out', debounceMs: 5 },
      { line: 513, direction: 'in', initial: true },
      { line: 513, direction: 'sideways' },
      { line: 513, direction: 'in', host: '127.0.0.1' },
    ];
    for (const b of bad) assert.equal(gpioConfigSchema.safeParse({ id: 'g', driver: 'gpio', ...b }).success, false, JSON.stringify(b));
  });

  test('defaults: onoff backend, not active-low, and feed is accepted', () => {
    const c = gpioConfigSchema.parse({ id: 'g', driver: 'gpio', line: 529, direction: 'out', feed: [{ pdu: 'pdu1', outlet: '3' }] });
    assert.equal(c.backend, 'onoff');
    assert.equal(c.activeLow, false);
  });
});

describe('gpio inputs (soft backend)', () => {
  test('edges both ways stream 1 and 0 with the time captured at the edge', async () => {
    const d = await startDriver({ debounceMs: 0 });
    assert.deepEqual(d.signalChannels, ['input']);
    assert.equal(d.line, 512 + 17);
    const got = collect(d);
    await until(() => got.length === 1); // the current level, delivered on subscribe
    assert.equal(got[0]?.value, 0);
    const pin = softGpio.chip(CHIP).line(17);
    // edges are stamped on the monotonic clock (sub-millisecond), as epoch ms
    const t0 = performance.timeOrigin + performance.now();
    pin.set(1);
    const t1 = performance.timeOrigin + performance.now();
    pin.set(0);
    assert.equal(got.length, 3, 'with no debounce every edge is delivered at once');
    assert.deepEqual(
      got.slice(1).map((s) => [s.device, s.channel, s.value, s.fresh]),
      [
        ['trip1', 'input', 1, true],
        ['trip1', 'input', 0, true],
      ],
    );
    const rise = got[1]?.ts ?? 0;
    assert.ok(rise >= t0 && rise <= t1, `edge time ${rise} within [${t0}, ${t1}]`);
    const r = await d.read({ deadlineMs: 500 });
    assert.equal(r.freshness, 'fresh');
    assert.equal(r.fields.level, false);
    assert.equal(r.fields.edges, 2);
    assert.equal(r.fields.lastEdgeTs, got[2]?.ts);
  });

  test('active-low: a line pulled low is level true, value 1', async () => {
    const pin = softGpio.chip(CHIP).line(17);
    pin.set(1); // idle high (pull-up), inactive
    const d = await startDriver({ activeLow: true, debounceMs: 0 });
    const got = collect(d);
    await until(() => got.length === 1);
    assert.equal(got[0]?.value, 0);
    pin.set(0);
    assert.equal(got[1]?.value, 1);
    const r = await d.read({ deadlineMs: 500 });
    assert.deepEqual([r.fields.level, r.fields.value, r.fields.physical, r.fields.activeLow], [true, 1, 0, true]);
  });

  test('debounce: a bouncing contact gives one sample, stamped with the first edge', async () => {
    const d = await startDriver({ debounceMs: 30 });
    const got = collect(d);
    await until(() => got.length === 1);
    const pin = softGpio.chip(CHIP).line(17);
    const t0 = performance.timeOrigin + performance.now();
    pin.set(1).set(0).set(1).set(0).set(1);
    const t1 = performance.timeOrigin + performance.now();
    assert.equal(got.length, 1, 'nothing before the level has held for debounceMs');
    await until(() => got.length === 2);
    await sleep(60);
    assert.equal(got.length, 2, 'exactly one sample for the burst');
    assert.equal(got[1]?.value, 1);
    const ts = got[1]?.ts ?? 0;
    assert.ok(ts >= t0 && ts <= t1, 'stamped with the first edge of the burst, not the settle time');
  });

  test('debounce: a glitch shorter than debounceMs is dropped', async () => {
    const d = await startDriver({ debounceMs: 30 });
    const got = collect(d);
    await until(() => got.length === 1);
    softGpio.chip(CHIP).line(17).set(1).set(0);
    await sleep(100);
    assert.equal(got.length, 1);
    const r = await d.read({ deadlineMs: 500 });
    assert.equal(r.fields.edges, 0);
  });

  test('edge: rising streams only the transitions to active', async () => {
    const d = await startDriver({ debounceMs: 0, edge: 'rising' });
    const got = collect(d);
    await until(() => got.length === 1);
    const pin = softGpio.chip(CHIP).line(17);
    pin.set(1).set(0).set(1);
    assert.deepEqual(
      got.slice(1).map((s) => s.value),
      [1, 1],
    );
  });

  test('edge: falling streams only the transitions to inactive', async () => {
    const d = await startDriver({ debounceMs: 0, edge: 'falling' });
    const got = collect(d);
    await until(() => got.length === 1);
    softGpio.chip(CHIP).line(17).set(1).set(0).set(1).set(0);
    assert.deepEqual(
      got.slice(1).map((s) => s.value),
      [0, 0],
    );
  });

  test('an unsubscribed listener hears nothing more', async () => {
    const d = await startDriver({ debounceMs: 0 });
    const got: SignalSample[] = [];
    const off = d.onSignal((s) => got.push(s));
    off();
    softGpio.chip(CHIP).line(17).set(1);
    await sleep(10);
    assert.equal(got.length, 0);
  });

  test('a failed interrupt source streams a sample that is not fresh', async () => {
    const d = await startDriver({ debounceMs: 0 });
    const got = collect(d);
    await until(() => got.length === 1);
    softGpio.chip(CHIP).line(17).fail();
    assert.equal(got[1]?.fresh, false);
    assert.equal(got[1]?.value, 0);
  });

  test('a failing read turns the reading stale, and read() never throws', async () => {
    const d = await startDriver({});
    const ok = await d.read({ deadlineMs: 500 });
    assert.equal(ok.freshness, 'fresh');
    softGpio.chip(CHIP).line(17).failReads = true;
    const r = await d.read({ deadlineMs: 500 });
    assert.equal(r.freshness, 'stale');
    assert.equal(r.online, false);
    assert.equal(r.error?.code, 'DEVICE_ERROR');
    assert.match(r.error?.message ?? '', /EIO/);
  });

  test('read before start is missing with NOT_STARTED', async () => {
    const d = gpioDriver.create(config({}), ctx);
    const r = await d.read({ deadlineMs: 500 });
    assert.equal(r.freshness, 'missing');
    assert.equal(r.error?.code, 'NOT_STARTED');
  });

  test('setOutput on an input is UNSUPPORTED', async () => {
    const d = await startDriver({});
    assert.equal(d.capabilities.output, false);
    await expectCode(d.setOutput(true, { deadlineMs: 500 }), 'UNSUPPORTED', /input/);
  });

  test('a global line number resolves against the chips present; a second device on the same line is refused', async () => {
    softGpio.chip(CHIP, { base: 512, ngpio: 58 });
    const d = await startDriver({ chip: undefined, offset: undefined, line: 530 });
    assert.equal(d.line, 530);
    const busy = gpioDriver.create(config({ chip: undefined, offset: undefined, line: 530, id: 'trip2' }), ctx);
    await expectCode(busy.start(), 'DEVICE_ERROR', /busy/);
    const none = gpioDriver.create(config({ chip: undefined, offset: undefined, line: 700, id: 'trip3' }), ctx);
    await expectCode(none.start(), 'CONFIG_INVALID', /line 700 belongs to no chip.*pinctrl-bcm2711/);
    const off = gpioDriver.create(config({ offset: 58, id: 'trip4' }), ctx);
    await expectCode(off.start(), 'CONFIG_INVALID', /offset 58 is out of range.*58 lines/);
  });
});

describe('gpio outputs (soft backend)', () => {
  test('the initial level is driven at start; setOutput is confirmed by read-back', async () => {
    const d = await startDriver({ direction: 'out', offset: 4, initial: true, activeLow: true });
    const pin = softGpio.chip(CHIP).line(4);
    assert.equal(d.capabilities.output, true);
    assert.deepEqual(d.signalChannels, []);
    assert.equal(pin.value, 0, 'active-low: on is electrically low');
    const res = await d.setOutput(false, { deadlineMs: 1000 });
    assert.equal(res.confirmed, true);
    assert.equal(res.reading.fields.level, false);
    assert.equal(pin.value, 1);
    assert.ok(res.ackMs <= res.tookMs);
    const on = await d.setOutput(true, { deadlineMs: 1000 });
    assert.equal(on.reading.fields.level, true);
    assert.equal(pin.value, 0);
  });

  test('an output that does not follow is NOT_CONFIRMED', async () => {
    const d = await startDriver({ direction: 'out', offset: 5 });
    softGpio.chip(CHIP).line(5).stuck = true;
    await expectCode(d.setOutput(true, { deadlineMs: 200 }), 'NOT_CONFIRMED', /acknowledged.*did not reach level true/);
  });

  test('stop releases the line; it can be opened again', async () => {
    const d = await startDriver({ direction: 'out', offset: 6, initial: true });
    await d.stop();
    assert.equal(softGpio.chip(CHIP).line(6).value, 1, 'an output keeps its level after stop');
    const again = gpioDriver.create(config({ direction: 'out', offset: 6, id: 'relay2' }), ctx);
    await again.start();
    started.push(again);
  });
});

describe('gpio with the onoff backend on a machine without sysfs GPIO', () => {
  test('start fails with a clear error, read() reports it', { skip: process.platform !== 'linux' }, async (t) => {
    const { existsSync } = await import('node:fs');
    if (existsSync('/sys/class/gpio')) {
      t.skip('this machine has /sys/class/gpio (the fake-tree tests cover the messages)');
      return;
    }
    const d = new GpioDriver(gpioConfigSchema.parse({ id: 'hw', driver: 'gpio', chip: CHIP, offset: 17, direction: 'in' }), ctx);
    await expectCode(d.start(), 'UNSUPPORTED', /no sysfs GPIO interface at \/sys\/class\/gpio.*CONFIG_GPIO_SYSFS/);
    const r = await d.read({ deadlineMs: 500 });
    assert.equal(r.freshness, 'missing');
  });
});
