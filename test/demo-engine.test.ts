/**
 * The "done when", on the demo rack (mixed miner families, Modbus
 * meter, SNMP PDU, soft GPIO, mock-NVML GPUs, embedded broker): a scripted
 * frequency dip and a software GPIO edge each curtail the whole rack; the
 * evidence log holds every timing and the 100 ms rack power; load comes back
 * as a ramp after the hold-off.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { startDemo, type RunningDemo } from '../agent/demo.js';
import { exportEvidence } from '../agent/engine/evidence-export.js';
import type { EventMessage } from '../protocol/messages.js';
import { MqttWatch } from '../hil/testing/mqtt-watch.js';
import { freePort } from '../hil/testing/ports.js';
import { tempDir } from '../hil/testing/temp-dir.js';

let demo: RunningDemo;
let watch: MqttWatch;

before(async () => {
  demo = await startDemo(
    {
      asics: 3,
      stateDir: tempDir('rp-demo-'),
      families: ['luxos', 'antminer', 'whatsminer-v3'],
      site: 'eng',
      rack: 'r1',
      port: await freePort(),
      intervalMs: 300,
      fast: true,
      dipAtMs: 2000,
      tripAtMs: 12_000,
      holdOffMs: 1000,
    },
    pino({ level: 'silent' }),
  );
  watch = await MqttWatch.connect(demo.brokerUrl, `${demo.agent.topics.root}/#`, { protocolVersion: 4 });
});

after(async () => {
  await watch?.close();
  await demo?.stop();
});

const event = (pred: (e: EventMessage) => boolean, what: string, ms = 30_000) =>
  watch.waitFor((m) => m.topic === demo.agent.topics.events && pred(m.json as EventMessage), ms, what).then((m) => m.json as EventMessage);

const loads = (): string[] => demo.agent.devices.filter((d) => d.kind === 'asic' || d.kind === 'gpu').map((d) => d.id);

/** `forMs`: how long the condition must hold before it is raised (the decision is measured from its first sample). */
async function curtailedBy(signal: string, forMs: number): Promise<EventMessage> {
  const done = await event((e) => e.type === 'curtail.completed' && e.timings !== undefined && e.activation !== undefined && activationSignal(e) === signal, `curtail.completed for ${signal}`);
  assert.equal(done.timings?.failed, 0);
  assert.equal(done.timings?.devices, loads().length, 'every ASIC and GPU server was acted on');
  assert.ok((done.timings?.decisionMs ?? 999) < forMs + 50, `decision ${done.timings?.decisionMs} ms (condition held ${forMs} ms first)`);
  for (const s of demo.sims) assert.equal(s.sleeping(), true, `${s.family} asleep`);
  return done;
}

const started = new Map<string, string>();
function activationSignal(e: EventMessage): string | undefined {
  return e.activation ? started.get(e.activation) : undefined;
}

test('a scripted frequency dip curtails the whole rack; the ramp brings it back after the hold-off', async () => {
  const s = await event((e) => e.type === 'curtail.started' && e.demand?.key === 'signal:underfrequency', 'curtail.started by the dip');
  started.set(s.activation ?? '', 'underfrequency');
  await curtailedBy('underfrequency', 100);
  const sched = await event((e) => e.type === 'restore.scheduled', 'restore.scheduled');
  assert.equal(sched.durationMs, 1000, 'the signal\'s hold-off');
  const steps = [];
  const done = event((e) => e.type === 'restore.completed', 'restore.completed');
  steps.push(await event((e) => e.type === 'restore.step', 'first ramp step'));
  await done;
  const all = watch.messages.filter((m) => m.topic === demo.agent.topics.events && (m.json as EventMessage).type === 'restore.step');
  assert.ok(all.length >= 2, `a staggered ramp (${all.length} steps for ${loads().length} devices at 3 per step)`);
  assert.ok(Date.parse((await Promise.resolve(steps[0]!)).ts) >= Date.parse(sched.holdOffUntil ?? ''), 'the ramp starts after the hold-off');
  for (const sim of demo.sims) assert.equal(sim.sleeping(), false);
});

test('a software GPIO edge on the trip contact curtails the whole rack again', async () => {
  const s = await event((e) => e.type === 'curtail.started' && e.demand?.key === 'signal:utility-trip', 'curtail.started by the trip', 40_000);
  started.set(s.activation ?? '', 'utility-trip');
  const done = await curtailedBy('utility-trip', 0);
  assert.ok((done.timings?.lastDispatchMs ?? 99) < 50, `every command issued within milliseconds of the edge (${done.timings?.lastDispatchMs} ms)`);
  await event((e) => e.type === 'restore.completed' && Date.parse(e.ts) > Date.parse(done.ts), 'restore after the trip', 40_000);
});

test('the evidence log holds every activation with its timings and the 100 ms rack power', async () => {
  await demo.agent.evidence.flush();
  const out = JSON.parse(exportEvidence(demo.agent.evidenceDir, { format: 'json' })) as {
    activations: { id: string; trigger: { signal?: string }; signalAt: number; decidedAt: number; devices: { id: string; dispatchAt: number; ackAt?: number; confirmAt?: number }[]; powerBeforeW: number | null; power: { stepMs: number; w: (number | null)[] } | null }[];
  };
  const bySignal = new Map(out.activations.map((a) => [a.trigger.signal, a]));
  for (const sig of ['underfrequency', 'utility-trip']) {
    const a = bySignal.get(sig);
    assert.ok(a, `an activation for ${sig}`);
    assert.ok(a.decidedAt >= a.signalAt);
    assert.deepEqual(a.devices.map((d) => d.id).sort(), loads().sort());
    for (const d of a.devices) {
      assert.ok(d.dispatchAt >= a.signalAt && d.ackAt !== undefined && d.confirmAt !== undefined && d.confirmAt >= d.ackAt, `${sig}: ${d.id} has dispatch, ack and confirm times: ${JSON.stringify(d)}`);
    }
    assert.equal(a.power?.stepMs, 100);
    assert.ok((a.power?.w.filter((w) => w !== null).length ?? 0) > 50, 'rack power sampled at 100 ms around the activation');
    assert.ok(a.powerBeforeW !== null && a.powerBeforeW > 1000, `power before ${a.powerBeforeW}`);
  }
  const csv = exportEvidence(demo.agent.evidenceDir, { format: 'csv', table: 'devices' });
  assert.match(csv.split('\n')[0] ?? '', /activation/);
});
