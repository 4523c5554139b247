/**
 * The engine's two-phase dispatch: armed curtails (DeviceDriver.armCurtail)
 * are fired in one loop before anything else, devices without one get their
 * plain curtail, and a wave's read-backs wait for its acknowledgements
 * (WaveAcks).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ActionOptions, ActionResult, ArmedAction, DeviceDriver, FiredAction } from '../drivers/contract.js';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sleep } from '../drivers/lib/deadline.js';
import { answerTracker } from '../drivers/lib/send-batch.js';
import { fanOut, fireArmed, settledOrAfter, WaveAcks, type DeviceHandle, type Fired, type ShedOutcome } from '../agent/engine/executor.js';
import type { Demand } from '../agent/engine/types.js';
import { engineRig, FakeDevice } from '../hil/testing/engine-rig.js';

const shed = (key: string): Demand => ({ key, source: 'command', kind: 'shed', since: Date.now(), holdOffMs: 0, commandId: key });

/** A fake device whose curtail can be armed; every step is written to one shared log. */
class ArmableDevice extends FakeDevice {
  arms = 0;
  /** fire() hands back nothing (what a driver does when its session ended since arming). */
  staleFire = false;
  /** fire() throws (a driver bug). */
  brokenFire = false;
  seen: ActionOptions | undefined;
  constructor(
    id: string,
    private readonly log: string[],
  ) {
    super(id, 5);
  }
  override curtail(o: ActionOptions): Promise<ActionResult> {
    this.log.push(`plain:${this.id}`);
    return super.curtail(o);
  }
  armCurtail(): ArmedAction | undefined {
    this.arms++;
    return {
      fire: () => {
        if (this.staleFire) return undefined;
        if (this.brokenFire) throw new Error('bug in fire()');
        this.log.push(`fire:${this.id}`);
        return {
          complete: async (o) => {
            this.log.push(`complete:${this.id}`);
            this.seen = o;
            const t0 = performance.now();
            o.onAck?.();
            await o.confirmAfter;
            this.state = 'curtailed';
            return { confirmed: true, ackMs: 0, tookMs: performance.now() - t0, reading: this.reading() };
          },
        };
      },
    };
  }
}

describe('engine: armed curtails', () => {
  test('every armed send goes out before any other work; devices without one get the plain curtail', async () => {
    const log: string[] = [];
    const devs = [new ArmableDevice('a', log), new FakeDevice('p', 5), new ArmableDevice('b', log), new ArmableDevice('c', log)];
    (devs[3] as ArmableDevice).staleFire = true;
    const plainCalls = (): number => (devs[1] as FakeDevice).calls.length;
    const rig = engineRig(devs);
    rig.poll();
    for (const d of [devs[0], devs[2], devs[3]] as ArmableDevice[]) assert.ok(d.arms >= 1, `${d.id} armed by the telemetry cycle`);
    const w = rig.engine.raise(shed('command:all'));
    assert.ok(w);
    // synchronously, before anything awaited: the armed sends are out first, nothing is finished yet
    const now = [...log];
    assert.deepEqual(now.slice(0, 2), ['fire:a', 'fire:b'], now.join(' '));
    assert.ok(!now.includes('fire:c'), 'c handed back nothing from fire(): it goes the plain way');
    assert.ok(!now.some((l) => l.startsWith('complete')), now.join(' '));
    const out = await w.done;
    assert.equal(out.ok, true);
    assert.deepEqual(devs.map((d) => d.state), ['curtailed', 'curtailed', 'curtailed', 'curtailed']);
    assert.equal(plainCalls(), 1, 'the device that cannot be armed got its plain curtail');
    assert.ok(log.includes('plain:c'), 'a stale arm falls back to the plain curtail');
    assert.ok(!log.includes('plain:a') && !log.includes('plain:b'), 'a fired device is not sent again');
    // the plain curtails start before the fired devices are finished (those have sent already)
    assert.ok(log.indexOf('plain:c') < log.indexOf('complete:a'), log.join(' '));
    const a = devs[0] as ArmableDevice;
    assert.ok(a.seen?.confirmAfter instanceof Promise && typeof a.seen.onAck === 'function', 'a curtail wave hands its acknowledgement hold to the driver');
    const rec = rig.activations[0];
    assert.ok(rec);
    assert.equal(rec.devices.length, 4);
    await rig.stop();
  });

  test('a fire() that throws costs the other devices nothing; that device gets its plain curtail', async () => {
    const log: string[] = [];
    const devs = [new ArmableDevice('a', log), new ArmableDevice('b', log), new ArmableDevice('c', log)];
    (devs[1] as ArmableDevice).brokenFire = true;
    const rig = engineRig(devs);
    rig.poll();
    const w = rig.engine.raise(shed('command:all'));
    assert.ok(w);
    const out = await w.done;
    assert.equal(out.ok, true);
    assert.deepEqual(devs.map((d) => d.state), ['curtailed', 'curtailed', 'curtailed']);
    assert.deepEqual(log.filter((l) => l.startsWith('fire')).sort(), ['fire:a', 'fire:c']);
    assert.ok(log.includes('plain:b'));
    await rig.stop();
  });

  test("a wave's bookkeeping waits for its answers: nothing is saved or reported before they are in, and its times are the dispatch's", async () => {
    const log: string[] = [];
    /** Its fired send starts an exchange that the wave counts (as the transports do), ended when the test says. */
    class Answering extends ArmableDevice {
      answer: (() => void) | undefined;
      override armCurtail(): ArmedAction | undefined {
        const armed = super.armCurtail();
        if (!armed) return undefined;
        return {
          fire: () => {
            this.answer = answerTracker();
            return armed.fire();
          },
        };
      }
    }
    const a = new Answering('a', log);
    // the engine's wait for answers is capped at a quarter of the deadline: far beyond this test's waits
    const rig = engineRig([a, new ArmableDevice('b', log)], { deadlineMs: 8000 });
    rig.poll();
    const stateFile = join(rig.stateDir, 'engine-state.json');
    const w = rig.engine.raise(shed('command:held'));
    assert.ok(w && a.answer, 'the fired send joined the wave');
    assert.ok(rig.engine.answersPending, 'the wave is collecting its answers');
    assert.equal(rig.engine.state, 'curtailing', 'the rack state is the engine\'s at once');
    await sleep(80);
    assert.deepEqual(rig.types(), [], 'no event while the answers are out');
    assert.equal(existsSync(stateFile), false, 'no save while the answers are out');
    assert.equal(rig.activations.length, 0);
    assert.ok(!log.some((l) => l.startsWith('complete')), 'no device finished yet');
    a.answer();
    const out = await w.done;
    assert.equal(out.ok, true);
    assert.equal(rig.engine.answersPending, undefined);
    for (let i = 0; i < 500 && !rig.types().includes('curtail.completed'); i++) await sleep(10);
    assert.ok(rig.types().includes('curtail.completed'), rig.types().join(' '));
    assert.deepEqual(rig.types().slice(0, 2), ['curtail.started', 'demand.added'], 'in the order documented');
    const started = rig.events.find((e) => e.type === 'curtail.started');
    assert.ok(started && started.durationMs !== undefined && started.durationMs < 60, `curtail.started counts to the dispatch, not to the answers (${started?.durationMs} ms)`);
    const saved = JSON.parse(readFileSync(stateFile, 'utf8')) as { demands: { key: string }[] };
    assert.deepEqual(
      saved.demands.map((d) => d.key),
      ['command:held'],
    );
    await rig.stop();
  });

  test('shed devices are not armed; they are armed again once restored', async () => {
    const log: string[] = [];
    const a = new ArmableDevice('a', log);
    const rig = engineRig([a]);
    rig.poll();
    const w = rig.engine.raise(shed('command:x'));
    await w?.done;
    const arms = a.arms;
    rig.poll();
    assert.equal(a.arms, arms, 'a shed device is not armed');
    rig.engine.clear('command:x', 'test');
    await rig.engine.restore('r1');
    for (let i = 0; i < 100 && a.arms === arms; i++) await sleep(10);
    assert.ok(a.arms > arms, 'armed again after the restore');
    const w2 = rig.engine.raise(shed('command:y'));
    assert.deepEqual(log.filter((l) => l.startsWith('fire')), ['fire:a', 'fire:a'], 'the second wave fires the new arm');
    await w2?.done;
    await rig.stop();
  });
});

describe('WaveAcks: acknowledgements before confirmations', () => {
  test('releases once every device acknowledged; a device counts once', async () => {
    const acks = new WaveAcks(3, 10_000);
    let released = false;
    void acks.all.then(() => (released = true));
    const [x, y, z] = [acks.member().ack, acks.member().ack, acks.member().ack];
    x();
    x();
    y();
    await sleep(5);
    assert.equal(released, false, 'two of three devices acknowledged (one twice)');
    z();
    await sleep(0);
    assert.equal(released, true);
  });

  test('a device that never acknowledges holds the others at most maxMs', async () => {
    const acks = new WaveAcks(2, 60);
    acks.member().ack();
    const t0 = Date.now();
    // the hold's own timer does not keep a process alive (unref): this test does
    const keepAlive = setTimeout(() => undefined, 5_000);
    await acks.all;
    clearTimeout(keepAlive);
    const waited = Date.now() - t0;
    assert.ok(waited >= 50, `held until the cap (${waited} ms)`);
  });

  test('an empty wave holds nothing', async () => {
    await new WaveAcks(0, 10_000).all;
  });
});

describe('fireArmed: picking the wave and firing in one loop', () => {
  /** A handle whose armed action records the order it was fired in; `arm: false` leaves it unarmed. */
  const handle = (id: string, order: string[], o: { arm?: boolean; stale?: boolean } = {}): DeviceHandle => ({
    id,
    driver: {} as DeviceDriver,
    feeds: [],
    hardCut: false,
    armed:
      o.arm === false
        ? undefined
        : {
            fire: () => {
              order.push(id);
              return o.stale ? undefined : ({ sentAt: 0, complete: () => Promise.reject(new Error('not used')), cancel: () => undefined } as unknown as FiredAction);
            },
          },
  });

  test('skips shed and in-flight devices, fires the others in plan order, and keeps todo and fired index for index', () => {
    const order: string[] = [];
    const plan = [handle('a', order), handle('shed', order), handle('b', order, { arm: false }), handle('busy', order), handle('c', order, { stale: true }), handle('d', order)];
    const { todo, fired } = fireArmed(plan, new Map([['shed', {}]]), new Map([['busy', {}]]));
    assert.deepEqual(
      todo.map((h) => h.id),
      ['a', 'b', 'c', 'd'],
    );
    assert.deepEqual(order, ['a', 'c', 'd'], 'shed and in-flight devices are not fired; an unarmed one has nothing to fire');
    assert.deepEqual(
      fired.map((f) => f !== undefined),
      [true, false, false, true],
      'the unarmed and the stale arm (fire() answered undefined) get the plain curtail',
    );
    for (const f of fired) if (f) assert.ok(f.sentBy >= f.at);
    assert.equal(plan[0]?.armed, undefined, 'an arm is used once');
    assert.notEqual(plan[1]?.armed, undefined, 'a shed device keeps its arm');
  });

  test('nothing to do: empty todo, nothing fired', () => {
    const order: string[] = [];
    const { todo, fired } = fireArmed([handle('x', order)], new Map([['x', {}]]), new Map());
    assert.deepEqual([todo.length, fired.length, order.length], [0, 0, 0]);
  });
});

describe('fanOut: fired devices are finished once the answers are in (settledOrAfter)', () => {
  const h = (id: string): DeviceHandle => ({ id, driver: {} as DeviceDriver, feeds: [], hardCut: false });
  const firedOne = { action: {} as FiredAction, at: 0, sentBy: 0 } satisfies Fired;
  const outcome = (id: string): ShedOutcome => ({ id, action: 'curtail', ok: true, dispatchAt: 0, steps: [] });

  test('the plain devices start at once; the fired ones wait for their answers, then all of them start', async () => {
    const started: string[] = [];
    let answered!: () => void;
    const all = new Promise<void>((r) => (answered = r));
    const todo = [h('f1'), h('p1'), h('f2')];
    const done = fanOut(todo, [firedOne, undefined, firedOne], (d, f) => {
      started.push(`${d.id}${f ? ' fired' : ''}`);
      return Promise.resolve(outcome(d.id));
    }, all);
    await sleep(30);
    assert.deepEqual(started, ['p1'], 'fired devices wait for the answers');
    answered();
    const outs = await done;
    assert.deepEqual(started, ['p1', 'f1 fired', 'f2 fired']);
    assert.deepEqual(outs.map((o) => o.id), ['f1', 'p1', 'f2'], 'results in todo order');
  });

  test('answers that never all come in hold the finishing at most the wait given to settledOrAfter', async () => {
    const started: string[] = [];
    const t0 = performance.now();
    const outs = await fanOut([h('f1')], [firedOne], (d) => {
      started.push(d.id);
      return Promise.resolve(outcome(d.id));
    }, settledOrAfter(new Promise<void>(() => undefined), 40));
    assert.ok(performance.now() - t0 >= 35, 'held until the cap');
    assert.deepEqual(started, ['f1']);
    assert.equal(outs.length, 1);
  });

  test('a failed batch of answers releases the finishing as a settled one does', async () => {
    const outs = await fanOut([h('f1')], [firedOne], (d) => Promise.resolve(outcome(d.id)), settledOrAfter(Promise.reject(new Error('x')), 10_000));
    assert.equal(outs[0]?.id, 'f1');
  });
});
