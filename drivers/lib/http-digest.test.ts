import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DigestSession, digestResponse, parseAuthParams, parseDigestChallenge, verifyDigest } from './http-digest.js';

describe('http digest', () => {
  test('RFC 7616 section 3.9.1 MD5 example', () => {
    const r = digestResponse({
      username: 'Mufasa',
      password: 'Circle of Life',
      method: 'GET',
      uri: '/dir/index.html',
      realm: 'http-auth@example.org',
      nonce: '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v',
      qop: 'auth',
      nc: '00000001',
      cnonce: 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ',
    });
    assert.equal(r, '8ca523f5e9506fed4657c9700eebdbec');
  });

  test('RFC 2617 section 3.5 example', () => {
    const r = digestResponse({
      username: 'Mufasa',
      password: 'Circle Of Life',
      method: 'GET',
      uri: '/dir/index.html',
      realm: 'testrealm@host.com',
      nonce: 'dcd98b7102dd2f0e8b11d0f600bfb0c093',
      qop: 'auth',
      nc: '00000001',
      cnonce: '0a4f113b',
    });
    assert.equal(r, '6629fae49393a05397450978507c4ef1');
  });

  test('parses challenges: quoted commas, escapes, several schemes, qop lists', () => {
    const p = parseAuthParams('a=1, b="x, \\"y\\"", C=z');
    assert.deepEqual([...p], [['a', '1'], ['b', 'x, "y"'], ['c', 'z']]);
    const c = parseDigestChallenge('Basic realm="x", Digest realm="antMiner Configuration", nonce="abc", qop="auth,auth-int", opaque="o"');
    assert.deepEqual(c, { realm: 'antMiner Configuration', nonce: 'abc', opaque: 'o', qop: 'auth', algorithm: 'MD5', stale: false });
    assert.equal(parseDigestChallenge('Digest realm="r", nonce="n", algorithm=SHA-256'), undefined);
    assert.equal(parseDigestChallenge('Digest realm="r", nonce="n", qop="auth-int"'), undefined);
    assert.equal(parseDigestChallenge('Basic realm="r"'), undefined);
    assert.equal(parseDigestChallenge(undefined), undefined);
    assert.equal(parseDigestChallenge('Digest realm="r", nonce="n", stale=TRUE')?.stale, true);
    assert.equal(parseDigestChallenge('Digest realm="r", nonce="n"')?.qop, undefined);
  });

  test('a session answers its challenge, counts nonce uses, and the verifier agrees', () => {
    const s = new DigestSession('root', 'root');
    assert.equal(s.authorization('GET', '/'), undefined);
    assert.ok(s.accept('Digest realm="antMiner Configuration", nonce="n1", qop="auth"'));
    const users = { root: 'root' };
    const nonceValid = (n: string) => n === 'n1';
    const h1 = s.authorization('GET', '/cgi-bin/get_miner_conf.cgi');
    const h2 = s.authorization('POST', '/cgi-bin/set_miner_conf.cgi');
    assert.match(h1 ?? '', /nc=00000001/);
    assert.match(h2 ?? '', /nc=00000002/);
    assert.equal(verifyDigest({ header: h1, method: 'GET', realm: 'antMiner Configuration', users, nonceValid }), 'ok');
    assert.equal(verifyDigest({ header: h2, method: 'POST', realm: 'antMiner Configuration', users, nonceValid }), 'ok');
    assert.equal(verifyDigest({ header: h2, method: 'GET', realm: 'antMiner Configuration', users, nonceValid }), 'bad', 'method is signed');
    assert.equal(verifyDigest({ header: h1, method: 'GET', realm: 'antMiner Configuration', users: { root: 'other' }, nonceValid }), 'bad');
    assert.equal(verifyDigest({ header: h1, method: 'GET', realm: 'antMiner Configuration', users, nonceValid: () => false }), 'stale');
    assert.equal(verifyDigest({ header: undefined, method: 'GET', realm: 'r', users, nonceValid }), 'missing');
    assert.equal(verifyDigest({ header: 'Basic cm9vdDpyb290', method: 'GET', realm: 'r', users, nonceValid }), 'missing');
  });

  test('RFC 2069 form (no qop) and MD5-sess', () => {
    const s = new DigestSession('u', 'p');
    s.accept('Digest realm="r", nonce="n"');
    const h = s.authorization('GET', '/x') ?? '';
    assert.doesNotMatch(h, /qop=/);
    assert.equal(verifyDigest({ header: h, method: 'GET', realm: 'r', users: { u: 'p' }, nonceValid: () => true }), 'ok');
    s.accept('Digest realm="r", nonce="n2", qop="auth", algorithm=MD5-sess');
    const h2 = s.authorization('GET', '/x') ?? '';
    assert.match(h2, /algorithm=MD5-sess/);
    assert.equal(verifyDigest({ header: h2, method: 'GET', realm: 'r', users: { u: 'p' }, nonceValid: () => true }), 'ok');
  });

  test('the password never appears in the header', () => {
    const s = new DigestSession('root', 's3cret-pw');
    s.accept('Digest realm="r", nonce="n", qop="auth"');
    assert.ok(!(s.authorization('GET', '/') ?? '').includes('s3cret-pw'));
  });
});
