/**
 * The demo rack's power side over MQTT (embedded broker): a scripted
 * frequency dip in the simulated meter and a software GPIO edge each raise a
 * signal published on `events` (and cleared afterwards); meter and PDU
 * readings appear in telemetry; a PDU outlet is switched off and on from the
 * test and confirmed by read-back.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { startDemo, type RunningDemo } from '../agent/demo.js';
import type { EventMessage, TelemetryMessage } from '../protocol/messages.js';
import { MqttWatch } from '../hil/testing/mqtt-watch.js';
import { freePort } from '../hil/testing/ports.js';
import { tempDir } from '../hil/testing/temp-dir.js';

let demo: RunningDemo;
let watch: MqttWatch;

before(async () => {
  demo = await startDemo(
    { asics: 2, families: ['luxos'], stateDir: tempDir('rp-demo-'), site: 'pw', rack: 'r1', port: await freePort(), intervalMs: 300, fast: true, dipAtMs: 1500, tripAtMs: 2500 },
    pino({ level: 'silent' }),
  );
  watch = await MqttWatch.connect(demo.brokerUrl, `${demo.agent.topics.root}/#`, { protocolVersion: 4 });
});

after(async () => {
  await watch?.close();
  await demo?.stop();
});

const event = (pred: (e: EventMessage) => boolean, what: string) =>
  watch.waitFor((m) => m.topic === demo.agent.topics.events && pred(m.json as EventMessage), 20_000, what);

test('a scripted frequency dip raises and then clears the under-frequency signal', async () => {
  const raised = (await event((e) => e.type === 'signal.raised' && e.signal === 'underfrequency', 'underfrequency raised')).json as EventMessage;
  assert.equal(raised.device, 'meter-01');
  assert.equal(raised.channel, 'frequencyHz');
  assert.equal(raised.reason, 'threshold');
  assert.ok(typeof raised.value === 'number' && raised.value < 59.85, String(raised.value));
  const cleared = (await event((e) => e.type === 'signal.cleared' && e.signal === 'underfrequency', 'underfrequency cleared')).json as EventMessage;
  assert.ok(typeof cleared.value === 'number' && cleared.value >= 59.9);
  // the signal's event waits for the wave's answers, but still comes before the wave's own events
  const types = watch.messages
    .filter((m) => m.topic === demo.agent.topics.events)
    .map((m) => m.json as EventMessage)
    .filter((e) => e.signal === 'underfrequency' || e.demand?.key === 'signal:underfrequency')
    .map((e) => e.type);
  assert.deepEqual(types.slice(0, 3), ['signal.raised', 'curtail.started', 'demand.added'], types.join(' '));
});

test('a software GPIO edge on the trip contact raises and clears the utility-trip signal, with the edge time', async () => {
  const raised = (await event((e) => e.type === 'signal.raised' && e.signal === 'utility-trip', 'utility-trip raised')).json as EventMessage;
  assert.equal(raised.device, 'utility-trip');
  assert.equal(raised.value, 1);
  assert.ok(raised.measuredAt && Date.parse(raised.measuredAt) <= Date.parse(raised.ts));
  await event((e) => e.type === 'signal.cleared' && e.signal === 'utility-trip', 'utility-trip cleared');
  const st = await watch.waitFor(
    (m) => m.topic === demo.agent.topics.state && Array.isArray((m.json as { signals?: unknown }).signals),
    5_000,
    'state with signals',
  );
  const ids = (st.json as { signals: { id: string }[] }).signals.map((s) => s.id).sort();
  assert.deepEqual(ids, ['underfrequency', 'utility-trip']);
});

test('meter, PDU, GPIO and controller readings appear in telemetry; the loads are not double counted', async () => {
  const m = await watch.next(
    (x) => x.topic === demo.agent.topics.telemetry && (x.json as TelemetryMessage).devices.every((d) => d.freshness === 'fresh'),
    20_000,
    'telemetry with every device fresh',
  );
  const t = m.json as TelemetryMessage;
  const by = new Map(t.devices.map((d) => [d.id, d]));
  assert.equal(by.get('meter-01')?.kind, 'meter');
  assert.equal(typeof by.get('meter-01')?.frequencyHz, 'number');
  assert.equal(by.get('pdu-01')?.kind, 'pdu');
  assert.equal(by.get('pdu-01')?.outlet1On, true);
  assert.equal(typeof by.get('pdu-01')?.outlet1PowerW, 'number');
  assert.equal(by.get('utility-trip')?.kind, 'gpio');
  assert.equal(by.get('controller')?.kind, 'controller');
  // the loads (miners and GPU servers) are summed once; meters and the PDU measure the same power again
  const loads = t.devices.filter((d) => d.kind === 'asic' || d.kind === 'gpu').reduce((s, d) => s + (d.powerW ?? 0), 0);
  assert.equal(t.summary.powerW, loads);
  assert.equal(typeof t.summary.meteredPowerW, 'number');
});

test('an outlet is switched off and on again from a test, confirmed by read-back', async () => {
  const pdu = demo.agent.devices.find((d) => d.id === 'pdu-01');
  assert.ok(pdu?.switchOutlet && pdu.capabilities.switchOutlet);
  const off = await pdu.switchOutlet('2', false, { deadlineMs: 10_000 });
  assert.equal(off.confirmed, true);
  assert.equal(off.reading.fields.outlet2On, false);
  await watch.next(
    (x) => x.topic === demo.agent.topics.telemetry && (x.json as TelemetryMessage).devices.some((d) => d.id === 'pdu-01' && d.outlet2On === false),
    10_000,
    'telemetry with outlet 2 off',
  );
  const on = await pdu.switchOutlet('2', true, { deadlineMs: 10_000 });
  assert.equal(on.reading.fields.outlet2On, true);
});
