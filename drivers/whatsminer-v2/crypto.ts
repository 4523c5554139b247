/**
 * Whatsminer API v2 write-path cryptography (api-facts.md §2), shared by the
 * driver and its simulator and pinned by vectors made with openssl:
 *   key    = hash part of md5crypt(password, salt)
 *   aesKey = sha256(key)            (32 raw bytes)
 *   sign   = hash part of md5crypt(key + time, newsalt)   (the "token")
 * A write is `{"enc":1,"data": base64(AES-256-ECB(JSON, zero padded))}`; the
 * miner answers `{"enc":"<base64>"}` encrypted the same way.
 */
import { createCipheriv, createDecipheriv, createHash } from 'node:crypto';
import { md5cryptHash } from '../lib/md5crypt.js';

export interface TokenMsg {
  time: string;
  salt: string;
  newsalt: string;
}

export interface V2Token {
  /** Goes into each write as `token`. */
  sign: string;
  aesKey: Buffer;
}

export function deriveKey(password: string, salt: string): string {
  return md5cryptHash(password, salt);
}

export function deriveToken(password: string, msg: TokenMsg): V2Token {
  const key = deriveKey(password, msg.salt);
  return {
    sign: md5cryptHash(key + msg.time, msg.newsalt),
    aesKey: createHash('sha256').update(key, 'utf8').digest(),
  };
}

export function encrypt(aesKey: Buffer, plaintext: string): string {
  const bytes = Buffer.from(plaintext, 'utf8');
  const padded = Buffer.alloc(Math.ceil(bytes.length / 16) * 16 || 16);
  bytes.copy(padded);
  const c = createCipheriv('aes-256-ecb', aesKey, null);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(padded), c.final()]).toString('base64');
}

/** Decrypts base64 AES-256-ECB and strips the zero padding. Throws when the input is not whole blocks. */
export function decrypt(aesKey: Buffer, b64: string): string {
  const data = Buffer.from(b64, 'base64');
  if (data.length === 0 || data.length % 16 !== 0) throw new Error(`ciphertext of ${data.length} bytes is not whole AES blocks`);
  const d = createDecipheriv('aes-256-ecb', aesKey, null);
  d.setAutoPadding(false);
  const plain = Buffer.concat([d.update(data), d.final()]);
  let end = plain.length;
  while (end > 0 && plain[end - 1] === 0) end--;
  return plain.subarray(0, end).toString('utf8');
}

/** The write request as sent on the wire. */
export function sealCommand(token: V2Token, cmd: string, args: Record<string, string>): string {
  return JSON.stringify({ enc: 1, data: encrypt(token.aesKey, JSON.stringify({ cmd, ...args, token: token.sign })) });
}
