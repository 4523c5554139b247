/**
 * The agent as a release runs it: the esbuild bundle (scripts/bundle-agent.mjs,
 * written by `npm run build` to dist/bundle/agent/) next to tsc's output,
 * each run as its own process against a simulated miner and an embedded
 * broker, over MQTT on TCP and over WebSocket. The bundle changes mqtt.js on
 * the way in (its WebSocket transport loads on first use), so the ws:// run
 * is what proves that change; the install tests run the bundle under the
 * installer and the systemd HIL under systemd.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Aedes } from 'aedes';
import { createWebSocketStream, WebSocketServer } from 'ws';
import type { TelemetryMessage } from '../protocol/messages.js';
import { rackTopics } from '../protocol/topics.js';
import { MqttWatch } from '../hil/testing/mqtt-watch.js';
import { startSimRack, type SimRack } from '../hil/testing/rack-fixture.js';
import { repoRoot } from '../hil/testing/root.js';

const root = repoRoot();
const BUILDS = [
  { name: 'tsc output', cli: join(root, 'dist', 'agent', 'cli.js') },
  { name: 'bundled', cli: join(root, 'dist', 'bundle', 'agent', 'cli.js') },
];

describe('the bundled agent (dist/bundle/agent)', () => {
  let aedes: Aedes;
  let tcp: net.Server;
  let wss: WebSocketServer;
  let tcpUrl = '';
  let wsUrl = '';
  let sims: SimRack;
  const dir = mkdtempSync(join(tmpdir(), 'rackpilot-bundle-'));

  before(async () => {
    aedes = await Aedes.createBroker();
    tcp = net.createServer((s) => aedes.handle(s));
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    tcpUrl = `mqtt://127.0.0.1:${(tcp.address() as net.AddressInfo).port}`;
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise<void>((resolve) => wss.once('listening', resolve));
    // aedes reads the MQTT byte stream from the WebSocket's binary frames
    wss.on('connection', (socket) => aedes.handle(createWebSocketStream(socket)));
    wsUrl = `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}`;
    sims = await startSimRack(1);
  });
  after(async () => {
    await sims.close();
    for (const c of wss.clients) c.terminate();
    await new Promise((resolve) => wss.close(resolve));
    await new Promise((resolve) => tcp.close(resolve));
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  test('npm run build wrote it: an entry that imports chunks, and the version and config checks answer as from tsc output', () => {
    const [plain, bundled] = BUILDS.map((b) => b.cli) as [string, string];
    assert.ok(existsSync(bundled), `${bundled} is missing: npm run build writes it`);
    assert.match(readFileSync(bundled, 'utf8'), /from\s*"\.\/chunk-[A-Z0-9]+\.js"/);
    const version = (cli: string) => spawnSync(process.execPath, [cli, '--version'], { encoding: 'utf8' });
    assert.equal(version(bundled).stdout, version(plain).stdout);
    const check = (cli: string) => spawnSync(process.execPath, [cli, 'config', 'check', join(root, 'examples', 'rack.yaml')], { encoding: 'utf8' });
    const [a, b] = [check(plain), check(bundled)];
    assert.equal(b.status, 0, b.stderr);
    assert.equal(b.stdout, a.stdout);
  });

  for (const build of BUILDS) {
    for (const transport of ['tcp', 'ws'] as const) {
      test(`${build.name}, MQTT over ${transport === 'tcp' ? 'TCP' : 'WebSocket'}: telemetry of the miner, then a clean stop`, async () => {
        const rack = `${build.name === 'bundled' ? 'b' : 't'}-${transport}`;
        const url = transport === 'tcp' ? tcpUrl : wsUrl;
        const cfg = join(dir, `${rack}.json`);
        writeFileSync(
          cfg,
          JSON.stringify({
            ...sims.raw(url, 'bundle', rack),
            mqtt: { url, protocolVersion: 4 },
            poll: { intervalMs: 300 },
            log: { level: 'warn' },
            stateDir: join(dir, rack),
            health: { port: 0 },
          }),
        );
        const watch = await MqttWatch.connect(tcpUrl, rackTopics('bundle', rack).telemetry);
        const agent = spawn(process.execPath, [build.cli, 'run', '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        agent.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
        const exited = new Promise<number | null>((resolve) => agent.once('exit', (code) => resolve(code)));
        try {
          const m = await Promise.race([
            watch.waitFor((x) => (x.json as TelemetryMessage | undefined)?.summary.online === 1, 20_000, 'telemetry with the miner online'),
            exited.then((code) => assert.fail(`the agent exited (${code}) before its telemetry: ${stderr}`)),
          ]);
          const t = m.json as TelemetryMessage;
          assert.equal(t.devices[0]?.state, 'running');
          agent.kill('SIGTERM');
          assert.equal(await exited, 0, stderr);
        } finally {
          if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
          await watch.close();
        }
      });
    }
  }
});
