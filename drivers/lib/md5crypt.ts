/**
 * md5crypt ("$1$", FreeBSD/glibc MD5-based crypt, as `openssl passwd -1`),
 * on node:crypto's MD5. Needed by the Whatsminer API v2 token exchange. No
 * well-kept typed npm package was found (`md5crypt` does not exist on npm;
 * `nano-md5` is untyped and single-maintainer), so it is implemented here
 * and pinned by vectors from `openssl passwd -1` (md5crypt.test.ts).
 */
import { createHash } from 'node:crypto';

const ITOA64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const MAGIC = '$1$';

function to64(v: number, n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) {
    out += ITOA64[v & 0x3f];
    v >>>= 6;
  }
  return out;
}

/** The salt md5crypt actually uses: an optional "$1$" prefix removed, up to the next "$", at most 8 chars. */
export function md5cryptSalt(salt: string): string {
  let s = salt.startsWith(MAGIC) ? salt.slice(MAGIC.length) : salt;
  const dollar = s.indexOf('$');
  if (dollar >= 0) s = s.slice(0, dollar);
  return s.slice(0, 8);
}

/** Returns the full "$1$<salt>$<22-char hash>" string. */
export function md5crypt(password: string, salt: string): string {
  const pw = Buffer.from(password, 'utf8');
  const sl = md5cryptSalt(salt);
  const s = Buffer.from(sl, 'utf8');

  const alt = createHash('md5').update(pw).update(s).update(pw).digest();
  const ctx = createHash('md5').update(pw).update(MAGIC).update(s);
  for (let left = pw.length; left > 0; left -= 16) ctx.update(alt.subarray(0, Math.min(16, left)));
  for (let i = pw.length; i > 0; i >>>= 1) ctx.update((i & 1) !== 0 ? Buffer.from([0]) : pw.subarray(0, 1));
  let fin = ctx.digest();

  for (let i = 0; i < 1000; i++) {
    const c = createHash('md5');
    c.update((i & 1) !== 0 ? pw : fin);
    if (i % 3 !== 0) c.update(s);
    if (i % 7 !== 0) c.update(pw);
    c.update((i & 1) !== 0 ? fin : pw);
    fin = c.digest();
  }

  const f = (i: number): number => fin[i] ?? 0;
  const hash =
    to64((f(0) << 16) | (f(6) << 8) | f(12), 4) +
    to64((f(1) << 16) | (f(7) << 8) | f(13), 4) +
    to64((f(2) << 16) | (f(8) << 8) | f(14), 4) +
    to64((f(3) << 16) | (f(9) << 8) | f(15), 4) +
    to64((f(4) << 16) | (f(10) << 8) | f(5), 4) +
    to64(f(11), 2);
  return `${MAGIC}${sl}$${hash}`;
}

/** Only the 22-character hash part (what the Whatsminer API v2 calls the key / the sign). */
export function md5cryptHash(password: string, salt: string): string {
  const full = md5crypt(password, salt);
  return full.slice(full.lastIndexOf('$') + 1);
}
