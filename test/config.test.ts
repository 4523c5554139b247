import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { loadConfigFile, parseConfigText, validateConfig } from '../agent/config.js';
import { repoRoot } from '../hil/testing/root.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const root = repoRoot();
const cli = join(root, 'dist', 'agent', 'cli.js');

describe('example configs', () => {
  const files = readdirSync(join(root, 'examples')).filter((f) => f.endsWith('.yaml'));
  test('there are examples', () => assert.ok(files.length >= 2));
  for (const f of files) {
    test(`examples/${f} is valid`, () => {
      const res = loadConfigFile(join(root, 'examples', f));
      assert.ok(res.ok, res.ok ? '' : res.errors.join('\n'));
      assert.ok(res.config.devices.length > 0);
    });
  }
});

describe('config validation', () => {
  const base = { site: 's1', rack: 'r1', mqtt: { url: 'mqtt://127.0.0.1:1883' } };

  test('defaults are filled in', () => {
    const res = validateConfig({ ...base, devices: [{ id: 'm1', driver: 'luxos', host: '127.0.0.1' }] });
    assert.ok(res.ok);
    assert.equal(res.config.poll.intervalMs, 5000);
    assert.equal(res.config.mqtt.protocolVersion, 'auto');
    const d = res.config.devices[0]!;
    assert.ok(d.driver === 'luxos');
    assert.equal(d.port, 4028);
    assert.equal(d.timeouts.connectMs, 1000);
  });

  test('every error is reported at once, with its path', () => {
    const res = validateConfig({
      site: 'bad site!',
      mqtt: { url: 'http://x' },
      poll: { intervalMs: 'fast' },
      devices: [
        { id: 'm1', driver: 'luxos', host: '127.0.0.1' },
        { id: 'm2', driver: 'luxos', host: 42 },
        { id: 'm3', driver: 'nosuch', host: '127.0.0.1' },
        { id: 'm1', driver: 'luxos', host: '127.0.0.2' },
        { id: 'm5', driver: 'luxos', host: '127.0.0.1', colour: 'red' },
        { id: 'm6', host: '127.0.0.1' },
      ],
    });
    assert.equal(res.ok, false);
    const errs = res.ok ? [] : res.errors;
    const has = (re: RegExp): void => assert.ok(errs.some((e) => re.test(e)), `expected ${re} in:\n${errs.join('\n')}`);
    has(/^site: expected only letters, digits/);
    has(/^rack: expected string, received undefined/);
    has(/^mqtt\.url: expected a broker URL/);
    has(/^poll\.intervalMs: expected number, received string/);
    has(/^devices\[1\]\.host: expected string, received number/);
    has(/^devices\[2\]\.driver: unknown driver "nosuch" \(known: [a-z0-9-]+(, [a-z0-9-]+)*\)$/);
    assert.ok(errs.some((e) => e.startsWith('devices[2].driver') && e.includes('luxos')));
    has(/^devices\[3\]\.id: duplicate id "m1" \(also devices\[0\]\.id\)/);
    has(/^devices\[4\]: Unrecognized key: "colour"/);
    has(/^devices\[5\]\.driver: expected one of "[a-z0-9-]+"(, "[a-z0-9-]+")*$/);
    assert.equal(errs.length, 9, errs.join('\n'));
  });

  test('YAML syntax errors carry line and column', () => {
    const res = parseConfigText('site: a\nrack: [unclosed\n', 'x.yaml');
    assert.equal(res.ok, false);
    assert.match(res.ok ? '' : res.errors[0]!, /^x\.yaml:\d+:\d+: YAML error: /);
  });

  test('an unreadable file is a clear error', () => {
    const res = loadConfigFile('/nonexistent/rackpilot.yaml');
    assert.deepEqual(res.ok ? [] : res.errors, ['/nonexistent/rackpilot.yaml: cannot read config file (ENOENT)']);
  });
});

describe('rackpilot config check', () => {
  test('prints OK and exits 0 for a valid file', () => {
    const r = spawnSync(process.execPath, [cli, 'config', 'check', join(root, 'examples', 'rack.yaml')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /rack\.yaml: OK \(site austin-1, rack r07, 2 device\(s\)\)/);
  });

  test('prints every error and exits non-zero for an invalid file', () => {
    const dir = tempDir('rackpilot-cfg-');
    const f = join(dir, 'bad.yaml');
    writeFileSync(f, 'site: s\nrack: r\nmqtt: { url: mqtt://127.0.0.1 }\ndevices:\n  - { id: a, driver: luxos }\n  - { id: b, driver: luxos, host: h, port: 99999 }\n');
    const r = spawnSync(process.execPath, [cli, 'config', 'check', f], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /2 error\(s\)/);
    assert.match(r.stderr, /devices\[0\]\.host: expected string, received undefined/);
    assert.match(r.stderr, /devices\[1\]\.port: Too big: expected number to be <=65535/);
  });

  test('rackpilot run refuses to start when a TLS file named in config cannot be read', () => {
    const dir = tempDir('rackpilot-cfg-');
    const f = join(dir, 'tls.yaml');
    writeFileSync(f, `site: s\nrack: r\nmqtt: { url: "mqtts://127.0.0.1:9", tls: { caFile: /nonexistent/ca.pem } }\nlog: { level: silent }\nstateDir: ${dir}\n`);
    const r = spawnSync(process.execPath, [cli, 'run', '--config', f], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /mqtt\.tls\.caFile: cannot read "\/nonexistent\/ca\.pem" \(ENOENT\)/);
  });

  test('${NAME} in a string value is replaced from the environment; an unset one is an error with its path', () => {
    const text = 'site: s\nrack: r\nmqtt: { url: mqtt://127.0.0.1, password: "${RP_TEST_MQTT_PW}" }\ndevices:\n  - { id: a, driver: vnish, host: h, password: "x-${RP_TEST_UNSET_PW}" }\n';
    process.env.RP_TEST_MQTT_PW = 'from-env';
    delete process.env.RP_TEST_UNSET_PW;
    const bad = parseConfigText(text, 'e.yaml');
    assert.deepEqual(bad.ok ? [] : bad.errors, ['devices[0].password: environment variable RP_TEST_UNSET_PW is not set']);
    process.env.RP_TEST_UNSET_PW = 'pw2';
    const good = parseConfigText(text, 'e.yaml');
    assert.ok(good.ok, good.ok ? '' : good.errors.join('\n'));
    assert.equal(good.config.mqtt.password, 'from-env');
    assert.equal((good.config.devices[0] as { password?: string }).password, 'x-pw2');
    delete process.env.RP_TEST_MQTT_PW;
    delete process.env.RP_TEST_UNSET_PW;
  });
});

describe('feed: the PDU outlets feeding a device', () => {
  const base = { site: 's1', rack: 'r1', mqtt: { url: 'mqtt://127.0.0.1:1883' } };
  const pdu = { id: 'pdu-1', driver: 'pdu-snmp', host: '127.0.0.1', profile: 'apc-rpdu2' };

  test('a feed naming a PDU of this config is accepted', () => {
    const res = validateConfig({ ...base, devices: [pdu, { id: 'm1', driver: 'luxos', host: '127.0.0.1', feed: [{ pdu: 'pdu-1', outlet: '3' }] }] });
    assert.ok(res.ok, res.ok ? '' : res.errors.join('\n'));
  });

  test('a feed naming no device, or a device that is not a PDU, is an error with its path', () => {
    const res = validateConfig({
      ...base,
      devices: [
        pdu,
        { id: 'm1', driver: 'luxos', host: '127.0.0.1' },
        { id: 'm2', driver: 'antminer', host: '127.0.0.2', feed: [{ pdu: 'pdu-1', outlet: '1' }, { pdu: 'm1', outlet: '2' }] },
        { id: 'm3', driver: 'luxos', host: '127.0.0.3', feed: [{ pdu: 'pdu-9', outlet: '1' }] },
      ],
    });
    assert.equal(res.ok, false);
    const errs = res.ok ? [] : res.errors;
    assert.deepEqual(errs, ['devices[2].feed[1].pdu: "m1" is not a PDU in this config', 'devices[3].feed[0].pdu: "pdu-9" is not a PDU in this config']);
  });
});
