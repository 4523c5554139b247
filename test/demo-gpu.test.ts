/**
 * GPUs in the demo rack (mock NVML through the real binding): one server read
 * locally, one through `rackpilot gpu-node` on loopback. A rack curtail over
 * MQTT caps every GPU to its floor (never cuts it); a restore returns each
 * GPU to the exact limit that was in force before, not to the default.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { startDemo, type RunningDemo } from '../agent/demo.js';
import type { CommandResult, TelemetryMessage } from '../protocol/messages.js';
import { MqttWatch } from '../hil/testing/mqtt-watch.js';
import { freePort } from '../hil/testing/ports.js';
import { buildMockNvml } from '../hil/testing/mock-nvml.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const build = buildMockNvml();
const skip = 'skip' in build ? build.skip : false;

let demo: RunningDemo;
let watch: MqttWatch;

before(async () => {
  if (skip) return;
  demo = await startDemo({ asics: 1, families: ['luxos'], stateDir: tempDir('rp-demo-'), site: 'gpu', rack: 'r1', port: await freePort(), intervalMs: 300, fast: true }, pino({ level: 'silent' }));
  watch = await MqttWatch.connect(demo.brokerUrl, `${demo.agent.topics.root}/#`, { protocolVersion: 4 });
});

after(async () => {
  await watch?.close();
  await demo?.stop();
});

const gpuLimits = (t: TelemetryMessage, id: string): { limit: number[]; enforced: number[] } => {
  const d = t.devices.find((x) => x.id === id);
  assert.ok(d, `${id} in telemetry`);
  return {
    limit: [d.gpu0PowerLimitW, d.gpu1PowerLimitW] as number[],
    enforced: [d.gpu0EnforcedLimitW, d.gpu1EnforcedLimitW] as number[],
  };
};

async function command(name: 'curtail' | 'restore'): Promise<CommandResult> {
  const id = `gpu-${name}-${Date.now()}`;
  await watch.publish(demo.agent.topics.cmd, JSON.stringify({ id, command: name }));
  const m = await watch.waitFor((x) => x.topic === demo.agent.topics.cmdResult && (x.json as CommandResult).id === id && (x.json as CommandResult).status !== 'accepted', 30_000, `${name} result`);
  return m.json as CommandResult;
}

test('rack curtail caps GPUs (local and through gpu-node) to their floor; restore returns the exact previous limits', { skip }, async () => {
  const servers = ['gpu-server-01', 'gpu-server-02'];
  // an operator's own limits before the curtail: 640 W and 650 W per GPU, not the 700 W default
  const previous: Record<string, number> = { 'gpu-server-01': 640, 'gpu-server-02': 650 };
  for (const id of servers) {
    const d = demo.agent.devices.find((x) => x.id === id);
    assert.ok(d?.capabilities.powerTarget, `${id} takes a power target`);
    await d.setPowerTarget!((previous[id] as number) * 2, { deadlineMs: 10_000 });
  }
  const before = await watch.next(
    (m) => m.topic === demo.agent.topics.telemetry && servers.every((id) => gpuLimits(m.json as TelemetryMessage, id).limit.every((l) => l === previous[id])),
    20_000,
    'telemetry with the operator limits',
  );
  assert.ok(before);

  const c = await command('curtail');
  assert.equal(c.status, 'succeeded', JSON.stringify(c));
  for (const id of servers) assert.ok(c.result?.devices?.some((d) => d.id === id && d.ok), `${id} confirmed`);
  const capped = (await watch.next(
    (m) => m.topic === demo.agent.topics.telemetry && servers.every((id) => gpuLimits(m.json as TelemetryMessage, id).enforced.every((l) => l <= 350)),
    20_000,
    'telemetry with every GPU capped to 350 W',
  )).json as TelemetryMessage;
  for (const id of servers) {
    const g = capped.devices.find((x) => x.id === id);
    assert.equal(g?.state, 'curtailed');
    assert.ok((g?.powerW ?? 0) > 0, 'capped, not cut: the GPUs still draw power');
  }

  const r = await command('restore');
  assert.equal(r.status, 'succeeded', JSON.stringify(r));
  await watch.next(
    (m) => m.topic === demo.agent.topics.telemetry && servers.every((id) => gpuLimits(m.json as TelemetryMessage, id).limit.every((l) => l === previous[id])),
    20_000,
    'telemetry with the exact previous limits back',
  );
});
