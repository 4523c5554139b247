/**
 * The local health endpoint (agent/health): a real agent on simulated miners
 * and an embedded aedes broker, /healthz and /metrics read over HTTP.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { Agent } from '../agent/agent.js';
import { validateConfig, type AgentConfig } from '../agent/config.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../agent/embedded-broker.js';
import { DEFAULT_HEALTH_PORT, isLoopback } from '../agent/health/config.js';
import type { HealthSources } from '../agent/health/sources.js';
import { healthReport, type HealthReport } from '../agent/health/status.js';
import { AGENT_VERSION } from '../agent/version.js';
import type { CommandResult } from '../protocol/messages.js';
import { rackTopics } from '../protocol/topics.js';
import { MqttWatch } from '../hil/testing/mqtt-watch.js';
import { freePort } from '../hil/testing/ports.js';
import { parsePromText, type PromText } from '../hil/testing/prom-text.js';
import { startSimRack, type SimRack } from '../hil/testing/rack-fixture.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const silent = pino({ level: 'silent' });

interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

async function http(agent: Agent, path: string, method = 'GET'): Promise<Answer> {
  const a = agent.health.address();
  assert.ok(a, 'the health endpoint listens');
  const res = await fetch(`http://127.0.0.1:${a.port}${path}`, { method });
  return { status: res.status, headers: res.headers, body: await res.text() };
}

async function healthz(agent: Agent): Promise<{ status: number; report: HealthReport }> {
  const r = await http(agent, '/healthz');
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
  return { status: r.status, report: JSON.parse(r.body) as HealthReport };
}

async function metrics(agent: Agent): Promise<PromText> {
  const r = await http(agent, '/metrics');
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parsePromText(r.body);
}

/** Polls `check` until it returns a value (not a timing assertion: the deadline only ends a hung test). */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function config(raw: Record<string, unknown>): AgentConfig {
  const res = validateConfig(raw);
  if (!res.ok) throw new Error(res.errors.join('\n'));
  return res.config;
}

/** An agent without devices whose broker does not exist (it keeps reconnecting in the background). */
async function bareConfig(health: Record<string, unknown>): Promise<AgentConfig> {
  return config({
    site: 'hz',
    rack: 'bare',
    mqtt: { url: `mqtt://127.0.0.1:${await freePort()}`, reconnect: { minMs: 100, maxMs: 1000 } },
    stateDir: tempDir('rp-health-'),
    log: { level: 'silent' },
    health,
  });
}

describe('health endpoint on a simulated rack', () => {
  const site = 'hz';
  const rack = 'r1';
  const t = rackTopics(site, rack);
  let broker: EmbeddedBroker | undefined;
  let sims: SimRack;
  let agent: Agent;
  let watch: MqttWatch;
  let stopped = false;

  const result = (id: string, status: string): Promise<CommandResult> =>
    watch
      .waitFor((m) => m.topic === t.cmdResult && (m.json as CommandResult).id === id && (m.json as CommandResult).status === status, 20_000, `result ${id} ${status}`)
      .then((m) => m.json as CommandResult);

  before(async () => {
    broker = await startEmbeddedBroker('127.0.0.1', await freePort());
    sims = await startSimRack(3);
    agent = new Agent(config({ ...sims.raw(broker.url, site, rack), health: { port: 0 } }), silent);
    await agent.start();
    watch = await MqttWatch.connect(broker.url, `${t.root}/#`, { protocolVersion: 4 });
  });

  after(async () => {
    if (!stopped) await agent?.stop();
    await watch?.close();
    await sims?.close();
    await broker?.close();
  });

  test('/healthz: 200 ok once started, the broker connected and every device read', async () => {
    const { status, report } = await until('a healthy report', async () => {
      const h = await healthz(agent);
      return h.report.status === 'ok' ? h : undefined;
    });
    assert.equal(status, 200);
    assert.equal(report.ready, true);
    assert.deepEqual(report.reasons, []);
    assert.equal(report.site, site);
    assert.equal(report.rack, rack);
    assert.equal(report.version, AGENT_VERSION);
    assert.equal(report.broker.state, 'connected');
    assert.ok(report.broker.connects >= 1);
    assert.ok(Number.isFinite(Date.parse(report.broker.since)));
    assert.deepEqual(report.devices.stale, []);
    assert.equal(report.devices.total, 3);
    assert.equal(report.curtailment.rackState, 'running');
    assert.equal(report.curtailment.activeDemands, 0);
    assert.equal(report.curtailment.shedDevices, 0);
    assert.ok(report.spool, 'the spool is open');
    assert.equal(typeof report.spool.diskBytes, 'number');
    assert.equal(typeof report.eventLoop.lagMs, 'number');
    assert.equal(report.eventLoop.maxLoopLagMs, 1000);

    const head = await http(agent, '/healthz', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.ok(Number(head.headers.get('content-length')) > 0);
  });

  test('/metrics: Prometheus text with the rack\'s devices, commands, poll cycles, MQTT and spool', async () => {
    // every miner reads at full power (the simulators draw 3000, 3010 and 3020 W)
    const m = await until('power of every miner', async () => {
      const p = await metrics(agent);
      return sims.sims.every((_, i) => p.value('rackpilot_device_power_watts', { device: `m${i + 1}` }) !== undefined) ? p : undefined;
    });
    sims.sims.forEach((s, i) => {
      const labels = { device: `m${i + 1}`, kind: 'asic' };
      assert.equal(m.value('rackpilot_device_power_watts', labels), s.power.powerW());
      assert.equal(m.value('rackpilot_device_up', labels), 1);
      assert.equal(m.value('rackpilot_device_fresh', labels), 1);
      assert.ok((m.value('rackpilot_device_read_duration_seconds', labels) ?? -1) >= 0);
      assert.ok((m.value('rackpilot_device_reading_age_seconds', labels) ?? -1) >= 0);
      assert.equal(m.value('rackpilot_device_state', { ...labels, state: 'running' }), 1);
      assert.equal(m.value('rackpilot_device_state', { ...labels, state: 'curtailed' }), 0);
    });
    assert.equal(m.families.get('rackpilot_device_power_watts')?.type, 'gauge');
    assert.equal(m.value('rackpilot_agent_info', { version: AGENT_VERSION, site, rack }), 1);
    assert.equal(m.value('rackpilot_agent_ready'), 1);
    assert.equal(m.value('rackpilot_mqtt_connected'), 1);
    assert.ok((m.value('rackpilot_mqtt_connects_total') ?? 0) >= 1);
    assert.equal(m.families.get('rackpilot_mqtt_connects_total')?.type, 'counter');
    assert.equal(m.value('rackpilot_rack_state', { state: 'running' }), 1);
    assert.equal(m.value('rackpilot_rack_state', { state: 'curtailed' }), 0);
    assert.equal(m.families.get('rackpilot_poll_cycle_duration_seconds')?.type, 'histogram');
    assert.ok((m.value('rackpilot_poll_cycle_duration_seconds_count') ?? 0) > 0);
    assert.ok((m.value('rackpilot_poll_cycle_duration_seconds_bucket', { le: '+Inf' }) ?? 0) > 0);
    assert.equal(m.value('rackpilot_spool_open'), 1);
    assert.equal(typeof m.value('rackpilot_spool_disk_bytes'), 'number');
    assert.equal(typeof m.value('rackpilot_spool_pending_messages', { class: 'telemetry' }), 'number');
    // process and Node.js metrics come from prom-client's default collectors, on this agent's registry
    assert.ok(m.families.has('process_cpu_user_seconds_total'));
    assert.ok(m.families.has('nodejs_eventloop_lag_p99_seconds'));
    assert.equal(m.value('rackpilot_command_results_total', { command: 'ping', status: 'succeeded' }), 0);

    // commands over MQTT are counted by command and status
    await watch.publish(t.cmd, JSON.stringify({ id: 'hz-ping-1', command: 'ping' }));
    await result('hz-ping-1', 'succeeded');
    await watch.publish(t.cmd, JSON.stringify({ id: 'hz-curtail-1', command: 'curtail' }));
    await result('hz-curtail-1', 'succeeded');
    const c = await metrics(agent);
    assert.equal(c.value('rackpilot_command_results_total', { command: 'ping', status: 'succeeded' }), 1);
    assert.equal(c.value('rackpilot_command_results_total', { command: 'curtail', status: 'accepted' }), 1);
    assert.equal(c.value('rackpilot_command_results_total', { command: 'curtail', status: 'succeeded' }), 1);
    assert.equal(c.families.get('rackpilot_command_results_total')?.type, 'counter');
    assert.equal(c.value('rackpilot_rack_state', { state: 'curtailed' }), 1);
    assert.equal(c.value('rackpilot_demands_active', { source: 'command' }), 1);
    assert.equal(c.value('rackpilot_demands_active', { source: 'signal' }), 0);
    assert.equal(c.value('rackpilot_shed_devices'), 3);
    const h = await healthz(agent);
    assert.equal(h.report.curtailment.rackState, 'curtailed');
    assert.equal(h.report.curtailment.activeDemands, 1);
    assert.equal(h.report.curtailment.shedDevices, 3);

    await watch.publish(t.cmd, JSON.stringify({ id: 'hz-restore-1', command: 'restore' }));
    await result('hz-restore-1', 'succeeded');
    const r = await metrics(agent);
    assert.equal(r.value('rackpilot_demands_active', { source: 'command' }), 0);
    assert.equal(r.value('rackpilot_command_results_total', { command: 'restore', status: 'succeeded' }), 1);
    for (const s of sims.sims) assert.equal(s.sleeping, false);
  });

  test('other paths: 404; other methods: 405 with Allow; HEAD /metrics has no body', async () => {
    assert.equal((await http(agent, '/')).status, 404);
    assert.equal((await http(agent, '/metrics/x')).status, 404);
    assert.equal((await http(agent, '/healthz?verbose=1')).status, 200);
    const post = await http(agent, '/healthz', 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    assert.equal((await http(agent, '/metrics', 'DELETE')).status, 405);
    const head = await http(agent, '/metrics', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
  });

  test('a miner that stops answering is listed as stale: degraded, still 200', async () => {
    await sims.sims[2]!.close();
    const { status, report } = await until('m3 stale', async () => {
      const h = await healthz(agent);
      return h.report.devices.stale.some((d) => d.id === 'm3') ? h : undefined;
    });
    assert.equal(status, 200);
    assert.equal(report.status, 'degraded');
    assert.deepEqual(report.devices.stale.map((d) => d.id), ['m3']);
    const m3 = report.devices.stale[0]!;
    assert.equal(m3.kind, 'asic');
    assert.equal(m3.freshness, 'stale');
    assert.equal(m3.state, 'unreachable');
    assert.equal(typeof m3.ageMs, 'number');
    assert.ok(report.reasons.some((r) => r.includes('1 device(s) without fresh readings')));
    const m = await metrics(agent);
    const labels = { device: 'm3', kind: 'asic' };
    assert.equal(m.value('rackpilot_device_fresh', labels), 0);
    assert.equal(m.value('rackpilot_device_up', labels), 0);
    assert.equal(m.value('rackpilot_device_state', { ...labels, state: 'unreachable' }), 1);
    assert.equal(m.value('rackpilot_device_power_watts', labels), undefined, 'no power from a stale reading');
    assert.equal(m.value('rackpilot_device_fresh', { device: 'm1' }), 1);
  });

  test('broker gone: reported disconnected (degraded), still 200: the agent curtails locally', async () => {
    await broker?.close();
    broker = undefined;
    const { status, report } = await until('broker disconnected', async () => {
      const h = await healthz(agent);
      return h.report.broker.state === 'disconnected' ? h : undefined;
    });
    assert.equal(status, 200);
    assert.equal(report.status, 'degraded');
    assert.equal(report.ready, true);
    assert.ok(report.broker.connects >= 1);
    assert.ok(report.reasons.some((r) => r.startsWith('broker disconnected')));
    const m = await metrics(agent);
    assert.equal(m.value('rackpilot_mqtt_connected'), 0);
  });

  test('stop(): the endpoint closes', async () => {
    const port = agent.health.address()?.port;
    assert.ok(port);
    stopped = true;
    await agent.stop();
    assert.equal(agent.health.address(), null);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
  });
});

describe('health endpoint edge cases', () => {
  test('before the agent has started: 503, ready false', async () => {
    const agent = new Agent(await bareConfig({ port: 0 }), silent);
    try {
      await agent.health.start();
      const { status, report } = await healthz(agent);
      assert.equal(status, 503);
      assert.equal(report.status, 'unhealthy');
      assert.equal(report.ready, false);
      assert.equal(report.broker.state, 'connecting');
      assert.equal(report.spool, null);
      assert.ok(report.reasons.includes('agent not ready (starting or stopping)'));
      const m = await metrics(agent);
      assert.equal(m.value('rackpilot_agent_ready'), 0);
      assert.equal(m.value('rackpilot_spool_open'), 0);
      assert.equal(m.find('rackpilot_spool_pending_messages').length, 0, 'no pending counts while the spool is not open');
    } finally {
      await agent.health.close();
    }
  });

  test('event loop lag above health.maxLoopLagMs: unhealthy (503)', async () => {
    const agent = new Agent(await bareConfig({ port: 0, maxLoopLagMs: 200 }), silent);
    const c = agent.config;
    const sources: HealthSources = {
      site: c.site,
      rack: c.rack,
      version: AGENT_VERSION,
      devices: agent.devices,
      latest: agent.poller.latest,
      readMs: agent.poller.readMs,
      poll: c.poll,
      engine: agent.engine,
      rackState: () => agent.rackState,
      bridge: agent.bridge,
      spool: agent.spool,
      spoolOpen: () => false,
    };
    const loop = { windowMs: 10_000, p50Ms: 1, p99Ms: 250, maxMs: 400 };
    const slow = healthReport(sources, { ready: true, startedAt: Date.now(), maxLoopLagMs: 200, loop, lagMs: 0 });
    assert.equal(slow.status, 'unhealthy');
    assert.ok(slow.reasons.some((r) => r.includes('event loop lag 250 ms is above health.maxLoopLagMs (200 ms)')));
    const now = healthReport(sources, { ready: true, startedAt: Date.now(), maxLoopLagMs: 200, loop: { ...loop, p99Ms: 5 }, lagMs: 300 });
    assert.equal(now.status, 'unhealthy', 'the delay measured at the request counts too');
    const fine = healthReport(sources, { ready: true, startedAt: Date.now(), maxLoopLagMs: 200, loop: { ...loop, p99Ms: 5 }, lagMs: 1 });
    assert.equal(fine.status, 'degraded', 'not connected yet: degraded, not unhealthy');
  });

  test('a port in use does not stop the agent: logged, and it runs without the endpoint', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    const agent = new Agent(await bareConfig({ port }), log);
    try {
      await agent.start();
      assert.equal(agent.health.address(), null);
      const err = lines.find((l) => l.component === 'health' && l.level === 50);
      assert.ok(err, 'an error is logged');
      assert.equal(err.code, 'EADDRINUSE');
      assert.equal(err.port, port);
      assert.match(String(err.msg), /running without \/healthz and \/metrics/);
    } finally {
      await agent.stop();
      await new Promise<void>((r) => blocker.close(() => r()));
    }
  });

  test('health.enabled false: nothing listens, no metrics registry', async () => {
    const agent = new Agent(await bareConfig({ enabled: false }), silent);
    try {
      await agent.start();
      assert.equal(agent.health.address(), null);
      assert.equal(agent.health.metrics, undefined);
    } finally {
      await agent.stop();
    }
  });
});

describe('health config', () => {
  const base = { site: 's', rack: 'r', mqtt: { url: 'mqtt://127.0.0.1:1883' } };

  test('defaults: on, 127.0.0.1:9108, 1000 ms', () => {
    const res = validateConfig(base);
    assert.ok(res.ok);
    assert.deepEqual(res.config.health, { enabled: true, listen: '127.0.0.1', port: DEFAULT_HEALTH_PORT, maxLoopLagMs: 1000 });
    assert.equal(DEFAULT_HEALTH_PORT, 9108);
  });

  test('every error is reported with its path', () => {
    const res = validateConfig({ ...base, health: { port: 70000, listen: 'not a host!', maxLoopLagMs: 'soon', extra: 1 } });
    assert.equal(res.ok, false);
    const errors = res.ok ? [] : res.errors;
    assert.ok(errors.some((e) => e.startsWith('health.port: ') && e.includes('65535')), errors.join('\n'));
    assert.ok(errors.some((e) => e.startsWith('health.listen: expected an IP address or host name')), errors.join('\n'));
    assert.ok(errors.some((e) => e.startsWith('health.maxLoopLagMs: expected number')), errors.join('\n'));
    assert.ok(errors.some((e) => e.startsWith('health: ') && e.includes('extra')), errors.join('\n'));
    const neg = validateConfig({ ...base, health: { port: -1 } });
    assert.ok(!neg.ok && neg.errors.some((e) => e.startsWith('health.port: ')));
  });

  test('listen addresses: IPs and host names; loopback is told apart', () => {
    for (const listen of ['127.0.0.1', '::1', 'localhost', '0.0.0.0', '10.1.2.3', 'rack-7.example.net', '::']) {
      const res = validateConfig({ ...base, health: { listen } });
      assert.ok(res.ok, `${listen}: ${res.ok ? '' : res.errors.join('; ')}`);
    }
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1']) assert.equal(isLoopback(h), true, h);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', 'rack-7.example.net']) assert.equal(isLoopback(h), false, h);
  });
});
