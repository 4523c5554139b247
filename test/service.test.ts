/**
 * `rackpilot run` as a systemd service, observed through a fake
 * NOTIFY_SOCKET: READY=1 once running, WATCHDOG=1 pings from the event loop
 * that stop while the loop is blocked, RELOADING=1/READY=1 around a SIGHUP
 * reload (a bad file rejected and the running config kept; a good one applied
 * without dropping an active curtailment), STOPPING=1 on SIGTERM.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { startEmbeddedBroker, type EmbeddedBroker } from '../agent/embedded-broker.js';
import { sleep } from '../drivers/lib/deadline.js';
import { MqttWatch } from '../hil/testing/mqtt-watch.js';
import { FakeNotifySocket } from '../hil/testing/notify-socket.js';
import { freePort } from '../hil/testing/ports.js';
import { startSimRack, type SimRack } from '../hil/testing/rack-fixture.js';
import { repoRoot } from '../hil/testing/root.js';
import { requireTool } from '../hil/testing/tools.js';
import type { CommandResult, StateMessage } from '../protocol/messages.js';
import { rackTopics } from '../protocol/topics.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const python = requireTool('python3', 'python3');
const skip = 'skip' in python ? python.skip : false;
const cli = join(repoRoot(), 'dist', 'agent', 'cli.js');
const preload = pathToFileURL(join(repoRoot(), 'dist', 'hil', 'testing', 'block-loop.js')).href;

interface Running {
  child: ChildProcess;
  notify: FakeNotifySocket;
  logs: Record<string, unknown>[];
  exited: Promise<number | null>;
}

function startAgent(cfgFile: string, notify: FakeNotifySocket, env: Record<string, string> = {}): Running {
  const child = spawn(process.execPath, ['--import', preload, cli, 'run', '--config', cfgFile], {
    env: { ...process.env, NOTIFY_SOCKET: notify.path, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  // the service logs JSON lines on stdout (journald)
  createInterface({ input: child.stdout }).on('line', (l) => {
    try {
      logs.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      logs.push({ raw: l });
    }
  });
  child.stderr.resume();
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, notify, logs, exited };
}

describe('rackpilot run under systemd (fake NOTIFY_SOCKET)', { skip }, () => {
  let broker: EmbeddedBroker;
  let rack: SimRack;
  const cleanups: (() => Promise<void> | void)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  });

  async function setup(name: string): Promise<{ dir: string; cfg: string; raw: Record<string, unknown> }> {
    broker ??= await startEmbeddedBroker('127.0.0.1', await freePort());
    if (!rack) {
      rack = await startSimRack(3, { sleepDelayMs: 100, wakeRampMs: 100 });
      cleanups.push(() => rack.close());
      cleanups.push(() => broker.close());
    }
    const dir = tempDir(`rp-svc-${name}-`);
    const raw = {
      ...rack.raw(broker.url, 's', name),
      stateDir: dir,
      log: { level: 'info' },
      mqtt: { url: broker.url, protocolVersion: 4, reconnect: { minMs: 100, maxMs: 1000 } },
    };
    const cfg = join(dir, 'config.yaml');
    writeFileSync(cfg, JSON.stringify(raw));
    return { dir, cfg, raw };
  }

  test('READY=1 once running; watchdog pings stop while the event loop is blocked, and resume after', async () => {
    const { dir, cfg } = await setup('wd');
    const notify = await FakeNotifySocket.start(python && 'path' in python ? python.path : 'python3');
    cleanups.push(() => notify.close());
    const blockLog = join(dir, 'block.jsonl');
    const a = startAgent(cfg, notify, { WATCHDOG_USEC: '300000', RP_BLOCK_MS: '1500', RP_BLOCK_LOG: blockLog });
    cleanups.push(() => void a.child.kill('SIGKILL'));
    await notify.waitFor('READY=1', () => notify.with('READY=1').length > 0);
    const ready = notify.with('READY=1')[0]!;
    assert.match(ready.msg, /STATUS=running: site s, rack wd, 3 device\(s\)/);
    await notify.waitFor('five pings', () => notify.with('WATCHDOG=1').length >= 5);
    const before = notify.with('WATCHDOG=1').length;

    a.child.kill('SIGUSR2'); // the preload busy-waits 1.5 s on the event loop
    await notify.waitFor('pings after the block', () => readBlocks(blockLog).length === 1 && notify.with('WATCHDOG=1').some((n) => n.t > readBlocks(blockLog)[0]!.end + 200));
    const block = readBlocks(blockLog)[0]!;
    const during = notify.with('WATCHDOG=1').filter((n) => n.t > block.start + 50 && n.t < block.end);
    assert.deepEqual(during, [], 'no ping while the loop was blocked');
    const pings = notify.with('WATCHDOG=1').map((n) => n.t);
    const gaps = pings.slice(1).map((t, i) => t - pings[i]!);
    assert.ok(Math.max(...gaps) > 300, `systemd (WatchdogSec=0.3s) would have seen a silence longer than its period: gaps ${gaps.map(Math.round).join(',')}`);
    assert.ok(notify.with('WATCHDOG=1').length > before + 1, 'pings resumed after the block');

    a.child.kill('SIGTERM');
    assert.equal(await a.exited, 0, 'clean exit on SIGTERM');
    assert.equal(notify.with('STOPPING=1').length, 1, 'STOPPING=1 sent on SIGTERM');
    const n = notify.with('WATCHDOG=1').length;
    await sleep(400);
    assert.equal(notify.with('WATCHDOG=1').length, n, 'no ping after the stop');
    const running = await waitLog(a, 'agent running');
    assert.equal(running.watchdogMs, 300, 'the service logs JSON on stdout');
  });

  test('SIGHUP: a bad config is rejected and the running one kept; a good one is applied without dropping the curtailment', async () => {
    const { cfg, raw } = await setup('hup');
    const notify = await FakeNotifySocket.start(python && 'path' in python ? python.path : 'python3');
    cleanups.push(() => notify.close());
    const t = rackTopics('s', 'hup');
    const watch = await MqttWatch.connect(broker.url, `${t.root}/#`);
    cleanups.push(() => watch.close());
    const a = startAgent(cfg, notify);
    cleanups.push(() => void a.child.kill('SIGKILL'));
    await notify.waitFor('READY=1', () => notify.with('READY=1').length === 1);
    await watch.waitFor((m) => m.topic === t.status && (m.json as { online?: boolean }).online === true, 15_000, 'agent online');
    await sleep(600); // a poll cycle: the agent knows the miners' draw
    await watch.publish(t.cmd, JSON.stringify({ id: 'h-1', command: 'curtail' }));
    const done = await watch.waitFor((m) => m.topic === t.cmdResult && (m.json as CommandResult).id === 'h-1' && (m.json as CommandResult).status !== 'accepted', 15_000, 'curtail result');
    assert.equal((done.json as CommandResult).status, 'succeeded');
    assert.ok(rack.sims.every((s) => s.sleeping));

    // 1. a config with errors: rejected, every error logged, the agent keeps running as it was
    writeFileSync(cfg, JSON.stringify({ ...raw, poll: { intervalMs: -5 }, mqtt: { url: 'ftp://nowhere' } }));
    a.child.kill('SIGHUP');
    await notify.waitFor('READY after the rejected reload', () => notify.with('READY=1').length === 2);
    assert.equal(notify.with('RELOADING=1').length, 1);
    assert.match(notify.with('READY=1')[1]!.msg, /STATUS=last reload rejected \(\d+ error\(s\)\); running the previous config/);
    const rejected = await waitLog(a, 'reloaded config rejected: the running config is kept');
    const errors = (rejected.errors as string[]).join('\n');
    assert.match(errors, /poll\.intervalMs/);
    assert.match(errors, /mqtt\.url/);
    await watch.publish(t.cmd, JSON.stringify({ id: 'h-2', command: 'ping' }));
    await watch.waitFor((m) => m.topic === t.cmdResult && (m.json as CommandResult).id === 'h-2', 10_000, 'ping answered after the rejected reload');

    // 2. log level only: applied in place
    writeFileSync(cfg, JSON.stringify({ ...raw, log: { level: 'debug' } }));
    a.child.kill('SIGHUP');
    await notify.waitFor('READY after the log-level reload', () => notify.with('READY=1').length === 3);
    await waitLog(a, 'config reloaded: log level applied');

    // 3. a real change: the agent restarts with it and the rack stays curtailed
    writeFileSync(cfg, JSON.stringify({ ...raw, poll: { intervalMs: 700, deadlineMs: 600 } }));
    a.child.kill('SIGHUP');
    await notify.waitFor('READY after the replacing reload', () => notify.with('READY=1').length === 4);
    assert.match(notify.with('READY=1')[3]!.msg, /STATUS=running/);
    await waitLog(a, 'config reloaded: agent restarted with it');
    // central control sees a reload, not a shutdown and a fresh start
    await watch.waitFor((m) => m.topic === t.status && (m.json as { online?: boolean; reason?: string }).reason === 'reloading' && (m.json as { online?: boolean }).online === false, 10_000, 'status reloading');
    await watch.waitFor((m) => m.topic === t.status && (m.json as { reason?: string }).reason === 'reloaded' && (m.json as { online?: boolean }).online === true, 10_000, 'status reloaded');
    await watch.waitFor(
      (m) => m.topic === t.state && (m.json as StateMessage).state === 'curtailed' && ((m.json as StateMessage).demands ?? []).some((d) => d.key === 'command:h-1'),
      15_000,
      'state still curtailed with the command demand after the reload',
    );
    await sleep(1500);
    assert.ok(rack.sims.every((s) => s.sleeping), 'nothing woke up through the reload');
    // the new agent remembers the old one's command ids: a redelivery is answered from memory, not run again
    const mark = watch.messages.length;
    await watch.publish(t.cmd, JSON.stringify({ id: 'h-1', command: 'curtail' }));
    const again = await watch.waitFor((m) => watch.messages.indexOf(m) >= mark && m.topic === t.cmdResult && (m.json as CommandResult).id === 'h-1', 10_000, 'answer to the redelivered h-1');
    assert.deepEqual(again.json, done.json, 'the earlier final result, its own ts included');

    await watch.publish(t.cmd, JSON.stringify({ id: 'h-3', command: 'restore' }));
    const back = await watch.waitFor((m) => m.topic === t.cmdResult && (m.json as CommandResult).id === 'h-3' && (m.json as CommandResult).status !== 'accepted', 20_000, 'restore result');
    assert.equal((back.json as CommandResult).status, 'succeeded', JSON.stringify((back.json as CommandResult).error));
    a.child.kill('SIGTERM');
    assert.equal(await a.exited, 0);
  });
});

/** The first log line with this message (logs are written asynchronously: they may trail the notification). */
async function waitLog(a: Running, msg: string, ms = 10_000): Promise<Record<string, unknown>> {
  const end = Date.now() + ms;
  for (;;) {
    const hit = a.logs.find((l) => l.msg === msg);
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`no log line "${msg}"; last lines: ${JSON.stringify(a.logs.slice(-5))}`);
    await sleep(25);
  }
}

function readBlocks(file: string): { start: number; end: number }[] {
  try {
    return readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { start: number; end: number });
  } catch {
    return [];
  }
}
