/**
 * The engine against simulators over the real wire protocols: a miner that
 * ignores its curtail gets its outlet cut in the SNMP PDU simulator; an agent
 * killed with SIGKILL in the middle of a curtailment keeps the rack curtailed
 * after its restart and never restores load by itself; a miner that never
 * answers its armed curtail does not hold up the confirmation of the others.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { Agent } from '../agent/agent.js';
import { validateConfig } from '../agent/config.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../agent/embedded-broker.js';
import { sleep } from '../drivers/lib/deadline.js';
import { SIM_CATALOG } from '../hil/sim/catalog.js';
import type { AntminerSim } from '../hil/sim/antminer-sim.js';
import type { LuxosSim } from '../hil/sim/luxos-sim.js';
import { SnmpPduSim } from '../hil/sim/snmp-pdu-sim.js';
import { MqttWatch } from '../hil/testing/mqtt-watch.js';
import { freePort } from '../hil/testing/ports.js';
import { startSimRack } from '../hil/testing/rack-fixture.js';
import { cliRun } from '../hil/testing/cli-run.js';
import type { CommandResult, StateMessage } from '../protocol/messages.js';
import { rackTopics } from '../protocol/topics.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const silent = pino({ level: 'silent' });

async function until(what: string, cond: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

describe('engine end-to-end', () => {
  let broker: EmbeddedBroker;
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  /**
   * An agent of rack `rack` on the broker at `url` (fast polls, silent log, a
   * fresh state dir) with `over` on top, started, with an MQTT watch on its
   * topics; resolved once it is connected and every device in `fresh` was read.
   */
  async function startAgent(url: string, rack: string, over: Record<string, unknown>, fresh: readonly string[]): Promise<{ agent: Agent; watch: MqttWatch }> {
    const res = validateConfig({
      site: 's',
      rack,
      mqtt: { url, protocolVersion: 4, reconnect: { minMs: 100, maxMs: 1000 } },
      log: { level: 'silent' },
      stateDir: tempDir(`rp-${rack}-`),
      health: { port: 0 },
      ...over,
    });
    assert.ok(res.ok, res.ok ? '' : res.errors.join('\n'));
    const agent = new Agent(res.config, silent);
    await agent.start();
    cleanups.push(() => agent.stop());
    const watch = await MqttWatch.connect(url, `${agent.topics.root}/#`);
    cleanups.push(() => watch.close());
    await until('agent connected', () => agent.bridge.connected);
    await until('first poll', () => fresh.every((id) => agent.poller.latest.get(id)?.freshness === 'fresh'));
    return { agent, watch };
  }

  test('a miner that ignores its curtail and has no alternative gets its PDU outlet cut; restore switches it back on first', async () => {
    broker = await startEmbeddedBroker('127.0.0.1', await freePort());
    cleanups.push(() => broker.close());
    const entry = SIM_CATALOG.find((e) => e.family === 'antminer');
    assert.ok(entry);
    const miner = await entry.start({ fast: true });
    cleanups.push(() => miner.close());
    (miner.sim as AntminerSim).behaviour.ignoreWrites = true;
    const pdu = new SnmpPduSim({ profile: 'apc-rpdu2', outlets: 2, loadsW: [3250, 0] });
    const p = await pdu.listen();
    cleanups.push(() => pdu.close());
    const { agent, watch } = await startAgent(
      broker.url,
      'cut',
      {
        poll: { intervalMs: 500, deadlineMs: 1500 },
        actions: { deadlineMs: 1500 },
        devices: [
          { ...miner.device('m1'), feed: [{ pdu: 'pdu', outlet: '1' }] },
          { id: 'pdu', driver: 'pdu-snmp', host: p.host, port: p.port, profile: 'apc-rpdu2', snmp: { version: '2c', community: 'private' }, outlets: 2, switchOnDelayMs: 100 },
        ],
        engine: { hardCut: ['m1'], retries: 1, restore: { stepDevices: 1, stepIntervalMs: 100 } },
      },
      ['m1'],
    );
    const t = agent.topics;

    await watch.publish(t.cmd, JSON.stringify({ id: 'cut-1', command: 'curtail' }));
    const final = await watch.waitFor((m) => m.topic === t.cmdResult && (m.json as CommandResult).id === 'cut-1' && (m.json as CommandResult).status !== 'accepted', 20_000, 'curtail result');
    const r = final.json as CommandResult;
    assert.equal(r.status, 'succeeded', JSON.stringify(r.error));
    const m1 = r.result?.devices?.[0];
    assert.equal(m1?.via, 'cut');
    assert.deepEqual(m1?.steps?.map((s) => `${s.step}:${String(s.ok)}`), ['curtail:false', 'retry:false', 'cut:true']);
    assert.equal(pdu.outletState(1), 'off', 'the outlet is off in the PDU simulator');
    assert.equal(pdu.outletState(2), 'on', 'the other outlet is untouched');
    await watch.waitFor((m) => m.topic === t.events && (m.json as { type?: string; step?: string }).type === 'device.escalated' && (m.json as { step?: string }).step === 'cut', 5_000, 'escalation event');

    (miner.sim as AntminerSim).behaviour.ignoreWrites = false;
    await watch.publish(t.cmd, JSON.stringify({ id: 'cut-2', command: 'restore' }));
    const back = await watch.waitFor((m) => m.topic === t.cmdResult && (m.json as CommandResult).id === 'cut-2' && (m.json as CommandResult).status !== 'accepted', 20_000, 'restore result');
    assert.equal((back.json as CommandResult).status, 'succeeded', JSON.stringify((back.json as CommandResult).error));
    assert.equal(pdu.outletState(1), 'on', 'restore switched the outlet back on');
  });

  test('an armed curtail that is never answered holds up the other miners\' confirmation by the finishing cap at most, not its deadline', async () => {
    const b = await startEmbeddedBroker('127.0.0.1', await freePort());
    cleanups.push(() => b.close());
    const entry = SIM_CATALOG.find((e) => e.family === 'luxos');
    assert.ok(entry);
    const ok = await entry.start({ fast: true });
    const mute = await entry.start({ fast: true });
    cleanups.push(() => ok.close(), () => mute.close());
    const { agent, watch } = await startAgent(
      b.url,
      'mute',
      { poll: { intervalMs: 500, deadlineMs: 1000 }, actions: { deadlineMs: 2000 }, devices: [ok.device('ok1'), mute.device('mute1')], engine: { retries: 0 } },
      ['ok1', 'mute1'],
    );
    const t = agent.topics;
    // armed with a session in hand; from now on the miner accepts connections and never answers
    (mute.sim as LuxosSim).server.fault = { kind: 'silent' };

    await watch.publish(t.cmd, JSON.stringify({ id: 'mute-1', command: 'curtail' }));
    const event = (type: string, device: string) => (m: { topic: string; json: unknown }) =>
      m.topic === t.events && (m.json as { type?: string }).type === type && (m.json as { device?: string }).device === device;
    const confirmed = await watch.waitFor(event('device.confirmed', 'ok1'), 10_000, 'ok1 confirmed');
    assert.equal(ok.sleeping(), true);
    const muteFailed = await watch.waitFor(event('device.failed', 'mute1'), 10_000, 'mute1 failed');
    // ok1 was confirmed before the silent miner's deadline (2 s) ran out, not after it
    assert.ok(watch.messages.indexOf(confirmed) < watch.messages.indexOf(muteFailed));
    const final = await watch.waitFor((m) => m.topic === t.cmdResult && (m.json as CommandResult).id === 'mute-1' && (m.json as CommandResult).status !== 'accepted', 20_000, 'curtail result');
    const r = final.json as CommandResult;
    const byId = new Map((r.result?.devices ?? []).map((d) => [d.id, d]));
    assert.equal(byId.get('ok1')?.ok, true);
    assert.equal(byId.get('mute1')?.ok, false, 'the silent miner is not shed');
    assert.equal(byId.get('mute1')?.steps?.[0]?.step, 'curtail');
    assert.equal(byId.get('mute1')?.steps?.[0]?.ok, false);
  });

  test('SIGKILL during a curtailment: after the restart the rack stays curtailed and nothing is restored by itself', async () => {
    broker ??= await startEmbeddedBroker('127.0.0.1', await freePort());
    const rack = await startSimRack(3, { sleepDelayMs: 300, wakeRampMs: 200 });
    cleanups.push(() => rack.close());
    const dir = tempDir('rp-kill-');
    const raw = { ...rack.raw(broker.url, 's', 'kill'), stateDir: dir, mqtt: { url: broker.url, protocolVersion: 4, reconnect: { minMs: 100, maxMs: 1000 } } };
    const cfg = join(dir, 'agent.yaml');
    writeFileSync(cfg, JSON.stringify(raw));
    const t = rackTopics('s', 'kill');
    const watch = await MqttWatch.connect(broker.url, `${t.root}/#`);
    cleanups.push(() => watch.close());
    const run = (): ChildProcess => cliRun(cfg);
    let child = run();
    cleanups.push(async () => {
      child.kill('SIGKILL');
      await sleep(50);
    });
    await watch.waitFor((m) => m.topic === t.status && (m.json as { online?: boolean }).online === true, 15_000, 'agent online');
    await sleep(800); // a poll cycle, so the agent knows the miners' draw
    await watch.publish(t.cmd, JSON.stringify({ id: 'k-1', command: 'curtail' }));
    await watch.waitFor((m) => m.topic === t.events && (m.json as { type?: string }).type === 'curtail.started', 10_000, 'curtail.started');
    child.kill('SIGKILL'); // mid-curtailment: the miners take 300 ms to sleep
    await new Promise((r) => child.once('exit', r));
    const file = join(dir, 'engine-state.json');
    assert.ok(existsSync(file), 'the state was persisted before the kill');
    const saved = JSON.parse(readFileSync(file, 'utf8')) as { demands: { key: string }[]; shed: Record<string, unknown> };
    assert.deepEqual(saved.demands.map((d) => d.key), ['command:k-1']);
    assert.equal(Object.keys(saved.shed).length, 3, 'every device with a curtail in flight counts as shed');
    // while the agent is down, someone wakes the miners
    await until('miners asleep (the sends were out)', () => rack.sims.every((s) => s.sleeping));
    for (const s of rack.sims) s.power.set('mining');
    assert.ok(rack.sims.every((s) => !s.sleeping));

    child = run();
    await until('re-asserted after restart', () => rack.sims.every((s) => s.sleeping));
    const st = await watch.waitFor(
      (m) => m.topic === t.state && (m.json as StateMessage).state === 'curtailed' && ((m.json as StateMessage).demands ?? []).some((d) => d.key === 'command:k-1'),
      15_000,
      'state curtailed with the command demand',
    );
    assert.ok(st);
    await sleep(2500);
    assert.ok(rack.sims.every((s) => s.sleeping), 'nothing woke up by itself');
    await watch.publish(t.cmd, JSON.stringify({ id: 'k-2', command: 'restore' }));
    const back = await watch.waitFor((m) => m.topic === t.cmdResult && (m.json as CommandResult).id === 'k-2' && (m.json as CommandResult).status !== 'accepted', 20_000, 'restore result');
    assert.equal((back.json as CommandResult).status, 'succeeded', JSON.stringify((back.json as CommandResult).error));
    assert.ok(rack.sims.every((s) => !s.sleeping));
  });
});
