import { test } from 'node:test';
import assert from 'node:assert/strict';
import { md5crypt, md5cryptHash, md5cryptSalt } from './md5crypt.js';

// Vectors from `openssl passwd -1 -salt <salt> <password>` (OpenSSL 3).
const VECTORS: [string, string, string][] = [
  ['password', 'saltsalt', '$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/'],
  ['admin', 'BQBwmoSn', '$1$BQBwmoSn$27dvh4cW2m77.zlvSZfuZ1'],
  ['', 'abcdefgh', '$1$abcdefgh$M55TzYaaccxVGbptZWaxX/'],
  ['a-very-long-password-over-sixteen-bytes-long', 'xy', '$1$xy$awRpbrxRp1qlZ2OUzumI0.'],
  ['päss', '12345678', '$1$12345678$68oBw8JKveyYdt.ZQmCas1'],
  ['x', 'toolongsaltvalue', '$1$toolongs$uq/hljtnqq8U5Xice38qI.'],
];

test('md5crypt matches openssl passwd -1', () => {
  for (const [pw, salt, want] of VECTORS) assert.equal(md5crypt(pw, salt), want, `${pw} / ${salt}`);
});

test('a "$1$salt$" prefixed salt gives the same result, and md5cryptHash is the hash part', () => {
  assert.equal(md5crypt('password', '$1$saltsalt$'), '$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/');
  assert.equal(md5cryptHash('admin', 'BQBwmoSn'), '27dvh4cW2m77.zlvSZfuZ1');
  assert.equal(md5cryptSalt('$1$abc$def'), 'abc');
});
