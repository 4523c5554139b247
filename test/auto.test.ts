/**
 * `driver: auto`: config validation, detection at start-up, delegation,
 * re-detection when the firmware string changes, and an unidentified host.
 * LuxOS simulators on 127.0.34.x only.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { pino } from 'pino';
import { AutoDevice, autoDeviceSchema } from '../agent/auto.js';
import { validateConfig } from '../agent/config.js';
import { LuxosSim } from '../hil/sim/luxos-sim.js';
import { expectCode } from '../hil/testing/expect-code.js';
import { freePort } from '../hil/testing/ports.js';

const log = pino({ level: 'silent' });
const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const root = { site: 's1', rack: 'r1', mqtt: { url: 'mqtt://127.0.0.1:1883' } };

describe('driver: auto config', () => {
  test('a minimal block is valid, with defaults', () => {
    const r = validateConfig({ ...root, devices: [{ id: 'a1', driver: 'auto', host: '10.0.0.5', password: 'x' }] });
    assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
    const d = r.config.devices[0] as ReturnType<typeof autoDeviceSchema.parse>;
    assert.equal(d.driver, 'auto');
    assert.equal(d.port, 4028);
    assert.equal(d.httpPort, 80);
    assert.equal(d.redetectAfterFailures, 5);
  });

  test('unknown keys, bad ports and options for unknown drivers are all reported with paths', () => {
    const r = validateConfig({
      ...root,
      devices: [{ id: 'a1', driver: 'auto', host: '10.0.0.5', httpPort: 0, colour: 'red', options: { nosuch: { a: 1 } } }],
    });
    assert.ok(!r.ok);
    const all = r.errors.join('\n');
    assert.match(all, /devices\[0\]\.httpPort/);
    assert.match(all, /devices\[0\]: Unrecognized key: "colour"|devices\[0\].*colour/);
    assert.match(all, /devices\[0\]\.options\.nosuch: unknown driver "nosuch"/);
  });
});

async function luxosAt(host: string, port: number, model: string): Promise<LuxosSim> {
  const sim = new LuxosSim({ host, port, model, sleepDelayMs: 100, wakeRampMs: 100 });
  await sim.listen();
  return sim;
}

function auto(host: string, port: number, httpPort: number, over: Record<string, unknown> = {}): AutoDevice {
  const cfg = autoDeviceSchema.parse({ id: 'a1', driver: 'auto', host, port, httpPort, timeouts: { connectMs: 500, readMs: 1000 }, probeTimeoutMs: 1000, options: { luxos: { confirmPollMs: 50 } }, ...over });
  const d = new AutoDevice(cfg, { logger: log, now: Date.now });
  cleanup.push(() => d.stop());
  return d;
}

describe('driver: auto at run time', () => {
  test('detects LuxOS at start, then reads and curtails through the LuxOS driver', async () => {
    const port = await freePort('127.0.34.10');
    const sim = await luxosAt('127.0.34.10', port, 'Antminer S21');
    cleanup.push(() => sim.close());
    const d = auto('127.0.34.10', port, await freePort());
    assert.equal(d.driverId, 'auto');
    assert.equal(d.capabilities.curtail, false, 'nothing before detection');
    await d.start();
    assert.equal(d.driverId, 'luxos');
    assert.equal(d.capabilities.curtail, true);
    assert.equal(d.capabilities.profiles, true);
    const r = await d.read({ deadlineMs: 3000 });
    assert.equal(r.freshness, 'fresh');
    assert.equal(r.powerW, 3250);
    const res = await d.curtail({ deadlineMs: 8000 });
    assert.equal(res.confirmed, true);
    assert.equal(sim.sleeping, true);
  });

  test('re-detects when the API version string changes (new firmware) and swaps the inner driver', async () => {
    const port = await freePort('127.0.34.11');
    let sim = await luxosAt('127.0.34.11', port, 'Antminer S21');
    cleanup.push(() => sim.close());
    const d = auto('127.0.34.11', port, await freePort(), { firmwareCheckMs: 1 });
    await d.start();
    const first = d.detected;
    assert.ok(first);
    await d.read({ deadlineMs: 3000 });
    await d.settled();
    assert.equal(d.swaps, 0, 'same firmware: the warm driver is kept');
    await sim.close();
    sim = await luxosAt('127.0.34.11', port, 'Antminer S21 XP'); // reflashed/replaced: another version string
    await new Promise((r) => setTimeout(r, 5));
    await d.read({ deadlineMs: 3000 });
    await d.settled();
    assert.equal(d.swaps, 1);
    assert.notEqual(d.detected, first);
    assert.equal(d.driverId, 'luxos');
    assert.equal((await d.read({ deadlineMs: 3000 })).freshness, 'fresh');
  });

  test('after N failed reads it re-detects; a host still down keeps the old driver', async () => {
    const port = await freePort('127.0.34.12');
    const sim = await luxosAt('127.0.34.12', port, 'Antminer S21');
    const d = auto('127.0.34.12', port, await freePort(), { redetectAfterFailures: 2, firmwareCheckMs: 0 });
    await d.start();
    const first = d.detected;
    await sim.close();
    for (let i = 0; i < 2; i++) assert.equal((await d.read({ deadlineMs: 2000 })).online, false);
    await d.settled();
    assert.equal(d.detected, first);
    assert.equal(d.swaps, 0);
  });

  test('an unidentified host: start() resolves, read() is missing with NOT_STARTED, actions refuse', async () => {
    const port = await freePort('127.0.34.13');
    const d = auto('127.0.34.13', port, await freePort());
    await d.start();
    assert.equal(d.driverId, 'auto');
    const r = await d.read({ deadlineMs: 1000 });
    assert.equal(r.freshness, 'missing');
    assert.equal(r.error?.code, 'NOT_STARTED');
    assert.match(r.error?.message ?? '', /a1: driver auto: no known firmware family answered at 127\.0\.34\.13/);
    await expectCode(d.curtail({ deadlineMs: 1000 }), 'NOT_STARTED', /cannot curtail/);
  });
});
