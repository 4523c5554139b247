/**
 * HTTP Digest access authentication (RFC 7616, MD5 with qop=auth, and the
 * RFC 2069 form without qop that old embedded web servers still send).
 * Client side: parse a WWW-Authenticate challenge, build the Authorization
 * header, keep the nonce warm between requests (nonce count increments, so
 * a curtail does not pay for a 401 round trip). Server side (simulators):
 * verify an Authorization header against a password.
 *
 * Why not an npm package: `digest-header` (node-modules) is client-only,
 * untyped and always sends a fresh cnonce with nc=1; the fetch/axios
 * wrappers do not fit node:http + our HttpClient. This is ~150 lines with
 * RFC test vectors in http-digest.test.ts.
 */
import { createHash, randomBytes } from 'node:crypto';

export interface DigestChallenge {
  realm: string;
  nonce: string;
  opaque?: string;
  /** The qop the client will use: 'auth', or undefined for the RFC 2069 form. */
  qop?: 'auth';
  algorithm: 'MD5' | 'MD5-sess';
  stale: boolean;
}

/** Splits `a=b, c="d, e"` into a map (quoted strings may hold commas and \-escapes). */
export function parseAuthParams(s: string): Map<string, string> {
  const out = new Map<string, string>();
  const re = /([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const key = (m[1] ?? '').toLowerCase();
    const value = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? '');
    out.set(key, value);
  }
  return out;
}

/**
 * Parses the Digest challenge of a WWW-Authenticate header (one header may
 * list several schemes; the first Digest one with a supported algorithm
 * wins). Returns undefined when there is none we can answer.
 */
export function parseDigestChallenge(header: string | string[] | undefined): DigestChallenge | undefined {
  const headers = Array.isArray(header) ? header : header === undefined ? [] : [header];
  for (const h of headers) {
    // Split at each scheme token ("Basic realm=..., Digest realm=...").
    const parts = h.split(/(?:^|,)\s*(?=(?:Basic|Digest|Bearer|Negotiate)\s)/i);
    for (const part of parts) {
      const m = /^\s*Digest\s+(.*)$/is.exec(part);
      if (!m) continue;
      const p = parseAuthParams(m[1] ?? '');
      const realm = p.get('realm');
      const nonce = p.get('nonce');
      if (realm === undefined || nonce === undefined) continue;
      const algo = (p.get('algorithm') ?? 'MD5').toUpperCase();
      if (algo !== 'MD5' && algo !== 'MD5-SESS') continue;
      const qops = (p.get('qop') ?? '').split(',').map((q) => q.trim().toLowerCase());
      if (p.has('qop') && !qops.includes('auth')) continue; // auth-int only: unsupported
      const opaque = p.get('opaque');
      return {
        realm,
        nonce,
        ...(opaque !== undefined ? { opaque } : {}),
        ...(p.has('qop') ? { qop: 'auth' as const } : {}),
        algorithm: algo === 'MD5' ? 'MD5' : 'MD5-sess',
        stale: (p.get('stale') ?? '').toLowerCase() === 'true',
      };
    }
  }
  return undefined;
}

const md5 = (s: string): string => createHash('md5').update(s, 'utf8').digest('hex');

export interface DigestInputs {
  username: string;
  password: string;
  method: string;
  uri: string;
  realm: string;
  nonce: string;
  algorithm?: 'MD5' | 'MD5-sess';
  qop?: 'auth';
  /** 8 hex digits, e.g. "00000001" (with qop only). */
  nc?: string;
  cnonce?: string;
}

/** The `response` value of RFC 7616 section 3.4.1 (MD5 family). */
export function digestResponse(i: DigestInputs): string {
  let ha1 = md5(`${i.username}:${i.realm}:${i.password}`);
  if (i.algorithm === 'MD5-sess') ha1 = md5(`${ha1}:${i.nonce}:${i.cnonce ?? ''}`);
  const ha2 = md5(`${i.method}:${i.uri}`);
  return i.qop === 'auth' ? md5(`${ha1}:${i.nonce}:${i.nc ?? ''}:${i.cnonce ?? ''}:auth:${ha2}`) : md5(`${ha1}:${i.nonce}:${ha2}`);
}

const quote = (s: string): string => `"${s.replace(/(["\\])/g, '\\$1')}"`;

/**
 * One client's digest state for one server: remembers the last challenge and
 * counts nonce uses, so later requests authenticate without a 401 first.
 */
export class DigestSession {
  private challenge: DigestChallenge | undefined;
  private nc = 0;
  private cnonce = '';
  private adopted = 0;

  constructor(
    private readonly username: string,
    private readonly password: string,
  ) {}

  get hasChallenge(): boolean {
    return this.challenge !== undefined;
  }

  /**
   * Changes whenever the challenge does (adopted or forgotten): an
   * Authorization built before no longer carries the nonce held. Each
   * `authorization()` takes a nonce count of its own, so one built ahead of
   * time (a prepared request) stays valid while this holds, whatever was
   * sent in between: RFC 7616 servers refuse a count seen twice (a replay),
   * and lighttpd (the Antminer web server) checks only the nonce. A server
   * that insists on counts in order answers 401, like one whose nonce went
   * stale, and gets a fresh challenge.
   */
  get epoch(): number {
    return this.adopted;
  }

  /** Adopts a challenge from a 401; false when the header holds no usable Digest challenge. */
  accept(header: string | string[] | undefined): boolean {
    const c = parseDigestChallenge(header);
    if (!c) return false;
    this.challenge = c;
    this.adopted++;
    this.nc = 0;
    this.cnonce = randomBytes(8).toString('hex');
    return true;
  }

  forget(): void {
    this.challenge = undefined;
    this.adopted++;
  }

  /** The Authorization header for a request, or undefined before any challenge. */
  authorization(method: string, uri: string): string | undefined {
    const c = this.challenge;
    if (!c) return undefined;
    this.nc++;
    const nc = this.nc.toString(16).padStart(8, '0');
    const response = digestResponse({
      username: this.username,
      password: this.password,
      method,
      uri,
      realm: c.realm,
      nonce: c.nonce,
      algorithm: c.algorithm,
      ...(c.qop ? { qop: c.qop, nc, cnonce: this.cnonce } : {}),
    });
    const parts = [
      `username=${quote(this.username)}`,
      `realm=${quote(c.realm)}`,
      `nonce=${quote(c.nonce)}`,
      `uri=${quote(uri)}`,
      `algorithm=${c.algorithm}`,
      `response=${quote(response)}`,
    ];
    if (c.opaque !== undefined) parts.push(`opaque=${quote(c.opaque)}`);
    if (c.qop) parts.push(`qop=auth`, `nc=${nc}`, `cnonce=${quote(this.cnonce)}`);
    return `Digest ${parts.join(', ')}`;
  }
}

export type DigestVerdict = 'ok' | 'missing' | 'bad' | 'stale';

/**
 * Server side (simulators): checks an Authorization header against the
 * password of `username` and the nonces the server issued.
 */
export function verifyDigest(opts: {
  header: string | undefined;
  method: string;
  realm: string;
  users: Record<string, string>;
  /** Whether the server issued this nonce and it is still valid. */
  nonceValid: (nonce: string) => boolean;
}): DigestVerdict {
  const h = opts.header;
  if (!h || !/^\s*Digest\s/i.test(h)) return 'missing';
  const p = parseAuthParams(h.replace(/^\s*Digest\s+/i, ''));
  const username = p.get('username');
  const nonce = p.get('nonce');
  const uri = p.get('uri');
  const response = p.get('response');
  if (username === undefined || nonce === undefined || uri === undefined || response === undefined) return 'bad';
  if (p.get('realm') !== opts.realm) return 'bad';
  const password = opts.users[username];
  if (password === undefined) return 'bad';
  const qop = p.get('qop');
  const algorithm = (p.get('algorithm') ?? 'MD5').toUpperCase() === 'MD5-SESS' ? 'MD5-sess' : 'MD5';
  const expected = digestResponse({
    username,
    password,
    method: opts.method,
    uri,
    realm: opts.realm,
    nonce,
    algorithm,
    ...(qop === 'auth' ? { qop: 'auth' as const, nc: p.get('nc') ?? '', cnonce: p.get('cnonce') ?? '' } : {}),
  });
  if (expected !== response.toLowerCase()) return 'bad';
  return opts.nonceValid(nonce) ? 'ok' : 'stale';
}
