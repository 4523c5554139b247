/**
 * Store-and-forward against a real Mosquitto: the broker is down for a
 * simulated 10 minutes (600 telemetry cycles at 100 ms standing for 1 Hz)
 * while a curtailment happens; after it is back, every buffered telemetry
 * message and every event arrives once, in order, marked historical. Then an
 * agent killed with SIGKILL while buffering: after its restart (and a torn
 * record appended to a segment) nothing the spool had taken is lost.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { appendFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { Agent } from '../agent/agent.js';
import { validateConfig } from '../agent/config.js';
import { sleep } from '../drivers/lib/deadline.js';
import { Mosquitto } from '../hil/testing/mosquitto.js';
import { MqttWatch, type Received } from '../hil/testing/mqtt-watch.js';
import { startSimRack } from '../hil/testing/rack-fixture.js';
import { cliRun } from '../hil/testing/cli-run.js';
import { requireTool } from '../hil/testing/tools.js';
import type { EventMessage, TelemetryMessage } from '../protocol/messages.js';
import { rackTopics } from '../protocol/topics.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const tool = requireTool('mosquitto', 'mosquitto');

async function until(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

type Hist = { historical?: boolean; spoolSeq?: number };

if ('skip' in tool) {
  test(`store-and-forward (${tool.skip})`, { skip: tool.skip }, () => undefined);
} else {
  describe('store-and-forward through a broker outage (Mosquitto)', () => {
    const cleanups: (() => Promise<void>)[] = [];
    after(async () => {
      for (const c of cleanups.reverse()) await c().catch(() => undefined);
    });

    test('10 simulated minutes offline with a curtailment: every buffered message arrives once, in order, marked historical', async () => {
      const broker = new Mosquitto(tool.path);
      await broker.start();
      cleanups.push(() => broker.dispose());
      const rack = await startSimRack(3, { sleepDelayMs: 50, wakeRampMs: 50 });
      cleanups.push(() => rack.close());
      const raw = rack.raw(broker.url, 'sf', 'r1');
      // the agent reconnects 2-3 s after the broker is back, so the watcher below is subscribed first
      const res = validateConfig({ ...raw, poll: { intervalMs: 100, deadlineMs: 1000, concurrency: 8 }, mqtt: { url: broker.url, reconnect: { minMs: 2000, maxMs: 3000 }, replayPerS: 2000 } });
      assert.ok(res.ok, res.ok ? '' : res.errors.join('\n'));
      const agent = new Agent(res.config, pino({ level: 'silent' }));
      await agent.start();
      cleanups.push(() => agent.stop());
      const t = rackTopics('sf', 'r1');
      await until('agent connected', () => agent.bridge.connected);
      await until('live telemetry', () => (agent.poller.lastCycle?.startedAt ?? 0) > 0);

      await broker.stop();
      await until('agent sees the outage', () => !agent.bridge.connected);
      const spooledAtStart = agent.bridge.stats.spooled;
      // 600 telemetry cycles offline, with a curtailment (a local demand: central control is unreachable) in the middle
      await until('300 cycles', () => agent.bridge.stats.spooled - spooledAtStart >= 300, 60_000);
      const wave = agent.engine.raise({ key: 'command:local-1', source: 'command', kind: 'shed', since: Date.now(), holdOffMs: 0, commandId: 'local-1' });
      assert.ok(wave);
      await wave.done;
      await until('600 cycles', () => agent.bridge.stats.spooled - spooledAtStart >= 600 + 5, 90_000);
      await agent.spool.flush();
      const spooled = agent.bridge.stats.spooled;
      assert.equal(agent.bridge.stats.spoolRefused, 0);

      await broker.start();
      const watch = await MqttWatch.connect(broker.url, `${t.root}/#`, { protocolVersion: 5 });
      cleanups.push(() => watch.close());
      // a live publish that fails right at the reconnect is spooled too and replayed at once: wait for every spooled one
      const settled = (): boolean => agent.bridge.connected && agent.spool.pending().total === 0 && agent.bridge.stats.replayed >= agent.bridge.stats.spooled;
      await until('replay done', settled, 60_000);
      await sleep(500);
      await until('replay done (settled)', settled, 10_000);
      const spooledAll = agent.bridge.stats.spooled;
      assert.ok(spooledAll >= spooled);
      await until('every replayed message seen', () => watch.messages.filter((m: Received) => (m.json as Hist | undefined)?.historical === true).length >= spooledAll, 5_000).catch(() => undefined);
      const hist = watch.messages.filter((m: Received) => (m.json as Hist | undefined)?.historical === true);
      const seqs = hist.map((m) => (m.json as Hist).spoolSeq ?? 0);
      assert.equal(hist.length, spooledAll, `every spooled message arrived (${hist.length} of ${spooledAll})`);
      assert.equal(new Set(seqs).size, seqs.length, 'each once');
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'in the order they were buffered');
      // spool sequence numbers count every append since the (fresh) spool was made: those after spooledAtStart are the outage's
      // (anything spooled before, e.g. a poll cycle before the first connect, is replayed too, ahead of them)
      const tel = hist.filter((m) => m.topic === t.telemetry && ((m.json as Hist).spoolSeq ?? 0) > spooledAtStart).map((m) => m.json as TelemetryMessage);
      assert.ok(tel.length >= 600, `${tel.length} telemetry messages`);
      for (let i = 1; i < tel.length; i++) assert.equal(tel[i]!.seq, tel[i - 1]!.seq + 1, 'telemetry seq has no gap');
      const ev = hist.filter((m) => m.topic === t.events).map((m) => m.json as EventMessage);
      const types = ev.map((e) => e.type);
      for (const ty of ['demand.added', 'curtail.started', 'curtail.completed']) assert.equal(types.filter((x) => x === ty).length, 1, `${ty} once`);
      assert.equal(types.filter((x) => x === 'device.confirmed').length, 3);
      assert.ok(types.indexOf('curtail.started') < types.indexOf('curtail.completed'));
      // the curtailment's events sit between the telemetry built before and after it
      const doneAt = hist.findIndex((m) => (m.json as EventMessage).type === 'curtail.completed');
      assert.ok(doneAt > 0 && doneAt < hist.length - 1);
      // live messages flowed alongside the replay
      assert.ok(watch.messages.some((m) => m.topic === t.telemetry && (m.json as Hist).historical !== true), 'live telemetry too');
    });

    test('SIGKILL while buffering, a torn record appended: after the restart everything the spool held is replayed', async () => {
      const broker = new Mosquitto(tool.path);
      await broker.start();
      const port = broker.port;
      cleanups.push(() => broker.dispose());
      const rack = await startSimRack(2, { sleepDelayMs: 50, wakeRampMs: 50 });
      cleanups.push(() => rack.close());
      const dir = tempDir('rp-sf-kill-');
      const raw = { ...rack.raw(broker.url, 'sf', 'r2'), stateDir: dir, poll: { intervalMs: 100, deadlineMs: 1000, concurrency: 8 }, mqtt: { url: broker.url, reconnect: { minMs: 1500, maxMs: 2000 }, replayPerS: 2000 } };
      const cfg = join(dir, 'agent.yaml');
      writeFileSync(cfg, JSON.stringify(raw));
      const t = rackTopics('sf', 'r2');
      const run = (): ChildProcess => cliRun(cfg);
      let child = run();
      cleanups.push(async () => {
        child.kill('SIGKILL');
        await sleep(50);
      });
      let watch = await MqttWatch.connect(broker.url, `${t.root}/#`);
      await watch.waitFor((m) => m.topic === t.telemetry, 15_000, 'live telemetry');
      const lastLive = Math.max(...watch.messages.filter((m) => m.topic === t.telemetry).map((m) => (m.json as TelemetryMessage).seq));
      await watch.close();
      await broker.stop();
      await sleep(4000); // ~40 cycles spooled
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const spoolDir = join(dir, 'spool');
      const seg = readdirSync(spoolDir).filter((f) => f.startsWith('t-') && f.endsWith('.seg')).sort().at(-1);
      assert.ok(seg, 'telemetry was spooled to disk');
      appendFileSync(join(spoolDir, seg), Buffer.from([0xff, 0x53, 0x40, 0x00, 0x00, 0x00, 0x01, 0x02])); // a torn record: magic and a length, cut off

      child = run();
      await sleep(1500); // the restarted agent spools a few more cycles while the broker is still down
      assert.equal(broker.port, port);
      await broker.start();
      watch = await MqttWatch.connect(broker.url, `${t.root}/#`);
      cleanups.push(() => watch.close());
      await watch.waitFor((m) => m.topic === t.telemetry && (m.json as Hist).historical !== true, 20_000, 'live telemetry after the restart');
      await sleep(3000);
      const hist = watch.messages.filter((m) => m.topic === t.telemetry && (m.json as Hist).historical === true).map((m) => m.json as TelemetryMessage & Hist);
      // the first process's telemetry (seq restarts at 0 in the second one) follows the last live message without a gap
      const restartAt = hist.findIndex((m, i) => i > 0 && m.seq <= (hist[i - 1]?.seq ?? -1));
      assert.ok(restartAt > 0, 'telemetry of both processes was replayed');
      const first = hist.slice(0, restartAt).filter((m) => m.seq > lastLive);
      assert.ok(first.length >= 20, `${first.length} messages from before the kill were replayed`);
      const firstSeqs = first.map((m) => m.seq);
      const contiguous = firstSeqs.every((s, i) => i === 0 || s === (firstSeqs[i - 1] ?? 0) + 1);
      assert.ok(contiguous, `no gap in what the killed agent had spooled: ${firstSeqs.join(',')}`);
      assert.ok((firstSeqs[0] ?? 0) <= lastLive + 3, `replay starts right after the last live message (${lastLive} -> ${firstSeqs[0]})`);
      const spoolSeqs = hist.map((m) => m.spoolSeq ?? 0);
      assert.deepEqual(spoolSeqs, [...spoolSeqs].sort((a, b) => a - b), 'spool order across the restart');
      assert.equal(new Set(spoolSeqs).size, spoolSeqs.length, 'each once');
    });
  });
}
