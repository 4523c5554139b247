/**
 * End-to-end suite, run against each real broker (aedes and Mosquitto):
 * simulated miners over TCP, the agent, and a watcher client over MQTT.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { Agent } from '../../agent/agent.js';
import { commandResultSchema, stateMessageSchema, telemetryMessageSchema, type CommandResult, type TelemetryMessage } from '../../protocol/messages.js';
import { rackTopics } from '../../protocol/topics.js';
import { MqttWatch, type Received } from './mqtt-watch.js';
import { startSimRack, type SimRack } from './rack-fixture.js';
import { repoRoot } from './root.js';
import { tempDir } from './temp-dir.js';

export interface BrokerUnderTest {
  name: string;
  /** MQTT protocol the agent should end up using with this broker. */
  expectVersion: 4 | 5;
  url(): string;
  start(): Promise<void>;
  stop(): Promise<void>;
  dispose(): Promise<void>;
}

const silent = pino({ level: 'silent' });
const N = 3;

function result(m: Received): CommandResult {
  return commandResultSchema.parse(m.json);
}

export function agentSuite(broker: BrokerUnderTest | { skip: string }): void {
  if ('skip' in broker) {
    test(`agent end-to-end (${broker.skip})`, { skip: broker.skip }, () => undefined);
    return;
  }
  describe(`agent end-to-end with ${broker.name}`, () => {
    const site = 'e2e';
    const rack = `rack-${broker.name}`;
    const t = rackTopics(site, rack);
    let simRack: SimRack;
    let agent: Agent;
    let watch: MqttWatch;
    let n = 0;
    const cmdId = (p: string): string => `${p}-${++n}-${Date.now()}`;

    const resultFor = (id: string | null, status: string, pred: (r: CommandResult) => boolean = () => true): Promise<Received> =>
      watch.waitFor(
        (m) => m.topic === t.cmdResult && (m.json as CommandResult).id === id && (m.json as CommandResult).status === status && pred(m.json as CommandResult),
        20_000,
        `result ${id ?? 'null'} ${status}`,
      );

    const telemetry = (pred: (m: TelemetryMessage) => boolean, what: string): Promise<Received> =>
      watch.next((m) => m.topic === t.telemetry && pred(m.json as TelemetryMessage), 20_000, what);

    before(async () => {
      await broker.start();
      simRack = await startSimRack(N);
      agent = new Agent(simRack.config(broker.url(), site, rack), silent);
      await agent.start();
      watch = await MqttWatch.connect(broker.url(), `${t.root}/#`, { protocolVersion: broker.expectVersion });
    });

    after(async () => {
      await agent?.stop();
      await watch?.close();
      await simRack?.close();
      await broker.dispose();
    });

    test('status is retained and online; protocol version negotiated', async () => {
      await watch.waitFor((m) => m.topic === t.status && (m.json as { online?: boolean }).online === true, 10_000, 'status online');
      const late = await MqttWatch.connect(broker.url(), t.status);
      try {
        const m = await late.waitFor((x) => x.topic === t.status, 5_000, 'retained status');
        assert.equal(m.retain, true);
        assert.equal((m.json as { online: boolean }).online, true);
      } finally {
        await late.close();
      }
      assert.equal(agent.bridge.protocolVersion, broker.expectVersion);
    });

    test('telemetry lists every device with the contract fields', async () => {
      const m = await telemetry((x) => x.summary.online === N, 'telemetry with all devices online');
      const tm = telemetryMessageSchema.parse(m.json);
      assert.equal(m.retain, false);
      assert.equal(tm.devices.length, N);
      for (const d of tm.devices) {
        assert.equal(d.kind, 'asic');
        assert.equal(d.state, 'running');
        assert.equal(d.freshness, 'fresh');
        assert.ok(typeof d.powerW === 'number' && d.powerW > 2500, `powerW ${d.powerW}`);
        assert.ok(typeof d.hashrateThs === 'number' && d.hashrateThs > 0);
        assert.equal(typeof d.temperatureC, 'number');
      }
      assert.equal(tm.summary.powerComplete, true);
    });

    test('curtail: accepted, every miner asleep and confirmed, then restore brings them back', async () => {
      const id = cmdId('curtail');
      await watch.publish(t.cmd, JSON.stringify({ id, command: 'curtail' }));
      await resultFor(id, 'accepted');
      const done = result(await resultFor(id, 'succeeded'));
      assert.equal(done.command, 'curtail');
      assert.equal(done.result?.devices?.length, N);
      assert.ok(done.result?.devices?.every((d) => d.ok));
      for (const s of simRack.sims) {
        assert.equal(s.sleeping, true);
        assert.ok(s.power.powerW() <= 60, `sim power ${s.power.powerW()}`);
      }
      const tm = telemetryMessageSchema.parse(
        (await telemetry((x) => x.summary.curtailed === N, 'telemetry with all devices curtailed')).json,
      );
      assert.ok(tm.summary.powerW <= N * 60, `rack power ${tm.summary.powerW}`);
      const st = await watch.waitFor((m) => m.topic === t.state && (m.json as { state?: string }).state === 'curtailed', 5_000, 'state curtailed');
      assert.equal(stateMessageSchema.parse(st.json).commandId, id);
      await watch.waitFor((m) => m.topic === t.events && (m.json as { type?: string; commandId?: string }).type === 'curtail.completed' && (m.json as { commandId?: string }).commandId === id, 5_000, 'curtail.completed event');
      const confirmed = watch.messages.filter((m) => m.topic === t.events && (m.json as { type?: string; commandId?: string }).type === 'device.confirmed' && (m.json as { commandId?: string }).commandId === id);
      assert.equal(confirmed.length, N);

      const rid = cmdId('restore');
      await watch.publish(t.cmd, JSON.stringify({ id: rid, command: 'restore' }));
      await resultFor(rid, 'accepted');
      await resultFor(rid, 'succeeded');
      for (const s of simRack.sims) assert.equal(s.sleeping, false);
      await telemetry((x) => x.devices.every((d) => d.state === 'running'), 'telemetry with all devices running');
      await watch.waitFor((m) => m.topic === t.state && (m.json as { state?: string; commandId?: string }).state === 'running' && (m.json as { commandId?: string }).commandId === rid, 5_000, 'state running');
    });

    test('a miner that ignores its curtail climbs the escalation ladder: retry, then its lowest-power profile; restore undoes it', async () => {
      const stubborn = simRack.sims[1]!;
      stubborn.behaviour.ignoreCurtail = true;
      const profileBefore = stubborn.profile;
      try {
        const id = cmdId('curtail-ladder');
        await watch.publish(t.cmd, JSON.stringify({ id, command: 'curtail', params: { timeoutMs: 2000 } }));
        const r = result(await resultFor(id, 'succeeded'));
        const m2 = r.result?.devices?.find((d) => d.id === 'm2');
        assert.equal(m2?.via, 'alternative');
        assert.deepEqual(m2?.steps?.map((s) => `${s.step}:${String(s.ok)}`), ['curtail:false', 'retry:false', 'alternative:true']);
        assert.equal(m2?.steps?.[0]?.error?.code, 'NOT_CONFIRMED');
        assert.notEqual(stubborn.profile, profileBefore, 'm2 runs its lowest-power profile');
        for (const d of r.result?.devices ?? []) if (d.id !== 'm2') assert.equal(d.via, 'curtail');
        await watch.waitFor((m) => m.topic === t.events && (m.json as { type?: string; device?: string }).type === 'device.escalated' && (m.json as { device?: string }).device === 'm2', 5_000, 'device.escalated event');
      } finally {
        stubborn.behaviour.ignoreCurtail = false;
      }
      const rid = cmdId('restore');
      await watch.publish(t.cmd, JSON.stringify({ id: rid, command: 'restore' }));
      await resultFor(rid, 'succeeded');
      assert.equal(stubborn.profile, profileBefore, 'restore set the profile back');
      for (const s of simRack.sims) assert.equal(s.sleeping, false);
    });

    test('malformed commands are rejected with errors naming what was wrong', async () => {
      await watch.publish(t.cmd, 'this is not json');
      const r1 = result(await resultFor(null, 'rejected', (r) => r.error?.code === 'INVALID_JSON'));
      assert.match(r1.error?.message ?? '', /not JSON/);

      await watch.publish(t.cmd, JSON.stringify({ command: 'ping' }));
      const r2 = result(await resultFor(null, 'rejected', (r) => r.error?.code === 'INVALID_COMMAND'));
      assert.match(r2.error?.message ?? '', /^id: expected string, received undefined/);

      const id3 = cmdId('bad-params');
      await watch.publish(t.cmd, JSON.stringify({ id: id3, command: 'curtail', params: { timeoutMs: 'soon' } }));
      const r3 = result(await resultFor(id3, 'rejected'));
      assert.equal(r3.error?.code, 'INVALID_PARAMS');
      assert.match(r3.error?.message ?? '', /^params\.timeoutMs: expected number, received string/);

      const id4 = cmdId('unknown');
      await watch.publish(t.cmd, JSON.stringify({ id: id4, command: 'explode' }));
      const r4 = result(await resultFor(id4, 'rejected'));
      assert.equal(r4.error?.code, 'UNKNOWN_COMMAND');
      assert.match(r4.error?.message ?? '', /unknown command "explode" \(known: ping, curtail, restore, set-budget, clear-budget\)/);

      const id5 = cmdId('expired');
      await watch.publish(t.cmd, JSON.stringify({ id: id5, command: 'curtail', expiresAt: Date.now() - 1000 }));
      const r5 = result(await resultFor(id5, 'expired'));
      assert.equal(r5.error?.code, 'EXPIRED');
      assert.equal(simRack.sims.some((s) => s.sleeping), false, 'an expired curtail must not act');

      const id6 = cmdId('ping');
      await watch.publish(t.cmd, JSON.stringify({ id: id6, command: 'ping', expiresAt: new Date(Date.now() + 60_000).toISOString() }));
      const first = result(await resultFor(id6, 'succeeded', (r) => r.result?.pong === true));
      const resent = watch.next((m) => m.topic === t.cmdResult && (m.json as CommandResult).id === id6, 20_000, `result ${id6} re-sent`);
      await watch.publish(t.cmd, JSON.stringify({ id: id6, command: 'ping' }));
      assert.deepEqual(result(await resent), first, 'a duplicate id is not run again: its earlier result is re-sent');
      await watch.publish(t.cmd, JSON.stringify({ id: id6, command: 'restore' }));
      const r6 = result(await resultFor(id6, 'rejected'));
      assert.equal(r6.error?.code, 'DUPLICATE_ID');
    });

    test('retained commands are rejected, never executed', async () => {
      const id = cmdId('retained');
      try {
        if (broker.expectVersion === 5) {
          // MQTT 5 retain-as-published: refused on live delivery already. (Under 3.1.1 a
          // broker clears the flag on live delivery, so only the resubscribe case below applies.)
          await watch.publish(t.cmd, JSON.stringify({ id, command: 'curtail' }), { retain: true });
          const r = result(await resultFor(id, 'rejected'));
          assert.equal(r.error?.code, 'RETAINED_COMMAND');
        }
        // every broker: a (re)subscribing agent gets it flagged retained and refuses it
        const second = new Agent(simRack.config(broker.url(), site, `${rack}-2`), silent);
        const t2 = rackTopics(site, `${rack}-2`);
        await watch.publish(t2.cmd, JSON.stringify({ id, command: 'curtail' }), { retain: true });
        const w2 = await MqttWatch.connect(broker.url(), `${t2.root}/cmd/result`);
        try {
          await second.start();
          const m = await w2.waitFor((x) => (x.json as CommandResult).id === id, 10_000, 'retained rejection');
          const r = result(m);
          assert.equal(r.status, 'rejected');
          assert.equal(r.error?.code, 'RETAINED_COMMAND');
          assert.match(r.error?.message ?? '', /retain/);
        } finally {
          await second.stop();
          await w2.close();
          await watch.publish(t2.cmd, '', { retain: true });
        }
        assert.equal(simRack.sims.some((s) => s.sleeping), false, 'a retained curtail must not act');
      } finally {
        await watch.publish(t.cmd, '', { retain: true });
      }
    });

    test('broker stopped and restarted: the agent reconnects and telemetry resumes', async () => {
      const connects = agent.bridge.stats.connects;
      await broker.stop();
      await new Promise((r) => setTimeout(r, 1200));
      assert.equal(agent.bridge.connected, false);
      // polling goes on while the broker is down
      const seqDuringOutage = agent.poller.lastCycle?.startedAt ?? 0;
      await new Promise((r) => setTimeout(r, 700));
      assert.ok((agent.poller.lastCycle?.startedAt ?? 0) > seqDuringOutage, 'poller kept polling');
      await broker.start();
      const w = await MqttWatch.connect(broker.url(), `${t.root}/#`);
      try {
        const back = await w.waitFor((m) => m.topic === t.status && (m.json as { online?: boolean }).online === true, 15_000, 'status online after restart');
        assert.equal((back.json as { reason: string }).reason, 'reconnected');
        await w.next((m) => m.topic === t.telemetry, 15_000, 'telemetry after restart');
        assert.ok(agent.bridge.stats.connects > connects);
      } finally {
        await w.close();
      }
      await watch.close();
      watch = await MqttWatch.connect(broker.url(), `${t.root}/#`, { protocolVersion: broker.expectVersion });
    });

    test('agent killed with SIGKILL: the Will marks the rack offline (retained)', async () => {
      const killRack = `${rack}-kill`;
      const tk = rackTopics(site, killRack);
      const dir = tempDir('rackpilot-e2e-');
      const cfgFile = join(dir, 'agent.yaml');
      writeFileSync(cfgFile, JSON.stringify(simRack.raw(broker.url(), site, killRack)));
      const w = await MqttWatch.connect(broker.url(), tk.status);
      const child = spawn(process.execPath, [join(repoRoot(), 'dist', 'agent', 'cli.js'), 'run', '--config', cfgFile], { stdio: 'ignore' });
      try {
        await w.waitFor((m) => (m.json as { online?: boolean }).online === true, 15_000, 'child agent online');
        child.kill('SIGKILL');
        const off = await w.next((m) => (m.json as { online?: boolean }).online === false, 15_000, 'Will offline');
        assert.equal((off.json as { reason: string }).reason, 'connection-lost');
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
        await w.close();
      }
      const late = await MqttWatch.connect(broker.url(), tk.status);
      try {
        const m = await late.waitFor(() => true, 5_000, 'retained offline status');
        assert.equal(m.retain, true);
        assert.equal((m.json as { online: boolean }).online, false);
      } finally {
        await late.close();
      }
    });

    test('a clean stop publishes offline with reason shutdown', async () => {
      const r2 = `${rack}-clean`;
      const t2 = rackTopics(site, r2);
      const a2 = new Agent(simRack.config(broker.url(), site, r2), silent);
      const w = await MqttWatch.connect(broker.url(), t2.status);
      try {
        await a2.start();
        await w.waitFor((m) => (m.json as { online?: boolean }).online === true, 10_000, 'online');
        await a2.stop();
        const m = await w.waitFor((x) => (x.json as { online?: boolean }).online === false, 10_000, 'offline');
        assert.equal((m.json as { reason: string }).reason, 'shutdown');
      } finally {
        await w.close();
      }
    });

    if (broker.expectVersion === 5) {
      test('MQTT 5: results also go to the response topic with the correlation data', async () => {
        const replyTopic = `reply/${site}/${Date.now()}`;
        const w = await MqttWatch.connect(broker.url(), replyTopic, { protocolVersion: broker.expectVersion });
        try {
          const id = cmdId('ping-v5');
          const corr = Buffer.from('corr-42');
          await w.publish(t.cmd, JSON.stringify({ id, command: 'ping' }), { properties: { responseTopic: replyTopic, correlationData: corr } });
          const acc = await w.waitFor((m) => (m.json as CommandResult).status === 'accepted', 10_000, 'accepted on response topic');
          const fin = await w.waitFor((m) => (m.json as CommandResult).status === 'succeeded', 10_000, 'succeeded on response topic');
          for (const m of [acc, fin]) {
            assert.equal((m.json as CommandResult).id, id);
            assert.deepEqual(m.packet.properties?.correlationData, corr);
          }
        } finally {
          await w.close();
        }
      });
    }
  });
}
