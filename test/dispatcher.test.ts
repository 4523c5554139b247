import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { Dispatcher, type DispatchEvent } from '../agent/dispatcher.js';
import type { ActionOptions, ActionResult, Capabilities, DeviceDriver, DeviceState, Reading } from '../drivers/contract.js';
import { sleep } from '../drivers/lib/deadline.js';
import { RackpilotError } from '../drivers/lib/errors.js';

const inFlight = { now: 0, max: 0 };

/** An in-memory device: acts after `delayMs`, or never confirms when `stubborn`. */
class FakeDevice implements DeviceDriver {
  readonly kind = 'asic' as const;
  readonly driverId = 'fake';
  readonly capabilities: Capabilities = { curtail: true, restore: true, powerTarget: null, profiles: false, switchOutlet: false };
  state: DeviceState = 'running';
  stubborn = false;
  calls: string[] = [];
  constructor(
    readonly id: string,
    public delayMs = 20,
  ) {}
  start(): Promise<void> {
    return Promise.resolve();
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  reading(): Reading {
    return { ts: Date.now(), freshness: 'fresh', online: true, state: this.state, powerW: this.state === 'curtailed' ? 25 : 3000, fields: {} };
  }
  read(): Promise<Reading> {
    return Promise.resolve(this.reading());
  }
  private async act(want: DeviceState, o: ActionOptions): Promise<ActionResult> {
    this.calls.push(want);
    const t0 = Date.now();
    inFlight.max = Math.max(inFlight.max, ++inFlight.now);
    try {
      return await this.actInner(want, o, t0);
    } finally {
      inFlight.now--;
    }
  }
  private async actInner(want: DeviceState, o: ActionOptions, t0: number): Promise<ActionResult> {
    if (this.stubborn) {
      await sleep(o.deadlineMs, o.signal).catch(() => undefined);
      throw new RackpilotError('NOT_CONFIRMED', `${this.id}: still ${this.state}`);
    }
    await sleep(this.delayMs, o.signal);
    this.state = want;
    return { confirmed: true, ackMs: 0, tookMs: Date.now() - t0, reading: this.reading() };
  }
  curtail(o: ActionOptions): Promise<ActionResult> {
    return this.act('curtailed', o);
  }
  restore(o: ActionOptions): Promise<ActionResult> {
    return this.act('running', o);
  }
}

function rig(devices: FakeDevice[]) {
  const events: DispatchEvent[] = [];
  const readings = new Map<string, Reading>();
  let stateChanges = 0;
  const d = new Dispatcher({
    devices,
    deadlineMs: 2000,
    log: pino({ level: 'silent' }),
    onEvent: (e) => events.push(e),
    onState: () => stateChanges++,
    onReading: (id, r) => readings.set(id, r),
  });
  const req = (commandId: string) => ({ commandId, receivedAt: Date.now() });
  return { d, events, readings, req, stateChanges: () => stateChanges };
}

describe('dispatcher', () => {
  test('curtail reaches every device in parallel and reports the confirming read-backs', async () => {
    const devs = [new FakeDevice('a', 100), new FakeDevice('b', 100), new FakeDevice('c', 100)];
    const { d, events, readings, req } = rig(devs);
    inFlight.max = 0;
    const out = await d.curtail(req('c1'));
    assert.equal(out.ok, true);
    assert.equal(d.state, 'curtailed');
    assert.equal(d.commandId, 'c1');
    assert.deepEqual(out.devices.map((x) => x.id), ['a', 'b', 'c']);
    assert.equal(inFlight.max, 3, 'all devices are acted on at once');
    assert.deepEqual([...readings.keys()].sort(), ['a', 'b', 'c']);
    assert.deepEqual(events.map((e) => e.type), ['curtail.started', 'device.confirmed', 'device.confirmed', 'device.confirmed', 'curtail.completed']);
  });

  test('a device that does not confirm makes the rack partial, and reconcile heals it once it complies', async () => {
    const devs = [new FakeDevice('a'), new FakeDevice('b')];
    devs[1]!.stubborn = true;
    const { d, events, req } = rig(devs);
    const out = await d.curtail({ ...req('c2'), deadlineMs: 100 });
    assert.equal(out.ok, false);
    assert.equal(d.state, 'partial');
    assert.equal(out.devices.find((x) => x.id === 'b')?.error?.code, 'NOT_CONFIRMED');
    assert.equal(events.at(-1)?.type, 'curtail.failed');
    devs[1]!.state = 'curtailed';
    d.reconcile(new Map(devs.map((x) => [x.id, x.reading()])));
    assert.equal(d.state, 'curtailed');
    assert.equal(d.commandId, 'c2');
  });

  test('a second curtail joins the one in flight; a restore meanwhile is refused with BUSY', async () => {
    const devs = [new FakeDevice('a', 150)];
    const { d, req } = rig(devs);
    const first = d.curtail(req('c3'));
    const second = d.curtail(req('c4'));
    await assert.rejects(d.restore(req('r1')), (e: RackpilotError) => e.code === 'BUSY' && /curtail is in progress \(command c3\)/.test(e.message));
    const [o1, o2] = await Promise.all([first, second]);
    assert.equal(o1, o2);
    assert.deepEqual(devs[0]!.calls, ['curtailed']);
  });

  test('a curtail preempts a restore; a second curtail meanwhile joins it, a restore is refused', async () => {
    const devs = [new FakeDevice('a', 2000)];
    devs[0]!.state = 'curtailed';
    const { d, req } = rig(devs);
    const restoring = d.restore(req('r3'));
    await sleep(30);
    const c1 = d.curtail(req('c6'));
    const c2 = d.curtail(req('c7'));
    await assert.rejects(d.restore(req('r4')), (e: RackpilotError) => e.code === 'BUSY' && /command c6/.test(e.message));
    assert.equal((await restoring).preempted, true);
    const [o1, o2] = await Promise.all([c1, c2]);
    assert.equal(o1, o2);
    assert.deepEqual(devs[0]!.calls, ['running', 'curtailed']);
    assert.equal(d.commandId, 'c6');
  });

  test('a curtail preempts a restore in progress', async () => {
    const devs = [new FakeDevice('a', 2000)];
    devs[0]!.state = 'curtailed';
    const { d, req } = rig(devs);
    const restoring = d.restore(req('r2'));
    await sleep(30);
    const curtailing = d.curtail(req('c5'));
    const r = await restoring;
    assert.equal(r.preempted, true);
    assert.equal((await curtailing).ok, true);
    assert.equal(d.state, 'curtailed');
    assert.equal(d.commandId, 'c5');
  });

  test('at start-up the rack state is inferred from fresh readings, never from stale ones', () => {
    const devs = [new FakeDevice('a'), new FakeDevice('b')];
    const { d } = rig(devs);
    devs.forEach((x) => (x.state = 'curtailed'));
    const stale = new Map(devs.map((x) => [x.id, { ...x.reading(), freshness: 'stale' as const }]));
    assert.equal(d.state, 'unknown');
    d.reconcile(stale);
    assert.equal(d.state, 'unknown');
    d.reconcile(new Map(devs.map((x) => [x.id, x.reading()])));
    assert.equal(d.state, 'curtailed');
    assert.equal(d.commandId, null);
    devs[0]!.state = 'running';
    d.reconcile(new Map(devs.map((x) => [x.id, x.reading()])));
    assert.equal(d.state, 'partial');
  });
});
