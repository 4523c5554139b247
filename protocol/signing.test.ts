import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  canonicalJson,
  CommandVerifier,
  generateSigningKeyPair,
  parsePrivateKey,
  parsePublicKey,
  prepareCommand,
  rawPublicKey,
  signCommand,
  signingBytes,
  verifyCommandSignature,
  type JsonObject,
} from './signing.js';

describe('canonical JSON', () => {
  test('RFC 8785 §3.2.2 sample: numbers, strings and literals serialize as JCS does', () => {
    const input = JSON.parse(
      '{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","literals":[null,true,false]}',
    ) as unknown;
    assert.equal(
      canonicalJson(input),
      '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    );
  });

  test('RFC 8785 §3.2.3 sample: keys sorted by UTF-16 code units, recursively, no whitespace', () => {
    const keys = ['\u20ac', '\r', '\ufb33', '1', '\ud83d\ude00', '\u0080', '\u00f6'];
    const obj = Object.fromEntries(keys.map((k, i) => [k, i]));
    assert.equal(canonicalJson(obj), '{"\\r":1,"1":3,"\u0080":5,"\u00f6":6,"\u20ac":0,"\ud83d\ude00":4,"\ufb33":2}');
    assert.equal(canonicalJson({ b: [{ z: 1, a: [2, 1] }], a: { y: -0, x: 'é' } }), '{"a":{"x":"é","y":0},"b":[{"a":[2,1],"z":1}]}');
  });

  test('undefined members are left out as JSON.stringify does; what is not JSON is refused with its path', () => {
    assert.equal(canonicalJson({ a: undefined, b: 1 }), '{"b":1}');
    const refused: [unknown, RegExp][] = [
      [{ a: { b: NaN } }, /a\.b: NaN is not a JSON number/],
      [[Infinity], /\[0\]: Infinity/],
      [{ s: 'x\ud800' }, /s: string with an unpaired surrogate/],
      [{ ['\udc00']: 1 }, /unpaired surrogate/],
      [{ n: 1n }, /n: a bigint is not a JSON value/],
      [{ d: new Date(0) }, /d: only plain objects/],
      [[undefined], /\[0\]: a undefined is not a JSON value/],
      [{ f: () => 1 }, /f: a function/],
    ];
    for (const [v, re] of refused) assert.throws(() => canonicalJson(v), re);
    let deep: unknown = 1;
    for (let i = 0; i < 40; i++) deep = [deep];
    assert.throws(() => canonicalJson(deep), /nested deeper than 32/);
    // a lone surrogate pair written as escapes in JSON is one code point: accepted
    assert.equal(canonicalJson(JSON.parse('"\\ud83d\\ude00"')), '"\ud83d\ude00"');
  });

  test('signingBytes leave sig out and are UTF-8', () => {
    assert.equal(signingBytes({ b: 'é', a: 1, sig: { x: 1 } }).toString('hex'), Buffer.from('{"a":1,"b":"é"}', 'utf8').toString('hex'));
  });
});

describe('keys', () => {
  test('a public key reads the same from PEM and from base64 of its raw 32 bytes; private or non-Ed25519 keys are refused', () => {
    const pair = generateSigningKeyPair();
    assert.equal(rawPublicKey(parsePublicKey(pair.publicKeyPem)), pair.publicKeyRaw);
    assert.equal(rawPublicKey(parsePublicKey(pair.publicKeyRaw)), pair.publicKeyRaw);
    assert.equal(Buffer.from(pair.publicKeyRaw, 'base64').length, 32);
    // base64url of the same bytes, surrounding whitespace
    assert.equal(rawPublicKey(parsePublicKey(` ${Buffer.from(pair.publicKeyRaw, 'base64').toString('base64url')}\n`)), pair.publicKeyRaw);
    assert.throws(() => parsePublicKey(pair.privateKeyPem), /this is a private key/);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'pem', type: 'spki' }).toString();
    assert.throws(() => parsePublicKey(rsa), /is a rsa key; expected Ed25519/);
    assert.throws(() => parsePublicKey('abc'), /expected a PEM public key .* or the base64 of a 32-byte Ed25519 public key/);
    assert.throws(() => parsePublicKey('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----'), /not a valid PEM public key/);
    assert.equal(parsePrivateKey(pair.privateKeyPem).asymmetricKeyType, 'ed25519');
    assert.throws(() => parsePrivateKey(pair.publicKeyPem), /not a PEM private key/);
  });
});

const T0 = Date.parse('2030-01-01T00:00:00.000Z');
const TARGET = 'site-a/rack-01';

function keyring() {
  const a = generateSigningKeyPair();
  const b = generateSigningKeyPair();
  const keys = new Map([
    ['central-a', parsePublicKey(a.publicKeyPem)],
    ['central-b', parsePublicKey(b.publicKeyRaw)],
  ]);
  const priv = { a: parsePrivateKey(a.privateKeyPem), b: parsePrivateKey(b.privateKeyPem) };
  const signed = (cmd: JsonObject, who: 'a' | 'b' = 'a', now = T0, keyId = `central-${who}`): JsonObject =>
    signCommand(prepareCommand(cmd, { target: TARGET, now }), priv[who], keyId);
  return { keys, priv, signed };
}

describe('sign and verify', () => {
  test('prepareCommand fills target, issuedAt, expiresAt (+60 s) and a nonce, keeping what is there', () => {
    const p = prepareCommand({ id: 'c1', command: 'ping', sig: 'old' }, { target: TARGET, now: T0 });
    assert.deepEqual(Object.keys(p).sort(), ['command', 'expiresAt', 'id', 'issuedAt', 'nonce', 'target']);
    assert.equal(p.issuedAt, '2030-01-01T00:00:00.000Z');
    assert.equal(p.expiresAt, '2030-01-01T00:01:00.000Z');
    assert.match(p.nonce as string, /^[A-Za-z0-9_-]{24}$/);
    const kept = prepareCommand({ id: 'c1', command: 'ping', nonce: 'n'.repeat(16), expiresAt: 5, target: 'x/y' }, { target: TARGET, now: T0, ttlMs: 1 });
    assert.equal(kept.nonce, 'n'.repeat(16));
    assert.equal(kept.expiresAt, 5);
    assert.equal(kept.target, 'x/y');
    assert.notEqual(prepareCommand({}, { target: TARGET }).nonce, prepareCommand({}, { target: TARGET }).nonce);
  });

  test('a signature verifies whatever the member order and whitespace of the transported JSON; any change breaks it', () => {
    const { keys, signed } = keyring();
    const cmd = signed({ id: 'c1', command: 'curtail', params: { maxW: 5000, devices: undefined } });
    assert.deepEqual(Object.keys(cmd.sig as object), ['keyId', 'alg', 'value']);
    assert.match((cmd.sig as { value: string }).value, /^[A-Za-z0-9+/]{86}==$/);
    // re-encoded: members reversed, pretty-printed
    const reordered = JSON.parse(JSON.stringify(Object.fromEntries(Object.entries(cmd).reverse()), null, 2)) as JsonObject;
    assert.deepEqual(verifyCommandSignature(reordered, keys), { ok: true, keyId: 'central-a' });
    for (const change of [
      { params: { maxW: 5001 } },
      { id: 'c2' },
      { command: 'restore' },
      { expiresAt: '2031-01-01T00:00:00.000Z' },
      { nonce: 'x'.repeat(24) },
      { target: 'site-a/rack-02' },
      { extra: 1 },
    ]) {
      const r = verifyCommandSignature({ ...cmd, ...change }, keys);
      assert.equal(r.ok ? 'ok' : r.code, 'BAD_SIGNATURE', JSON.stringify(change));
    }
  });

  test('unsigned, unknown key, a key id naming the other key, a truncated signature are told apart', () => {
    const { keys, signed, priv } = keyring();
    const code = (c: JsonObject) => {
      const r = verifyCommandSignature(c, keys);
      return r.ok ? 'ok' : r.code;
    };
    assert.equal(code({ id: 'c1', command: 'ping' }), 'UNSIGNED');
    assert.equal(code(signed({ id: 'c1', command: 'ping' }, 'a', T0, 'central-z')), 'UNKNOWN_KEY');
    assert.equal(code(signCommand(prepareCommand({ id: 'c1', command: 'ping' }, { target: TARGET }), priv.b, 'central-a')), 'BAD_SIGNATURE');
    const c = signed({ id: 'c1', command: 'ping' });
    assert.equal(code({ ...c, sig: { ...(c.sig as object), value: 'AAAA' } }), 'BAD_SIGNATURE');
    assert.equal(code({ ...c, sig: { ...(c.sig as object), alg: 'rsa' } }), 'INVALID_COMMAND');
    assert.equal(code(signed({ id: 'c1', command: 'ping' }, 'b')), 'ok');
    assert.throws(() => signCommand({ id: 'c1', command: 'ping' }, priv.a, 'central-a'), /lacks issuedAt, expiresAt, nonce, target/);
  });
});

describe('CommandVerifier', () => {
  const opts = { requireSigned: true, maxClockSkewMs: 5_000, replayWindowMs: 60_000, target: TARGET, startedAt: T0 - 3_600_000 };
  const code = (v: CommandVerifier, c: JsonObject, now = T0): string => {
    const r = v.check(c, now);
    return r.ok ? `ok:${r.keyId ?? '-'}` : r.code;
  };

  test('each refusal has its own code; a nonce is good once', () => {
    const { keys, signed, priv } = keyring();
    const v = new CommandVerifier({ ...opts, keys });
    assert.equal(code(v, { id: 'u', command: 'ping' }), 'UNSIGNED');
    assert.equal(code(v, signed({ id: 'k', command: 'ping' }, 'a', T0, 'nope')), 'UNKNOWN_KEY');
    assert.equal(code(v, { ...signed({ id: 'f', command: 'ping' }), command: 'curtail' }), 'BAD_SIGNATURE');
    assert.equal(code(v, signed({ id: 'w', command: 'ping', target: 'site-a/rack-02' })), 'WRONG_TARGET');
    assert.equal(code(v, signed({ id: 'old', command: 'ping' }, 'a', T0 - 60_001)), 'STALE');
    assert.equal(code(v, signed({ id: 'edge', command: 'ping' }, 'a', T0 - 60_000)), 'ok:central-a');
    assert.equal(code(v, signed({ id: 'future', command: 'ping' }, 'a', T0 + 5_001)), 'STALE');
    assert.equal(code(v, signed({ id: 'skewed', command: 'ping' }, 'a', T0 + 5_000)), 'ok:central-a');
    const good = signed({ id: 'g', command: 'ping' }, 'b');
    assert.equal(code(v, good), 'ok:central-b');
    assert.equal(code(v, good), 'REPLAYED');
    assert.equal(code(v, signed({ id: 'other', command: 'ping', nonce: good.nonce })), 'REPLAYED');
    // validly signed, but without a nonce (signCommand refuses that: signed by hand)
    const { sig: _sig, nonce: _n, ...noNonce } = good;
    const bare = { ...noNonce, id: 'bare', sig: { keyId: 'central-a', alg: 'ed25519', value: '' } };
    bare.sig.value = sign(null, signingBytes(bare), priv.a).toString('base64');
    const r = v.check(bare, T0);
    assert.deepEqual(r, { ok: false, code: 'INVALID_COMMAND', message: 'a signed command must carry id, issuedAt, expiresAt, nonce, target; missing: nonce' });
  });

  test('a refused command does not use up its nonce; a nonce is forgotten once its command is stale anyway', () => {
    const { keys, signed } = keyring();
    const v = new CommandVerifier({ ...opts, keys });
    const early = signed({ id: 'e', command: 'ping' }, 'a', T0 + 10_000);
    assert.equal(code(v, early), 'STALE');
    assert.equal(code(v, early, T0 + 10_000), 'ok:central-a');
    assert.equal(v.remembered, 1);
    assert.equal(code(v, signed({ id: 'n', command: 'ping' }, 'a', T0 + 80_000), T0 + 80_000), 'ok:central-a');
    assert.equal(v.remembered, 1, 'the first nonce (issued 70 s earlier) was pruned');
    assert.equal(code(v, early, T0 + 80_000), 'STALE', 'and its replay is stale');
  });

  test('commands issued before the agent started are stale (their nonces died with the previous process)', () => {
    const { keys, signed } = keyring();
    const v = new CommandVerifier({ ...opts, keys, startedAt: T0 });
    assert.equal(code(v, signed({ id: 'pre', command: 'ping' }, 'a', T0 - 1)), 'STALE');
    assert.match((v.check(signed({ id: 'pre', command: 'ping' }, 'a', T0 - 1), T0) as { message: string }).message, /before 2030-01-01T00:00:00.000Z, when this agent started/);
    assert.equal(code(v, signed({ id: 'post', command: 'ping' }, 'a', T0)), 'ok:central-a');
  });

  test('a verifier replacing another (config reload) keeps its nonces and its start: a redelivery is still a replay', () => {
    const { keys, signed } = keyring();
    const before = new CommandVerifier({ ...opts, keys, startedAt: T0 });
    const c = signed({ id: 'r1', command: 'ping' }, 'a', T0 + 1_000);
    assert.equal(code(before, c, T0 + 1_000), 'ok:central-a');
    const after = new CommandVerifier({ ...opts, keys, startedAt: T0 + 2_000 });
    after.adopt(before);
    assert.equal(after.remembered, 1);
    assert.equal(code(after, c, T0 + 2_500), 'REPLAYED', 'not run again, and not called stale either');
    assert.equal(code(after, signed({ id: 'r2', command: 'ping' }, 'a', T0 + 1_500), T0 + 2_500), 'ok:central-a', 'issued before the reload, delivered after: accepted');
    const fresh = new CommandVerifier({ ...opts, keys, startedAt: T0 + 2_000 });
    assert.equal(code(fresh, c, T0 + 2_500), 'STALE', 'without adopt() a new process would refuse it as stale');
  });

  test('the nonce memory is bounded: on overflow the oldest goes and anything issued up to it becomes stale', () => {
    const { keys, signed } = keyring();
    const v = new CommandVerifier({ ...opts, keys, maxNonces: 3 });
    const cmds = [1, 2, 3, 4].map((i) => signed({ id: `c${i}`, command: 'ping' }, 'a', T0 + i));
    for (const c of cmds) assert.equal(code(v, c, T0 + 10), 'ok:central-a');
    assert.equal(v.remembered, 3);
    assert.equal(code(v, cmds[0]!, T0 + 10), 'STALE', 'forgotten nonce: refused as stale, not run again');
    assert.equal(code(v, cmds[3]!, T0 + 10), 'REPLAYED');
    assert.equal(code(v, signed({ id: 'c0', command: 'ping' }, 'a', T0 + 1), T0 + 10), 'STALE');
    assert.equal(code(v, signed({ id: 'c5', command: 'ping' }, 'a', T0 + 2), T0 + 10), 'ok:central-a');
  });

  test('optional signing accepts unsigned commands but still verifies signed ones; without keys only target is checked', () => {
    const { keys, signed } = keyring();
    const v = new CommandVerifier({ ...opts, keys, requireSigned: false });
    assert.equal(code(v, { id: 'u', command: 'ping' }), 'ok:-');
    assert.equal(code(v, { id: 'u', command: 'ping', target: 'x/y' }), 'WRONG_TARGET');
    assert.equal(code(v, { ...signed({ id: 'f', command: 'ping' }), id: 'g' }), 'BAD_SIGNATURE');
    const none = new CommandVerifier({ ...opts, keys: new Map(), requireSigned: false });
    assert.equal(code(none, { ...signed({ id: 'f', command: 'ping' }), id: 'forged' }), 'ok:-');
    assert.equal(code(none, { id: 'u', command: 'ping', target: 'x/y' }), 'WRONG_TARGET');
    assert.throws(() => new CommandVerifier({ ...opts, keys: new Map() }), /requireSigned needs at least one key/);
  });
});
