/**
 * `rackpilot doctor` against real things on loopback: LuxOS simulators, an
 * embedded aedes broker (and one requiring credentials), a closed port, a
 * socat pty for a Modbus RTU meter, the compiled mock NVML, a fake sysfs GPIO
 * tree, throw-away TLS files; the clock probes are injected.
 */
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import tls from 'node:tls';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Writable } from 'node:stream';
import { runDoctor } from '../agent/doctor/cli.js';
import { checkClock, type ClockProbes, type ProbeRun } from '../agent/doctor/clock.js';
import { checkGpio } from '../agent/doctor/gpio.js';
import { checkGpuPermission } from '../agent/doctor/nvml.js';
import { checkNode, checkStateDirs, checkWritableDir } from '../agent/doctor/system.js';
import type { CheckResult } from '../agent/doctor/types.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../agent/embedded-broker.js';
import { validateConfig, type AgentConfig, type DeviceConfig } from '../agent/config.js';
import { ModbusMeterSim } from '../hil/sim/modbus-meter-sim.js';
import { startAuthBroker } from '../hil/testing/auth-broker.js';
import { TestPki } from '../hil/testing/certs.js';
import { buildMockNvml } from '../hil/testing/mock-nvml.js';
import { Mosquitto, writePasswordFile } from '../hil/testing/mosquitto.js';
import { freePort, refusedPort } from '../hil/testing/ports.js';
import { ptyPair } from '../hil/testing/pty.js';
import { startSimRack, type SimRack } from '../hil/testing/rack-fixture.js';
import { repoRoot } from '../hil/testing/root.js';
import { runAsNobody } from '../hil/testing/as-nobody.js';
import { requireTool } from '../hil/testing/tools.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const TIMEOUT = '1500';

const probes = (timedatectl: ProbeRun, flag = false, chronyc: ProbeRun = { status: 'missing' }): ClockProbes => ({
  run: (cmd) => Promise.resolve(cmd === 'timedatectl' ? timedatectl : chronyc),
  exists: () => Promise.resolve(flag),
});
const SYNCED = probes({ status: 'ok', stdout: 'yes\n' });

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

/** Writes the config (JSON is YAML) with mode 0600, as install.sh would. */
function configFile(raw: Record<string, unknown>, mode = 0o600): string {
  const file = join(tempDir('rp-doctor-'), 'config.yaml');
  writeFileSync(file, JSON.stringify(raw, null, 2), { mode });
  chmodSync(file, mode);
  return file;
}

async function doctor(args: string[], clock: ClockProbes = SYNCED): Promise<{ code: number; text: string; err: string }> {
  const out = new Capture();
  const err = new Capture();
  const code = await runDoctor(args, out, { err, clock });
  return { code, text: out.text, err: err.text };
}

async function doctorJson(args: string[], clock: ClockProbes = SYNCED): Promise<{ code: number; rows: (Omit<CheckResult, 'data'> & Record<string, unknown>)[] }> {
  const r = await doctor([...args, '--json'], clock);
  return { code: r.code, rows: JSON.parse(r.text) as (Omit<CheckResult, 'data'> & Record<string, unknown>)[] };
}

function row(rows: { check: string }[], check: string): CheckResult & Record<string, unknown> {
  const r = rows.find((x) => x.check === check);
  assert.ok(r, `no row "${check}" in ${JSON.stringify(rows.map((x) => x.check))}`);
  return r as CheckResult & Record<string, unknown>;
}

describe('doctor against a simulated rack', () => {
  let rack: SimRack;
  let broker: EmbeddedBroker;
  before(async () => {
    rack = await startSimRack(2);
    broker = await startEmbeddedBroker('127.0.0.1', await freePort());
  });
  after(async () => {
    await rack.close();
    await broker.close();
  });

  const base = (url: string): Record<string, unknown> => {
    const raw = rack.raw(url, 's1', 'r1');
    return {
      ...raw,
      devices: [...(raw.devices as unknown[]), { id: 'trip', driver: 'gpio', backend: 'soft', chip: 'pinctrl-bcm2711', offset: 17, direction: 'in' }],
    };
  };

  test('everything reachable: all PASS (or skipped), exit 0, each device with its firmware', async () => {
    const file = configFile(base(broker.url));
    const r = await doctor(['--config', file, '--timeout', TIMEOUT]);
    assert.equal(r.code, 0, r.text);
    assert.doesNotMatch(r.text, /^(FAIL|WARN) /m, r.text);
    for (const id of ['m1', 'm2']) assert.match(r.text, new RegExp(`^PASS +device ${id} +luxos, .*firmware LUXminer`, 'm'), r.text);
    assert.match(r.text, /^PASS +broker +CONNACK ok from mqtt:\/\/127\.0\.0\.1:\d+\/? \(MQTT 3\.1\.1/m);
    assert.match(r.text, /^PASS +gpio trip +simulated/m);
    assert.match(r.text, /^SKIP +serial /m);
    assert.match(r.text, /^SKIP +nvml /m);
    assert.match(r.text, /^PASS +config file .*mode 0600/m);
    assert.match(r.text, /^PASS +clock +synchronised/m);

    const j = await doctorJson(['-c', file, '--timeout', TIMEOUT]);
    assert.equal(j.code, 0);
    assert.ok(j.rows.every((x) => x.status === 'pass' || x.status === 'skip'), JSON.stringify(j.rows));
    const m1 = row(j.rows, 'device m1');
    assert.equal(m1.driver, 'luxos');
    assert.match(String(m1.firmware), /LUXminer/);
    assert.equal(m1.state, 'running');
    assert.equal(row(j.rows, 'broker').protocolVersion, 4);
  });

  test('driver auto: the detected family and firmware', async () => {
    const raw = base(broker.url);
    raw.devices = [{ id: 'a1', driver: 'auto', host: '127.0.0.1', port: rack.sims[0]?.server.port, httpPort: await freePort(), options: { luxos: { keepSessionWarm: false } } }];
    const j = await doctorJson(['--config', configFile(raw), '--timeout', '3000']);
    const a1 = row(j.rows, 'device a1');
    assert.equal(a1.status, 'pass', a1.detail);
    assert.match(a1.detail, /^auto -> luxos, .*firmware LUXminer/);
  });

  test('a silent device, a stopped one and a closed broker port: FAIL rows with the reason, exit 1', async () => {
    const silent = rack.sims[0];
    assert.ok(silent);
    const closed = await refusedPort();
    const raw = base(`mqtt://127.0.0.1:${closed}`);
    const stoppedPort = closed; // nothing listens there either: a stopped miner
    raw.devices = [...(raw.devices as Record<string, unknown>[]).slice(0, 1), { id: 'gone', driver: 'luxos', host: '127.0.0.1', port: stoppedPort }];
    silent.server.fault = { kind: 'silent' };
    try {
      const r = await doctor(['--config', configFile(raw), '--timeout', TIMEOUT]);
      assert.equal(r.code, 1, r.text);
      assert.match(r.text, /^FAIL +broker +connection refused by mqtt:\/\/127\.0\.0\.1:\d+/m);
      assert.match(r.text, /^FAIL +device m1 +luxos: (READ_TIMEOUT|DEADLINE_EXCEEDED|CONNECT_TIMEOUT): /m);
      assert.match(r.text, /^FAIL +device gone +luxos: (CONNECT_REFUSED|UNREACHABLE): /m);
      const j = await doctorJson(['--config', configFile(raw), '--timeout', TIMEOUT]);
      assert.equal(j.code, 1);
      assert.equal(row(j.rows, 'broker').reason, 'refused');
    } finally {
      silent.server.fault = { kind: 'none' };
    }
  });

  test('a world-readable config is a warning (exit 0); world-writable a failure', async () => {
    const r = await doctor(['--config', configFile(base(broker.url), 0o644), '--timeout', TIMEOUT]);
    assert.equal(r.code, 0, r.text);
    assert.match(r.text, /^WARN +config file +.* readable by every user \(mode 0644.*can hold passwords: run "chmod 640/m);
    const w = await doctor(['--config', configFile(base(broker.url), 0o666), '--timeout', TIMEOUT]);
    assert.equal(w.code, 1);
    assert.match(w.text, /^FAIL +config file +.*writable by every user/m);
  });

  test('a state dir that cannot be created is a failure naming the fix', async () => {
    const ro = tempDir('rp-ro-');
    const raw = { ...base(broker.url), stateDir: join(ro, 'file', 'state') };
    writeFileSync(join(ro, 'file'), 'not a directory');
    const r = await doctor(['--config', configFile(raw), '--timeout', TIMEOUT]);
    assert.equal(r.code, 1);
    assert.match(r.text, /^FAIL +state dir +.*install -d/m);
    const ok = await checkWritableDir('state dir', join(tempDir('rp-sd-'), 'a', 'b'), 'stateDir');
    assert.equal(ok.status, 'pass', ok.detail);
    assert.match(ok.detail, /does not exist yet; .* can create it/);
  });
});

describe('gpu permission', () => {
  test('power limits need CAP_SYS_ADMIN: held passes, missing or unknown warns with the drop-in to add', () => {
    const status = (capEff: string): string => `Name:\tnode\nCapInh:\t0000000000000000\nCapEff:\t${capEff}\n`;
    assert.equal(checkGpuPermission(['gpu-1'], status('000001ffffffffff')).status, 'pass', 'root');
    assert.equal(checkGpuPermission(['gpu-1'], status('0000000000200000')).status, 'pass', 'CAP_SYS_ADMIN alone (bit 21)');
    const none = checkGpuPermission(['gpu-1', 'gpu-2'], status('0000000000000000'));
    assert.equal(none.status, 'warn');
    assert.match(none.detail, /lacks CAP_SYS_ADMIN: curtail\/restore of gpu-1, gpu-2 .*NO_PERMISSION.*AmbientCapabilities=CAP_SYS_ADMIN/);
    assert.match(checkGpuPermission(['g'], null).detail, /cannot tell/);
  });
});

describe('state files', () => {
  test('state files the agent cannot write (left by a run as root) are a failure naming the fix', async () => {
    const dir = tempDir('rp-owned-');
    mkdirSync(join(dir, 'spool'));
    writeFileSync(join(dir, 'engine-state.json'), '{}');
    writeFileSync(join(dir, 'evidence.jsonl'), '');
    let rows: CheckResult[];
    if (process.getuid?.() === 0) {
      // as root everything is writable: ask as uid 65534 ("nobody"), owner of the state dir but not of what root left in it
      const uid = 65534; // runAsNobody's uid
      chmodSync(dir, 0o755);
      chownSync(dir, uid, uid);
      chownSync(join(dir, 'evidence.jsonl'), uid, uid);
      rows = runAsNobody(join(repoRoot(), 'dist', 'agent', 'doctor', 'system.js'), 'checkStateDirs', [{ stateDir: dir, evidence: {}, spool: {} }]) as CheckResult[];
    } else {
      chmodSync(join(dir, 'spool'), 0o555);
      chmodSync(join(dir, 'engine-state.json'), 0o444);
      rows = await checkStateDirs({ stateDir: dir, evidence: {}, spool: {} } as unknown as AgentConfig);
    }
    const contents = rows.find((x) => x.check === 'state dir contents');
    assert.ok(contents, JSON.stringify(rows));
    assert.equal(contents.status, 'fail');
    assert.match(contents.detail, /engine-state\.json/);
    assert.match(contents.detail, /spool/);
    assert.doesNotMatch(contents.detail, /evidence\.jsonl/, 'a file the agent can write is not listed');
    assert.match(contents.detail, /run "chown -R \S+: /);
  });
});

describe('broker credentials and TLS', () => {
  test('bad credentials against a broker requiring them: FAIL "not authorized"; good ones pass', async () => {
    const b = await startAuthBroker('rack', 'right-password');
    try {
      const raw = { site: 's1', rack: 'r1', stateDir: tempDir('rp-st-'), mqtt: { url: b.url, username: 'rack', password: 'wrong' } };
      const j = await doctorJson(['--config', configFile(raw), '--timeout', TIMEOUT]);
      assert.equal(j.code, 1);
      const br = row(j.rows, 'broker');
      assert.equal(br.status, 'fail');
      assert.match(br.detail, /not authorized/i);
      assert.equal(br.reason, 'auth');
      assert.ok(b.refused > 0);
      const good = await doctorJson(['--config', configFile({ ...raw, mqtt: { url: b.url, username: 'rack', password: 'right-password' } }), '--timeout', TIMEOUT]);
      assert.equal(row(good.rows, 'broker').status, 'pass');
      assert.equal(good.code, 0, JSON.stringify(good.rows));
    } finally {
      await b.close();
    }
  });

  const mosquittoBin = requireTool('mosquitto', 'mosquitto');
  test('Mosquitto with a password file: MQTT 5 CONNACK, and "Not authorized" (135) for a wrong password', { skip: 'skip' in mosquittoBin ? mosquittoBin.skip : false }, async () => {
    if ('skip' in mosquittoBin) return;
    const mosq = new Mosquitto(mosquittoBin.path, {
      config: ([port], dir) => {
        writePasswordFile(join(dir, 'passwd'), { rack: 'right-password' });
        return [`listener ${port ?? 0} 127.0.0.1`, 'allow_anonymous false', `password_file ${join(dir, 'passwd')}`, 'persistence false', 'log_type error', ''].join('\n');
      },
    });
    await mosq.start();
    try {
      const raw = { site: 's1', rack: 'r1', stateDir: tempDir('rp-st-'), mqtt: { url: mosq.url, username: 'rack', password: 'wrong' } };
      const bad = row((await doctorJson(['--config', configFile(raw), '--timeout', TIMEOUT])).rows, 'broker');
      assert.equal(bad.status, 'fail');
      assert.match(bad.detail, /Not authorized \(CONNACK 135\)/);
      const good = row((await doctorJson(['--config', configFile({ ...raw, mqtt: { ...raw.mqtt, password: 'right-password' } }), '--timeout', TIMEOUT])).rows, 'broker');
      assert.equal(good.status, 'pass', good.detail);
      assert.match(good.detail, /\(MQTT 5\)/);
    } finally {
      await mosq.dispose();
    }
  });

  const openssl = requireTool('openssl', 'openssl');
  test('TLS: an unsafe key file FAILs naming it; a broker certificate from another CA is a TLS error', { skip: 'skip' in openssl ? openssl.skip : false }, async () => {
    if ('skip' in openssl) return;
    const pki = TestPki.create(openssl.path);
    const other = TestPki.create(openssl.path, 'other-ca');
    const client = pki.client('r1');
    chmodSync(client.key, 0o644);
    const port = await freePort();
    const raw = { site: 's1', rack: 'r1', stateDir: tempDir('rp-st-'), mqtt: { url: `mqtts://127.0.0.1:${port}`, tls: { caFile: pki.caFile, certFile: client.cert, keyFile: client.key } } };
    const j = await doctorJson(['--config', configFile(raw), '--timeout', TIMEOUT]);
    assert.equal(j.code, 1);
    const files = row(j.rows, 'broker TLS files');
    assert.equal(files.status, 'fail');
    assert.ok(files.detail.includes(client.key), files.detail);
    assert.match(files.detail, /chmod 600/);
    assert.match(row(j.rows, 'broker').detail, /not tried/);

    // a TLS listener whose certificate the configured CA did not sign
    const srvCert = other.server();
    const { readFileSync } = await import('node:fs');
    const server = tls.createServer({ cert: readFileSync(srvCert.cert), key: readFileSync(srvCert.key) }, (s) => s.destroy());
    server.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
    try {
      chmodSync(client.key, 0o600);
      const k = await doctorJson(['--config', configFile(raw), '--timeout', TIMEOUT]);
      assert.equal(row(k.rows, 'broker TLS files').status, 'pass');
      const br = row(k.rows, 'broker');
      assert.equal(br.status, 'fail');
      assert.equal(br.reason, 'tls', br.detail);
      assert.match(br.detail, /TLS error .*caFile/);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe('config errors and usage', () => {
  test('an invalid config: every error printed, exit 1, nothing else checked', async () => {
    const file = configFile({ site: 's1', rack: 'r1', mqtt: { url: 'http://nope' }, devices: [{ id: 'x', driver: 'luxos' }, { id: 'y', driver: 'nosuch' }] });
    const r = await doctor(['--config', file]);
    assert.equal(r.code, 1);
    assert.match(r.text, /^FAIL +config +.*3 error\(s\)/m);
    assert.match(r.text, /mqtt\.url: expected a broker URL/);
    assert.match(r.text, /devices\[0\]\.host: /);
    assert.match(r.text, /devices\[1\]\.driver: unknown driver "nosuch"/);
    assert.doesNotMatch(r.text, /^\w+ +(broker|device|clock)/m);
    const j = await doctorJson(['--config', file]);
    assert.equal(j.rows.length, 1);
    assert.equal((j.rows[0]?.errors as string[]).length, 3);
  });

  test('a missing config file says so; usage errors exit 2', async () => {
    const r = await doctor(['--config', join(tempDir('rp-none-'), 'nope.yaml')]);
    assert.equal(r.code, 1);
    assert.match(r.text, /ENOENT/);
    for (const args of [['--timeout', 'soon'], ['--bogus'], ['extra'], ['--timeout', '5']]) {
      const u = await doctor(args);
      assert.equal(u.code, 2, args.join(' '));
      assert.match(u.err, /usage: rackpilot doctor/);
    }
    assert.equal((await doctor(['--help'])).code, 0);
  });
});

describe('serial ports', () => {
  const socat = requireTool('socat', 'socat');
  test('a pty this user can use passes (with a meter answering on it); a missing path fails', { skip: 'skip' in socat ? socat.skip : false }, async () => {
    if ('skip' in socat) return;
    const pty = await ptyPair(socat.path);
    const sim = new ModbusMeterSim({ meter: 'sdm630' });
    try {
      await sim.attachRtu(pty.b, { baudRate: 19200 });
      const raw = {
        site: 's1',
        rack: 'r1',
        stateDir: tempDir('rp-st-'),
        mqtt: { url: `mqtt://127.0.0.1:${await freePort()}` },
        devices: [
          { id: 'meter1', driver: 'modbus-meter', transport: 'rtu', serial: { path: pty.a, baudRate: 19200 }, timeouts: { readMs: 300 } },
          { id: 'meter2', driver: 'modbus-meter', transport: 'rtu', serial: { path: '/dev/rackpilot-no-such-tty' } },
        ],
      };
      const j = await doctorJson(['--config', configFile(raw), '--timeout', '3000']);
      const s1 = row(j.rows, 'serial meter1');
      assert.equal(s1.status, 'pass', s1.detail);
      assert.match(s1.detail, /character device, readable and writable/);
      const s2 = row(j.rows, 'serial meter2');
      assert.equal(s2.status, 'fail');
      assert.match(s2.detail, /does not exist/);
      const d1 = row(j.rows, 'device meter1');
      assert.equal(d1.status, 'pass', d1.detail);
      assert.equal(row(j.rows, 'device meter2').status, 'fail');
      // a regular file is not a serial port
      const notTty = join(tempDir('rp-tty-'), 'ttyFAKE');
      writeFileSync(notTty, '');
      const j2 = await doctorJson(['--config', configFile({ ...raw, devices: [{ id: 'm3', driver: 'modbus-meter', transport: 'rtu', serial: { path: notTty } }] }), '--timeout', TIMEOUT]);
      assert.match(row(j2.rows, 'serial m3').detail, /not a character device/);
    } finally {
      await sim.close();
      await pty.dispose();
    }
  });
});

describe('NVML', () => {
  const build = buildMockNvml();
  test('the mock NVML passes with its GPU count; a missing library fails', { skip: 'skip' in build ? build.skip : false }, async () => {
    if ('skip' in build) return;
    const stateDir = tempDir('rp-gpu-');
    const raw = {
      site: 's1',
      rack: 'r1',
      stateDir,
      mqtt: { url: `mqtt://127.0.0.1:${await freePort()}` },
      devices: [
        { id: 'gpu1', driver: 'gpu', libraryPath: build.current, stateDir },
        { id: 'gpu2', driver: 'gpu', libraryPath: join(stateDir, 'missing', 'libnvidia-ml.so.1'), stateDir },
      ],
    };
    const j = await doctorJson(['--config', configFile(raw), '--timeout', '3000']);
    const ok = row(j.rows, 'nvml gpu1');
    assert.equal(ok.status, 'pass', ok.detail);
    assert.equal(ok.gpus, 2); // MOCK_NVML_GPUS defaults to 2
    assert.match(ok.detail, /2 GPU\(s\)/);
    const missing = row(j.rows, 'nvml gpu2');
    assert.equal(missing.status, 'fail');
    assert.match(missing.detail, /missing\/libnvidia-ml\.so\.1 not found: install the NVIDIA driver/);
    // one library for every GPU device: one row named "nvml"
    const one = await doctorJson(['--config', configFile({ ...raw, devices: raw.devices.slice(0, 1) }), '--timeout', '3000']);
    assert.equal(row(one.rows, 'nvml').gpus, 2);
    assert.equal(row(j.rows, 'device gpu1').status, 'pass', row(j.rows, 'device gpu1').detail);
    assert.equal(row(j.rows, 'device gpu2').status, 'fail');
  });
});

describe('GPIO', () => {
  const gpio = (over: Record<string, unknown>): DeviceConfig[] => {
    const res = validateConfig({ site: 's1', rack: 'r1', mqtt: { url: 'mqtt://127.0.0.1:1' }, devices: [{ id: 'g1', driver: 'gpio', direction: 'out', ...over }] });
    assert.ok(res.ok, JSON.stringify(res));
    return res.config.devices;
  };

  test('no GPIO devices: skipped', async () => {
    const rows = await checkGpio([]);
    assert.deepEqual(rows.map((r) => r.status), ['skip']);
  });

  test('onoff: a sysfs tree with a writable export and the chip passes; no tree fails', async () => {
    const root = tempDir('rp-sysfs-');
    const chip = join(root, 'class', 'gpio', 'gpiochip512');
    mkdirSync(chip, { recursive: true });
    writeFileSync(join(root, 'class', 'gpio', 'export'), '');
    writeFileSync(join(chip, 'label'), 'pinctrl-bcm2711\n');
    writeFileSync(join(chip, 'base'), '512\n');
    writeFileSync(join(chip, 'ngpio'), '58\n');
    const devs = gpio({ chip: 'pinctrl-bcm2711', offset: 17 });
    const [ok] = await checkGpio(devs, { sysfsRoot: root, loadOnoff: () => Promise.resolve({}) });
    assert.equal(ok?.status, 'pass', ok?.detail);
    assert.match(ok?.detail ?? '', /is line 529; .*export is writable/);
    const [badChip] = await checkGpio(gpio({ chip: 'pinctrl-rp1', offset: 4 }), { sysfsRoot: root, loadOnoff: () => Promise.resolve({}) });
    assert.equal(badChip?.status, 'fail');
    assert.match(badChip?.detail ?? '', /chip "pinctrl-rp1" not found; chips present: "pinctrl-bcm2711"/);
    const [none] = await checkGpio(devs, { sysfsRoot: tempDir('rp-nosysfs-') });
    assert.equal(none?.status, 'fail');
    assert.match(none?.detail ?? '', /UNSUPPORTED: no sysfs GPIO interface/);
    const [native] = await checkGpio(devs, { sysfsRoot: root, loadOnoff: () => Promise.reject(new Error('epoll.node: cannot open shared object file')) });
    assert.equal(native?.status, 'fail');
    assert.match(native?.detail ?? '', /onoff GPIO library .* cannot be loaded/);
  });
});

describe('clock and node', () => {
  test('synced, unsynced and unknown, from each source', async () => {
    assert.equal((await checkClock(SYNCED)).status, 'pass');
    const no = await checkClock(probes({ status: 'ok', stdout: 'no\n' }));
    assert.equal(no.status, 'warn');
    assert.match(no.detail, /not synchronised .*evidence timestamps/);
    const flag = await checkClock(probes({ status: 'failed', message: 'System has not been booted with systemd' }, true));
    assert.equal(flag.status, 'pass');
    assert.match(flag.detail, /systemd-timesyncd/);
    const chrony = await checkClock(probes({ status: 'missing' }, false, { status: 'ok', stdout: 'Reference ID    : 7F7F0101 ()\nLeap status     : Normal\n' }));
    assert.equal(chrony.status, 'pass');
    const chronyNo = await checkClock(probes({ status: 'missing' }, false, { status: 'ok', stdout: 'Leap status     : Not synchronised\n' }));
    assert.equal(chronyNo.status, 'warn');
    const unknown = await checkClock(probes({ status: 'missing' }));
    assert.equal(unknown.status, 'warn');
    assert.match(unknown.detail, /cannot tell whether the clock is synchronised \(no timedatectl; no chronyc\)/);
    // the real probes on this machine answer one way or another
    assert.ok(['pass', 'warn'].includes((await checkClock()).status));
  });

  test('Node version and architecture', () => {
    assert.equal(checkNode().status, 'pass');
    assert.equal(checkNode('18.19.0', 'x64').status, 'fail');
    assert.match(checkNode('18.19.0', 'x64').detail, /needs Node\.js 20 or newer/);
    assert.equal(checkNode('22.1.0', 'riscv64').status, 'warn');
  });
});
