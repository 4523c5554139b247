/**
 * The demo rack: every firmware family's simulator, the embedded aedes
 * broker and the agent in-process; curtail and restore over MQTT with every
 * device confirmed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { demoBanner, parseDemoArgs, startDemo, type DemoOptions, type RunningDemo } from '../agent/demo.js';
import { SIM_FAMILIES } from '../hil/sim/catalog.js';
import { MqttWatch, type Received } from '../hil/testing/mqtt-watch.js';
import { freePort } from '../hil/testing/ports.js';
import { commandResultSchema, telemetryMessageSchema, type CommandResult, type TelemetryMessage } from '../protocol/messages.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const WAIT = 60_000;

/** The miners of a telemetry message (the rack also reports its meter, PDU, GPIO lines and controller). */
const asics = (t: TelemetryMessage) => t.devices.filter((d) => d.kind === 'asic');

describe('demo command line', () => {
  test('defaults: one miner per family, every family', () => {
    const r = parseDemoArgs([]);
    assert.ok(r.ok);
    assert.equal(r.opts.asics, undefined);
    assert.equal(r.opts.families, undefined);
    assert.equal(r.logLevel, 'warn');
    assert.equal(r.opts.healthPort, 9108, 'the demo serves /healthz and /metrics on the documented port');
    const bad = parseDemoArgs(['--health-port', '70000']);
    assert.ok(!bad.ok && /--health-port: expected an integer from 0 to 65535, got "70000"/.test(bad.error));
  });
  test('--families restricts and validates, naming unknown families and the known ones', () => {
    const good = parseDemoArgs(['--families', 'luxos,whatsminer-v3', '--asics', '6', '--fast']);
    assert.ok(good.ok);
    assert.deepEqual(good.opts.families, ['luxos', 'whatsminer-v3']);
    assert.equal(good.opts.asics, 6);
    assert.equal(good.opts.fast, true);
    const bad = parseDemoArgs(['--families', 'luxos,whatsminer', '--asics', '0', '--site', 'a b']);
    assert.equal(bad.ok, false);
    const msg = bad.ok ? '' : bad.error;
    assert.match(msg, /--families: unknown family "whatsminer" \(known: [^)]*whatsminer-v2, whatsminer-v3/);
    assert.match(msg, /--asics: expected an integer from 1 to 512, got "0"/);
    assert.match(msg, /--site: "a b"/);
  });
  test('startDemo refuses unknown families before starting anything', async () => {
    const opts: DemoOptions = { families: ['nope'], site: 's', rack: 'r', port: 1, intervalMs: 1000 };
    await assert.rejects(startDemo(opts, pino({ level: 'silent' })), /--families: unknown family "nope"/);
  });
});

describe('demo rack of mixed families over MQTT (embedded aedes)', () => {
  const n = SIM_FAMILIES.length;
  let demo: RunningDemo;
  let watch: MqttWatch;
  let opts: DemoOptions;

  before(async () => {
    opts = { stateDir: tempDir('rp-demo-'), site: 'demo-test', rack: 'mixed', port: await freePort(), intervalMs: 300, fast: true };
    demo = await startDemo(opts, pino({ level: 'silent' }));
    watch = await MqttWatch.connect(demo.brokerUrl, `${demo.agent.topics.root}/#`, { protocolVersion: 4 });
  });

  after(async () => {
    await watch?.close();
    await demo?.stop();
  });

  const telemetry = (pred: (m: TelemetryMessage) => boolean, what: string): Promise<Received> =>
    watch.next((m) => m.topic === demo.agent.topics.telemetry && pred(m.json as TelemetryMessage), WAIT, what);

  const run = async (command: 'curtail' | 'restore'): Promise<CommandResult> => {
    const id = `demo-test-${command}-${Date.now()}`;
    await watch.publish(demo.agent.topics.cmd, JSON.stringify({ id, command }));
    const m = await watch.waitFor(
      (x) => x.topic === demo.agent.topics.cmdResult && (x.json as CommandResult).id === id && (x.json as CommandResult).status !== 'accepted',
      WAIT,
      `${command} result`,
    );
    return commandResultSchema.parse(m.json);
  };

  test('one miner of every family, and the banner lists them', () => {
    assert.equal(demo.sims.length, n);
    assert.deepEqual(demo.sims.map((s) => s.family).sort(), [...SIM_FAMILIES].sort());
    const banner = demoBanner(demo, opts);
    assert.match(banner, new RegExp(`${n} simulated miner\\(s\\) of ${n} firmware families`));
    for (const f of SIM_FAMILIES) assert.ok(banner.includes(`(${f}) x1`), `banner names ${f}`);
    const health = demo.agent.health.address();
    assert.ok(health, 'the health endpoint listens');
    assert.ok(banner.includes(`curl -s http://127.0.0.1:${health.port}/healthz`), 'the banner says where /healthz is');
  });

  test('telemetry lists every device, fresh and running', async () => {
    const m = await telemetry((x) => asics(x).length === n && x.devices.every((d) => d.freshness === 'fresh' && d.state === 'running'), 'every device fresh and running');
    const tm = telemetryMessageSchema.parse(m.json);
    assert.deepEqual(asics(tm).map((d) => d.id).sort(), demo.sims.map((s, i) => `${s.family}-${String(i + 1).padStart(2, '0')}`).sort());
    // the rack's power side rides along: meter, PDU, GPIO lines, controller
    const others = tm.devices.filter((d) => d.kind !== 'asic').map((d) => d.kind).sort();
    const gpuRack = 'skip' in demo.gpus ? [] : ['gpu', 'gpu'];
    assert.deepEqual(others, ['controller', 'gpio', 'gpio', ...gpuRack, 'meter', 'pdu'].sort());
    for (const d of asics(tm)) {
      assert.equal(d.kind, 'asic');
      assert.ok(typeof d.powerW === 'number' && d.powerW > 1000, `${d.id} powerW ${d.powerW}`);
      assert.ok(typeof d.hashrateThs === 'number' && d.hashrateThs > 0, `${d.id} hashrate ${d.hashrateThs}`);
    }
  });

  test('curtail confirms on every family, then restore brings every miner back', async () => {
    const c = await run('curtail');
    assert.equal(c.status, 'succeeded', c.error?.message);
    // every miner, plus the two simulated GPU servers (capped, not cut) when the mock NVML could be built
    const curtailable = n + ('skip' in demo.gpus ? 0 : 2);
    assert.equal(c.result?.devices?.length, curtailable);
    for (const d of c.result?.devices ?? []) assert.ok(d.ok, `${d.id}: ${JSON.stringify(d)}`);
    for (const s of demo.sims) assert.equal(s.sleeping(), true, `${s.family} asleep`);
    await telemetry((x) => asics(x).length === n && asics(x).every((d) => d.state === 'curtailed' && d.freshness === 'fresh'), 'every miner curtailed');

    const r = await run('restore');
    assert.equal(r.status, 'succeeded', r.error?.message);
    assert.equal(r.result?.devices?.length, curtailable);
    for (const d of r.result?.devices ?? []) assert.ok(d.ok, `${d.id}: ${JSON.stringify(d)}`);
    for (const s of demo.sims) assert.equal(s.sleeping(), false, `${s.family} awake`);
    await telemetry((x) => asics(x).length === n && asics(x).every((d) => d.state === 'running' && d.freshness === 'fresh'), 'every miner running');
  });
});
