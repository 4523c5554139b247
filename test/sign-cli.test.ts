import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { parse as parseYaml } from 'yaml';
import { CommandHandler } from '../agent/commands.js';
import { validateConfig } from '../agent/config.js';
import { runSign, type SignIo } from '../agent/sign-cli.js';
import { engineRig } from '../hil/testing/engine-rig.js';
import type { CommandResult } from '../protocol/messages.js';
import { generateSigningKeyPair, parsePublicKey, verifyCommandSignature, type JsonObject } from '../protocol/signing.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const NOW = Date.parse('2030-05-01T12:00:00.000Z');

async function sign(args: string[], stdin = '') {
  let out = '';
  let err = '';
  const io: SignIo = {
    stdin: Readable.from([Buffer.from(stdin)]),
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    now: () => NOW,
  };
  const code = await runSign(args, io);
  return { code, out, err };
}

function keygenDir() {
  const dir = tempDir('rp-sign-');
  return { dir, key: join(dir, 'central-2030.key') };
}

describe('rackpilot sign --keygen', () => {
  test('writes the private key 0600 and the public key, refuses to overwrite, prints a config entry that validates', async () => {
    const { key } = keygenDir();
    const r = await sign(['--keygen', '--out', key]);
    assert.equal(r.code, 0, r.err);
    assert.equal(statSync(key).mode & 0o777, 0o600);
    assert.equal(statSync(`${key}.pub`).mode & 0o077 & 0o022, 0, 'public key not writable by others');
    assert.match(readFileSync(key, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
    const pubPem = readFileSync(`${key}.pub`, 'utf8');
    assert.match(pubPem, /^-----BEGIN PUBLIC KEY-----\n/);
    // the printed YAML block is a valid `security` section naming the same key
    const yaml = r.out.slice(r.out.indexOf('security:'), r.out.indexOf('sign with:'));
    const block = parseYaml(yaml) as { security: { commandKeys: { id: string; publicKey: string }[] } };
    assert.equal(block.security.commandKeys[0]!.id, 'central-2030');
    assert.equal(parsePublicKey(block.security.commandKeys[0]!.publicKey).equals(parsePublicKey(pubPem)), true);
    const cfg = validateConfig({ site: 's', rack: 'r', mqtt: { url: 'mqtt://127.0.0.1:1883' }, ...block });
    assert.ok(cfg.ok, JSON.stringify(cfg));
    assert.equal(cfg.config.security.requireSigned, true, 'keys configured: signatures required by default');

    const before = readFileSync(key, 'utf8');
    const again = await sign(['--keygen', '--out', key, '--key-id', 'other']);
    assert.equal(again.code, 1);
    assert.match(again.err, /exists already; not overwritten/);
    assert.equal(readFileSync(key, 'utf8'), before);
    assert.equal((await sign(['--keygen'])).code, 2);
  });
});

describe('rackpilot sign', () => {
  async function setup() {
    const { key } = keygenDir();
    const g = await sign(['--keygen', '--out', key, '--key-id', 'ops-1']);
    assert.equal(g.code, 0);
    const keys = new Map([['ops-1', parsePublicKey(readFileSync(`${key}.pub`, 'utf8'))]]);
    return { key, keys };
  }

  test('signs a command from a file or stdin, filling target, issuedAt, expiresAt, nonce and id; the agent runs it', async () => {
    const { key, keys } = await setup();
    const file = join(tempDir('rp-cmd-'), 'cmd.json');
    writeFileSync(file, JSON.stringify({ id: 'op-1', command: 'curtail', params: { maxW: 4000 } }));
    const r = await sign([file, '--key', key, '--key-id', 'ops-1', '--target', 'site-a/rack-01', '--ttl', '120000']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, '');
    assert.equal(r.out.split('\n').length, 2, 'one line');
    const cmd = JSON.parse(r.out) as JsonObject;
    assert.deepEqual(Object.keys(cmd), ['id', 'command', 'params', 'target', 'issuedAt', 'expiresAt', 'nonce', 'sig']);
    assert.equal(cmd.issuedAt, '2030-05-01T12:00:00.000Z');
    assert.equal(cmd.expiresAt, '2030-05-01T12:02:00.000Z');
    assert.deepEqual(verifyCommandSignature(cmd, keys), { ok: true, keyId: 'ops-1' });

    const s = await sign(['--key', key, '--key-id', 'ops-1'], JSON.stringify({ command: 'ping', target: 'site-a/rack-01', nonce: 'abcdefghijklmnop' }));
    assert.equal(s.code, 0, s.err);
    const ping = JSON.parse(s.out) as JsonObject;
    assert.match(ping.id as string, /^op-[0-9a-z]+-[0-9a-f]{6}$/);
    assert.equal(ping.nonce, 'abcdefghijklmnop', 'a nonce given is kept');
    assert.equal(ping.expiresAt, '2030-05-01T12:01:00.000Z', 'default ttl 60 s');

    // the agent configured with this key accepts it (its clock at NOW)
    const results: CommandResult[] = [];
    const er = engineRig([]);
    const engine = er.engine;
    const pubRaw = readFileSync(`${key}.pub`, 'utf8');
    const cfg = validateConfig({ site: 'site-a', rack: 'rack-01', mqtt: { url: 'mqtt://127.0.0.1:1883' }, security: { commandKeys: [{ id: 'ops-1', publicKey: pubRaw }] } });
    assert.ok(cfg.ok);
    const clock = { t: NOW - 1000 }; // started before the command was signed
    const h = new CommandHandler(engine, new Set(), 0, (x) => results.push(x), '1', pino({ level: 'silent' }), {
      security: cfg.config.security,
      target: 'site-a/rack-01',
      wallNow: () => clock.t,
    });
    clock.t = NOW + 10;
    h.handle(Buffer.from(s.out), { retain: false });
    assert.deepEqual(results.map((x) => [x.status, x.error?.code]), [['accepted', undefined], ['succeeded', undefined]]);
    await er.stop();
  });

  test('usage errors exit 2, bad input exits 1, each saying what is wrong', async () => {
    const { key } = await setup();
    const cases: [string[], string, number, RegExp][] = [
      [['--key-id', 'k'], '{}', 2, /--key FILE .* is required/],
      [['--key', key], '{}', 2, /--key-id ID .* is required/],
      [['--key', key, '--key-id', 'ops-1'], '{"command":"ping"}', 2, /--target SITE\/RACK is required/],
      [['--key', key, '--key-id', 'ops-1', '--target', 'a'], '{}', 2, /--target: expected SITE\/RACK/],
      [['--key', key, '--key-id', 'a b', '--target', 'a/b'], '{}', 2, /--key-id: expected/],
      [['--key', key, '--key-id', 'ops-1', '--target', 'a/b', '--ttl', '5'], '{}', 2, /--ttl: expected milliseconds/],
      [['--key', `${key}.pub`, '--key-id', 'ops-1', '--target', 'a/b'], '{}', 1, /--key .*\.pub: not a PEM private key/],
      [['--key', key, '--key-id', 'ops-1', '--target', 'a/b'], 'nope', 1, /stdin: not JSON/],
      [['--key', key, '--key-id', 'ops-1', '--target', 'a/b'], '[1]', 1, /must be a JSON object/],
      [['--key', key, '--key-id', 'ops-1', '--target', 'a/b'], '{"command":"curtail","params":{"maxW":-1}}', 1, /not a valid v1 command:\n {2}params\.maxW: Too small/],
      [['--key', key, '--key-id', 'ops-1', '--target', 'a/b'], '{"command":"reboot"}', 1, /command: unknown command "reboot"/],
      [['--key', key, '--key-id', 'ops-1', '--target', 'a/b'], '{"command":"ping","expiresIn":5}', 1, /\(root\): Unrecognized key: "expiresIn"/],
      [['--key', key, '--key-id', 'ops-1', '--target', 'a/b'], '{"command":"ping","target":"c/d"}', 1, /target "c\/d" differs from --target a\/b/],
      [['--nope'], '', 2, /Unknown option '--nope'/],
    ];
    for (const [args, stdin, code, re] of cases) {
      const r = await sign(args, stdin);
      assert.equal(r.code, code, `${args.join(' ')} <<< ${stdin}: ${r.err}`);
      assert.match(r.err, re, args.join(' '));
      assert.equal(r.out, '');
    }
  });

  test('a private key readable by others is used, with a warning', async () => {
    const { dir } = keygenDir();
    const pem = generateSigningKeyPair().privateKeyPem;
    const loose = join(dir, 'loose.key');
    writeFileSync(loose, pem, { mode: 0o644 });
    const r = await sign(['--key', loose, '--key-id', 'k', '--target', 'a/b'], '{"command":"ping"}');
    assert.equal(r.code, 0);
    assert.match(r.err, /readable by group\/others; chmod 600 it/);
  });
});

describe('config: security', () => {
  const base = { site: 's', rack: 'r', mqtt: { url: 'mqtt://127.0.0.1:1883' } };
  test('defaults: no keys, unsigned accepted', () => {
    const c = validateConfig(base);
    assert.ok(c.ok);
    assert.deepEqual(c.config.security, { commandKeys: [], requireSigned: false, maxClockSkewMs: 30_000, replayWindowMs: 300_000 });
  });

  test('every key error is reported with its path', () => {
    const pair = generateSigningKeyPair();
    const c = validateConfig({
      ...base,
      security: {
        commandKeys: [
          { id: 'a', publicKey: pair.publicKeyRaw },
          { id: 'b', publicKey: pair.privateKeyPem },
          { id: 'c', publicKey: 'xyz' },
          { id: 'bad id', publicKey: pair.publicKeyPem },
        ],
        replayWindowMs: 10,
        extra: 1,
      },
    });
    assert.equal(c.ok, false);
    const errors = (c as { errors: string[] }).errors;
    assert.ok(errors.some((e) => /^security\.commandKeys\[1\]\.publicKey: this is a private key/.test(e)), errors.join('\n'));
    assert.ok(errors.some((e) => /^security\.commandKeys\[2\]\.publicKey: expected a PEM public key/.test(e)));
    assert.ok(errors.some((e) => /^security\.commandKeys\[3\]\.id: expected 1-64 characters/.test(e)));
    assert.ok(errors.some((e) => /^security\.replayWindowMs: Too small/.test(e)));
    assert.ok(errors.some((e) => /^security: Unrecognized key: "extra"/.test(e)));
  });

  test('duplicate key ids and requireSigned without keys are refused; requireSigned false with keys is kept', () => {
    const pair = generateSigningKeyPair();
    const dup = validateConfig({ ...base, security: { commandKeys: [{ id: 'a', publicKey: pair.publicKeyRaw }, { id: 'a', publicKey: pair.publicKeyPem }] } });
    assert.deepEqual((dup as { errors: string[] }).errors, ['security.commandKeys[1].id: duplicate key id "a" (also commandKeys[0].id)']);
    const none = validateConfig({ ...base, security: { requireSigned: true } });
    assert.deepEqual((none as { errors: string[] }).errors, ['security.requireSigned: true needs at least one key in security.commandKeys (rackpilot sign --keygen makes one)']);
    const opt = validateConfig({ ...base, security: { requireSigned: false, commandKeys: [{ id: 'a', publicKey: pair.publicKeyRaw }] } });
    assert.ok(opt.ok);
    assert.equal(opt.config.security.requireSigned, false);
  });
});
