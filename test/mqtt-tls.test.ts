/**
 * TLS to the broker, against a real Mosquitto started with the repository's
 * sample configuration (hil/mosquitto/): client certificates as identity,
 * username/password, the per-rack ACL, and the start-up checks of the
 * agent's TLS files (agent/tls-files.ts). Certificates are made at test
 * time with openssl.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import mqtt, { type IClientOptions } from 'mqtt';
import { pino, type Logger } from 'pino';
import { Agent } from '../agent/agent.js';
import { validateConfig, type AgentConfig } from '../agent/config.js';
import { loadTlsFiles } from '../agent/tls-files.js';
import { RackpilotError } from '../drivers/lib/errors.js';
import { rackTopics } from '../protocol/topics.js';
import { TestPki, type CertFiles } from '../hil/testing/certs.js';
import { Mosquitto, rackpilotSampleConfig, writePasswordFile } from '../hil/testing/mosquitto.js';
import { MqttWatch } from '../hil/testing/mqtt-watch.js';
import { startSimRack, type SimRack } from '../hil/testing/rack-fixture.js';
import { requireTool } from '../hil/testing/tools.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const openssl = requireTool('openssl', 'openssl');
const mosquitto = requireTool('mosquitto', 'mosquitto');
const silent = pino({ level: 'silent' });
const SITE = 'e2e';
const NOT_AUTHORIZED = 135; // MQTT 5 reason code 0x87

/** A logger whose JSON lines land in `lines`. */
function capturingLogger(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

function config(rack: string, mqttBlock: Record<string, unknown>, dir: string): AgentConfig {
  const res = validateConfig({
    site: SITE,
    rack,
    mqtt: { protocolVersion: 5, reconnect: { minMs: 100, maxMs: 1000 }, connectTimeoutMs: 2000, publishTimeoutMs: 2000, ...mqttBlock },
    poll: { intervalMs: 300 },
    log: { level: 'silent' },
    stateDir: dir,
    health: { port: 0 },
  });
  if (!res.ok) throw new Error(res.errors.join('\n'));
  return res.config;
}

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

if ('skip' in openssl || 'skip' in mosquitto) {
  const why = 'skip' in openssl ? openssl.skip : 'skip' in mosquitto ? mosquitto.skip : '';
  test(`MQTT over TLS (${why})`, { skip: why }, () => undefined);
} else {
  const pki = TestPki.create(openssl.path);
  const dir = tempDir('rackpilot-tls-');
  after(() => {
    pki.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('MQTT over TLS with the sample Mosquitto configuration (hil/mosquitto/)', () => {
    const server = pki.server();
    const rackA = pki.client(`${SITE}/rack-a`);
    const rackB = pki.client(`${SITE}/rack-b`);
    const central = pki.client('rackpilot-central');
    const topicsA = rackTopics(SITE, 'rack-a');
    const topicsB = rackTopics(SITE, 'rack-b');
    const broker = new Mosquitto(mosquitto.path, {
      listeners: 2,
      config: (ports, brokerDir) => {
        const passwordFile = join(brokerDir, 'rackpilot.passwd');
        writePasswordFile(passwordFile, { [`${SITE}/rack-p`]: 'rack-p-secret' });
        return rackpilotSampleConfig(ports, { caFile: pki.caFile, certFile: server.cert, keyFile: server.key, passwordFile });
      },
    });
    const certUrl = (): string => `mqtts://127.0.0.1:${broker.ports[0]}`;
    const passwordUrl = (): string => `mqtts://127.0.0.1:${broker.ports[1]}`;
    const tlsOpts = (c: CertFiles, extra: IClientOptions = {}): IClientOptions => ({
      protocolVersion: 5,
      ca: readFileSync(pki.caFile),
      cert: readFileSync(c.cert),
      key: readFileSync(c.key),
      reconnectPeriod: 0,
      ...extra,
    });
    let sims: SimRack;
    let agentA: Agent;
    let watch: MqttWatch;
    let n = 0;
    const cmdId = (p: string): string => `${p}-${++n}-${Date.now()}`;

    before(async () => {
      await broker.start();
      sims = await startSimRack(1);
      const raw = sims.raw(certUrl(), SITE, 'rack-a');
      const res = validateConfig({ ...raw, mqtt: { ...(raw.mqtt as object), protocolVersion: 5, tls: { caFile: pki.caFile, certFile: rackA.cert, keyFile: rackA.key } } });
      if (!res.ok) throw new Error(res.errors.join('\n'));
      agentA = new Agent(res.config, silent);
      await agentA.start();
      watch = await MqttWatch.connect(certUrl(), 'rackpilot/v1/#', tlsOpts(central, { reconnectPeriod: 200 }));
    });

    after(async () => {
      await agentA?.stop();
      await watch?.close();
      await sims?.close();
      await broker.dispose();
    });

    test('the agent connects with its client certificate: status online, telemetry, a command from central control executed', async () => {
      await watch.waitFor((m) => m.topic === topicsA.status && (m.json as { online?: boolean }).online === true, 10_000, 'rack A online');
      const tm = await watch.next((m) => m.topic === topicsA.telemetry && (m.json as { summary: { online: number } }).summary.online === 1, 10_000, 'rack A telemetry');
      assert.equal((tm.json as { devices: unknown[] }).devices.length, 1);
      const id = cmdId('ping');
      await watch.publish(topicsA.cmd, JSON.stringify({ id, command: 'ping' }));
      await watch.waitFor((m) => m.topic === topicsA.cmdResult && (m.json as { id?: string; status?: string }).id === id && (m.json as { status: string }).status === 'succeeded', 10_000, 'ping result');
      assert.equal(agentA.bridge.protocolVersion, 5);
      // MQTT 5 replies: the ACL lets a rack answer under its own …/cmd/reply/
      const replyTopic = `${topicsA.cmd}/reply/central-1`;
      const id2 = cmdId('ping');
      await watch.publish(topicsA.cmd, JSON.stringify({ id: id2, command: 'ping' }), { properties: { responseTopic: replyTopic, correlationData: Buffer.from('req-1') } });
      const reply = await watch.waitFor((m) => m.topic === replyTopic && (m.json as { id?: string; status?: string }).id === id2 && (m.json as { status: string }).status === 'succeeded', 10_000, 'reply');
      assert.equal(reply.packet.properties?.correlationData?.toString(), 'req-1');
    });

    test("another rack's certificate reads none of rack A's topics, though its own traffic passes", async () => {
      const b = await MqttWatch.connect(certUrl(), topicsA.telemetry, tlsOpts(rackB));
      try {
        // Mosquitto 2.0's acl_file does not check SUBSCRIBE itself (SUBACK grants it) but
        // checks every delivery; a broker that refuses at SUBACK must say "not authorized"
        const reasons = await b.client.subscribeAsync([topicsA.status, topicsA.cmd, 'rackpilot/v1/#'], { qos: 1 }).then(
          (granted) => granted.map((s): number => s.qos),
          (err: Error & { code?: number }) => [err.code ?? -1],
        );
        for (const rc of reasons) assert.ok(rc === 0 || rc === 1 || rc === NOT_AUTHORIZED, `SUBACK reason code ${rc}`);
        // its own topics work: central control sees rack B's status
        await b.publish(topicsB.status, JSON.stringify({ online: true, probe: 'b' }), { retain: false });
        await watch.waitFor((m) => m.topic === topicsB.status && (m.json as { probe?: string }).probe === 'b', 5_000, "rack B's own status");
        // two telemetry messages, a command and its result pass on rack A's topics after B subscribed ...
        const since = watch.messages.length;
        await watch.next((m) => m.topic === topicsA.telemetry, 5_000, 'rack A telemetry');
        await watch.next((m) => m.topic === topicsA.telemetry, 5_000, 'rack A telemetry');
        const id = cmdId('ping');
        await watch.publish(topicsA.cmd, JSON.stringify({ id, command: 'ping' }));
        await watch.waitFor((m) => m.topic === topicsA.cmdResult && (m.json as { id?: string; status?: string }).id === id && (m.json as { status: string }).status === 'succeeded', 10_000, 'ping result');
        assert.ok(watch.messages.slice(since).some((m) => m.topic === topicsA.cmd), 'central control saw its command');
        // ... and rack B got none of them, not even rack A's retained status
        assert.deepEqual(b.messages.map((m) => m.topic).filter((t) => t.startsWith(`${topicsA.root}/`)), []);
      } finally {
        await b.close();
      }
    });

    test("another rack's certificate cannot command rack A: the broker refuses the PUBLISH and the agent never sees it", async () => {
      const b = await mqtt.connectAsync(certUrl(), tlsOpts(rackB));
      try {
        const forged = cmdId('forged');
        await assert.rejects(b.publishAsync(topicsA.cmd, JSON.stringify({ id: forged, command: 'curtail' }), { qos: 1 }), (err: Error & { code?: number }) => {
          assert.equal(err.code, NOT_AUTHORIZED, err.message);
          return true;
        });
        // a rack cannot write another rack's status either (a forged "offline")
        await assert.rejects(b.publishAsync(topicsA.status, '{"online":false}', { qos: 1, retain: true }), (err: Error & { code?: number }) => err.code === NOT_AUTHORIZED);
        // the agent handles commands in arrival order: central control's later ping is answered,
        // so the refused command would have been answered before it
        const id = cmdId('ping');
        await watch.publish(topicsA.cmd, JSON.stringify({ id, command: 'ping' }));
        await watch.waitFor((m) => m.topic === topicsA.cmdResult && (m.json as { id?: string; status?: string }).id === id && (m.json as { status: string }).status === 'succeeded', 10_000, 'ping result');
        assert.equal(watch.messages.filter((m) => (m.json as { id?: string } | undefined)?.id === forged).length, 0);
        assert.equal(sims.sims[0]?.sleeping, false);
      } finally {
        await b.endAsync();
      }
    });

    test("a rack cannot take over another rack's session by using its client id", async () => {
      const connects = agentA.bridge.stats.connects;
      // the broker replaces any client id with the certificate's CN (use_username_as_clientid)
      const b = await mqtt.connectAsync(certUrl(), tlsOpts(rackB, { clientId: `rackpilot-${SITE}-rack-a` }));
      try {
        const id = cmdId('ping');
        await watch.publish(topicsA.cmd, JSON.stringify({ id, command: 'ping' }));
        await watch.waitFor((m) => m.topic === topicsA.cmdResult && (m.json as { id?: string; status?: string }).id === id && (m.json as { status: string }).status === 'succeeded', 10_000, 'ping result');
        assert.equal(agentA.bridge.stats.connects, connects, 'rack A was not disconnected');
        assert.equal(agentA.bridge.connected, true);
        assert.ok(!watch.messages.some((m) => m.topic === topicsA.status && (m.json as { online?: boolean }).online === false), 'no offline status (Will) for rack A');
      } finally {
        await b.endAsync();
      }
    });

    test('username/password over TLS: the agent connects and the same per-rack ACL applies; a wrong password is refused', async () => {
      const topicsP = rackTopics(SITE, 'rack-p');
      const agentDir = mkdtempSync(join(dir, 'p-'));
      const agent = new Agent(config('rack-p', { url: passwordUrl(), username: `${SITE}/rack-p`, password: 'rack-p-secret', tls: { caFile: pki.caFile } }, agentDir), silent);
      try {
        await agent.start();
        await watch.waitFor((m) => m.topic === topicsP.status && (m.json as { online?: boolean }).online === true, 10_000, 'rack P online');
        const id = cmdId('ping');
        await watch.publish(topicsP.cmd, JSON.stringify({ id, command: 'ping' }));
        await watch.waitFor((m) => m.topic === topicsP.cmdResult && (m.json as { id?: string; status?: string }).id === id && (m.json as { status: string }).status === 'succeeded', 10_000, 'rack P ping result');
      } finally {
        await agent.stop();
      }
      const p = await mqtt.connectAsync(passwordUrl(), { protocolVersion: 5, ca: readFileSync(pki.caFile), username: `${SITE}/rack-p`, password: 'rack-p-secret', reconnectPeriod: 0 });
      try {
        await assert.rejects(p.publishAsync(topicsA.cmd, '{"id":"x","command":"curtail"}', { qos: 1 }), (err: Error & { code?: number }) => err.code === NOT_AUTHORIZED);
      } finally {
        await p.endAsync();
      }
      await assert.rejects(
        mqtt.connectAsync(passwordUrl(), { protocolVersion: 5, ca: readFileSync(pki.caFile), username: `${SITE}/rack-p`, password: 'wrong', reconnectPeriod: 0 }),
        (err: Error & { code?: number }) => err.code === NOT_AUTHORIZED,
      );
    });

    test('a CA that did not sign the broker: the agent does not connect and logs why', async () => {
      const other = TestPki.create(openssl.path, 'some-other-ca');
      const { log, lines } = capturingLogger();
      const agent = new Agent(config('rack-x', { url: certUrl(), tls: { caFile: other.caFile, certFile: rackA.cert, keyFile: rackA.key } }, mkdtempSync(join(dir, 'x-'))), log);
      try {
        await agent.start();
        await until(() => lines.some((l) => l.msg === 'MQTT error'), 'an MQTT error in the log');
        const err = lines.find((l) => l.msg === 'MQTT error') as { error: string; code?: string };
        assert.match(`${err.code} ${err.error}`, /SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|self[- ]signed certificate|unable to verify/i);
        assert.equal(agent.bridge.connected, false);
        assert.equal(agent.bridge.stats.connects, 0);
      } finally {
        await agent.stop();
        other.dispose();
      }
    });

    test('a client certificate from another CA: the broker refuses the handshake', async () => {
      const other = TestPki.create(openssl.path, 'rogue-ca');
      try {
        const rogue = other.client(`${SITE}/rack-a`);
        await assert.rejects(mqtt.connectAsync(certUrl(), { ...tlsOpts(rogue), connectTimeout: 3000 }));
      } finally {
        other.dispose();
      }
    });
  });

  describe('start-up checks of the TLS files', () => {
    const rack = pki.client(`${SITE}/rack-k`);

    test('good files load, and their contents go to the MQTT client', () => {
      const { files, warnings } = loadTlsFiles({ caFile: pki.caFile, certFile: rack.cert, keyFile: rack.key, rejectUnauthorized: true });
      assert.deepEqual(files.ca, readFileSync(pki.caFile));
      assert.deepEqual(files.cert, readFileSync(rack.cert));
      assert.deepEqual(files.key, readFileSync(rack.key));
      assert.deepEqual(warnings, []);
    });

    test('a group- or world-readable key is refused, naming the file, the mode and the fix', () => {
      const key = join(dir, 'group-readable.key');
      copyFileSync(rack.key, key);
      for (const mode of [0o640, 0o604, 0o660]) {
        chmodSync(key, mode);
        assert.throws(
          () => loadTlsFiles({ certFile: rack.cert, keyFile: key, rejectUnauthorized: true }),
          (err: RackpilotError) => {
            assert.equal(err.code, 'CONFIG_INVALID');
            assert.ok(err.message.startsWith('mqtt.tls.keyFile: '), err.message);
            assert.ok(err.message.includes(`"${key}"`), err.message);
            assert.ok(err.message.includes(`mode 0${mode.toString(8)}`), err.message);
            assert.ok(err.message.includes(`chmod 600 ${key}`), err.message);
            return true;
          },
        );
      }
      chmodSync(key, 0o400);
      assert.doesNotThrow(() => loadTlsFiles({ certFile: rack.cert, keyFile: key, rejectUnauthorized: true }));
    });

    test('a missing file, garbage, a key of another certificate, a certificate without its key: each refused with its config key', () => {
      const garbage = join(dir, 'garbage.pem');
      writeFileSync(garbage, 'not a certificate\n');
      const otherKey = pki.client(`${SITE}/other`).key;
      const cases: [Parameters<typeof loadTlsFiles>[0], RegExp][] = [
        [{ caFile: join(dir, 'nope.crt'), rejectUnauthorized: true }, /^mqtt\.tls\.caFile: cannot read ".*nope\.crt" \(ENOENT\)$/],
        [{ caFile: garbage, rejectUnauthorized: true }, /^mqtt\.tls\.caFile: ".*garbage\.pem" holds no PEM certificate/],
        [{ certFile: rack.cert, keyFile: garbage, rejectUnauthorized: true }, /^mqtt\.tls\.keyFile: ".*garbage\.pem" is accessible by group or others/],
        [{ certFile: rack.cert, keyFile: otherKey, rejectUnauthorized: true }, /^mqtt\.tls\.keyFile: ".*" does not match the certificate in mqtt\.tls\.certFile/],
        [{ certFile: rack.cert, rejectUnauthorized: true }, /^mqtt\.tls\.keyFile: required when mqtt\.tls\.certFile is set/],
        [{ keyFile: rack.key, rejectUnauthorized: true }, /^mqtt\.tls\.certFile: required when mqtt\.tls\.keyFile is set/],
      ];
      for (const [tls, re] of cases) {
        assert.throws(() => loadTlsFiles(tls), (err: RackpilotError) => err.code === 'CONFIG_INVALID' && re.test(err.message), `${JSON.stringify(tls)} → ${re}`);
      }
      chmodSync(garbage, 0o600);
      assert.throws(() => loadTlsFiles({ certFile: rack.cert, keyFile: garbage, rejectUnauthorized: true }), /mqtt\.tls\.keyFile: ".*garbage\.pem" is not a valid private key/);
    });

    test('an encrypted key is refused with the way out', () => {
      const enc = join(dir, 'encrypted.key');
      const r = spawnSync(openssl.path, ['pkey', '-in', rack.key, '-aes256', '-passout', 'pass:x', '-out', enc]);
      assert.equal(r.status, 0, r.stderr.toString());
      chmodSync(enc, 0o600);
      assert.throws(() => loadTlsFiles({ certFile: rack.cert, keyFile: enc, rejectUnauthorized: true }), /mqtt\.tls\.keyFile: ".*encrypted\.key" is an encrypted private key.*\(openssl pkey/);
    });

    test('a CA bundle is checked certificate by certificate; a certificate expiring soon is a warning, not a refusal', () => {
      const soon = pki.client(`${SITE}/rack-soon`, { days: 5 });
      const bundle = join(dir, 'bundle.pem');
      writeFileSync(bundle, readFileSync(pki.caFile, 'utf8') + readFileSync(soon.cert, 'utf8'));
      const { warnings } = loadTlsFiles({ caFile: bundle, certFile: soon.cert, keyFile: soon.key, rejectUnauthorized: true });
      assert.deepEqual(warnings.map((w) => w.key), ['caFile', 'certFile']);
      for (const w of warnings) assert.match(w.message, /expires on .* \(in [45] day\(s\)\): renew it/);
      writeFileSync(bundle, `${readFileSync(pki.caFile, 'utf8')}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`);
      assert.throws(() => loadTlsFiles({ caFile: bundle, rejectUnauthorized: true }), /is not a valid X\.509 certificate \(certificate 2 of 2\)/);
      const later = Date.now() + 4000 * 86_400_000; // the test CA is valid for 3650 days
      const expired = loadTlsFiles({ caFile: pki.caFile, rejectUnauthorized: true }, later).warnings;
      assert.equal(expired.length, 1);
      assert.match(expired[0]?.message ?? '', /expired on .*: the broker will refuse it/);
    });

    test('rackpilot run refuses to start with a group-readable key, saying why', () => {
      const key = join(dir, 'cli.key');
      copyFileSync(rack.key, key);
      chmodSync(key, 0o640);
      const f = join(dir, 'tls-key.yaml');
      const cfgDir = mkdtempSync(join(dir, 'cli-'));
      writeFileSync(f, `site: s\nrack: r\nmqtt: { url: "mqtts://127.0.0.1:9", tls: { caFile: ${pki.caFile}, certFile: ${rack.cert}, keyFile: ${key} } }\nlog: { level: silent }\nstateDir: ${cfgDir}\n`);
      const cli = fileURLToPath(new URL('../agent/cli.js', import.meta.url));
      const r = spawnSync(process.execPath, [cli, 'run', '--config', f], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 1, r.stderr);
      assert.ok(r.stderr.includes(`mqtt.tls.keyFile: "${key}" is accessible by group or others (mode 0640)`), r.stderr);
      assert.ok(r.stderr.includes(`chmod 600 ${key}`), r.stderr);
    });

    test('the agent refuses to start with a group-readable key', async () => {
      const key = join(dir, 'agent.key');
      copyFileSync(rack.key, key);
      chmodSync(key, 0o644);
      const agent = new Agent(config('rack-k', { url: 'mqtts://127.0.0.1:9', tls: { caFile: pki.caFile, certFile: rack.cert, keyFile: key } }, mkdtempSync(join(dir, 'k-'))), silent);
      try {
        await assert.rejects(agent.start(), (err: RackpilotError) => err.code === 'CONFIG_INVALID' && err.message.includes('(mode 0644)') && err.message.includes('chmod 600'));
        assert.equal(agent.bridge.connected, false);
      } finally {
        await agent.stop();
      }
    });
  });
}
