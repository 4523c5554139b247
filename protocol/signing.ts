/**
 * Signed commands of the v1 contract: the canonical form, Ed25519 signing
 * and verification, key parsing, and the agent's acceptance rules
 * (CommandVerifier). Central control uses the same code to sign. Uses
 * node:crypto only and imports nothing from agent/ or drivers/.
 *
 * Canonical form (what is signed): the command object **without its `sig`
 * member**, serialized as JSON with
 *   - object members sorted by key, recursively, comparing keys as UTF-16
 *     code units (JavaScript's default sort; RFC 8785 §3.2.3);
 *   - no whitespace between tokens;
 *   - strings and numbers as ECMAScript's JSON.stringify writes them (the
 *     shortest round-trip number form, `-0` as `0`; strings with `\"`, `\\`,
 *     `\b \f \n \r \t`, other control characters as lowercase `\u00xx`,
 *     everything else literal, including non-ASCII);
 *   - encoded as UTF-8.
 * That is RFC 8785 (JSON Canonicalization Scheme) for the values a command
 * holds. Refused (a TypeError naming the path): non-finite numbers, strings
 * or keys with an unpaired surrogate, nesting deeper than 32, and anything
 * that is not JSON (bigint, functions, symbols, Dates, Maps, class
 * instances, `undefined` in an array). An object member whose value is
 * `undefined` is left out, as JSON.stringify does.
 *
 * A signed command carries `id`, `issuedAt`, `expiresAt`, `nonce`, `target`
 * ("<site>/<rack>") and `sig: {keyId, alg: "ed25519", value}` where `value`
 * is the base64 of the 64-byte Ed25519 signature of the canonical form.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from 'node:crypto';

export const SIGNATURE_ALG = 'ed25519';
/** Members every signed command must carry (besides `command`, and `sig` itself). */
export const SIGNED_FIELDS = ['id', 'issuedAt', 'expiresAt', 'nonce', 'target'] as const;
export const MAX_CANONICAL_DEPTH = 32;
/** Default lifetime that prepareCommand gives a command without `expiresAt`. */
export const DEFAULT_TTL_MS = 60_000;

export interface CommandSignature {
  keyId: string;
  alg: typeof SIGNATURE_ALG;
  /** Base64 of the 64-byte Ed25519 signature of the canonical form. */
  value: string;
}

export type JsonObject = Record<string, unknown>;

// ---------- canonical JSON ----------

const LONE_SURROGATE = /\p{Cs}/u;

function canonicalString(s: string, path: string): string {
  if (LONE_SURROGATE.test(s)) throw new TypeError(`canonical JSON: ${path}: string with an unpaired surrogate`);
  return JSON.stringify(s);
}

function write(v: unknown, path: string, depth: number): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'boolean':
      return v ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError(`canonical JSON: ${path}: ${String(v)} is not a JSON number`);
      return JSON.stringify(v);
    case 'string':
      return canonicalString(v, path);
    case 'object':
      break;
    case 'undefined':
    case 'bigint':
    case 'function':
    case 'symbol':
      throw new TypeError(`canonical JSON: ${path}: a ${typeof v} is not a JSON value`);
  }
  if (depth >= MAX_CANONICAL_DEPTH) throw new TypeError(`canonical JSON: ${path}: nested deeper than ${MAX_CANONICAL_DEPTH}`);
  if (Array.isArray(v)) return `[${v.map((x, i) => write(x, `${path}[${i}]`, depth + 1)).join(',')}]`;
  const proto = Object.getPrototypeOf(v) as unknown;
  if (proto !== Object.prototype && proto !== null) throw new TypeError(`canonical JSON: ${path}: only plain objects are JSON objects`);
  const obj = v as JsonObject;
  const parts: string[] = [];
  for (const k of Object.keys(obj).sort()) {
    const x = obj[k];
    if (x === undefined) continue;
    parts.push(`${canonicalString(k, path)}:${write(x, path === '(root)' ? k : `${path}.${k}`, depth + 1)}`);
  }
  return `{${parts.join(',')}}`;
}

/** The canonical JSON text of a value (see the file comment); throws TypeError on what it refuses. */
export function canonicalJson(value: unknown): string {
  return write(value, '(root)', 0);
}

/** The bytes that are signed: the canonical JSON of the command without `sig`, in UTF-8. */
export function signingBytes(command: JsonObject): Buffer {
  const { sig: _sig, ...rest } = command;
  return Buffer.from(canonicalJson(rest), 'utf8');
}

// ---------- keys ----------

const RAW_KEY_B64 = /^(?:[A-Za-z0-9+/]{43}=|[A-Za-z0-9_-]{43})$/;

function ensureEd25519(key: KeyObject, what: string): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${what} is a ${key.asymmetricKeyType ?? 'non-asymmetric'} key; expected Ed25519`);
  return key;
}

/**
 * An Ed25519 public key from PEM (SPKI, `-----BEGIN PUBLIC KEY-----`) or the
 * base64 (or base64url) of its 32 raw bytes. Throws an Error that says what is wrong.
 */
export function parsePublicKey(text: string): KeyObject {
  const t = text.trim();
  if (t.includes('-----BEGIN')) {
    if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(t)) {
      throw new Error('this is a private key: give the public key (the .pub file of `rackpilot sign --keygen`); keep the private key with central control');
    }
    let key: KeyObject;
    try {
      key = createPublicKey({ key: t, format: 'pem' });
    } catch (err) {
      throw new Error(`not a valid PEM public key (${(err as Error).message})`, { cause: err });
    }
    return ensureEd25519(key, 'the PEM');
  }
  if (!RAW_KEY_B64.test(t)) {
    throw new Error('expected a PEM public key (-----BEGIN PUBLIC KEY-----) or the base64 of a 32-byte Ed25519 public key (44 characters ending in "=")');
  }
  const x = Buffer.from(t, 'base64').toString('base64url');
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
  } catch (err) {
    throw new Error(`not a valid Ed25519 public key (${(err as Error).message})`, { cause: err });
  }
}

/** An Ed25519 private key from PEM (PKCS#8, `-----BEGIN PRIVATE KEY-----`, as written by `--keygen` or `openssl genpkey -algorithm ed25519`). */
export function parsePrivateKey(text: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: text, format: 'pem' });
  } catch (err) {
    throw new Error(`not a PEM private key (${(err as Error).message})`, { cause: err });
  }
  return ensureEd25519(key, 'the private key');
}

/** The base64 of a public key's 32 raw bytes (the compact form `security.commandKeys[].publicKey` accepts). */
export function rawPublicKey(key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new Error('not an Ed25519 key');
  return Buffer.from(jwk.x, 'base64url').toString('base64');
}

export interface SigningKeyPair {
  /** PKCS#8 PEM: keep it secret (central control). */
  privateKeyPem: string;
  /** SPKI PEM: goes into the agents' config. */
  publicKeyPem: string;
  /** Base64 of the 32 raw public key bytes: the same key, one line. */
  publicKeyRaw: string;
}

export function generateSigningKeyPair(): SigningKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    publicKeyRaw: rawPublicKey(publicKey),
  };
}

// ---------- signing ----------

/** A fresh nonce: 18 random bytes, base64url (24 characters). */
export function newNonce(): string {
  return randomBytes(18).toString('base64url');
}

/**
 * Fills in what a signed command needs and lacks: `target`, `issuedAt`
 * (ISO-8601, now), `expiresAt` (issuedAt + ttlMs) and a random `nonce`.
 * Members already there are kept. Returns a new object; drops any old `sig`.
 */
export function prepareCommand(command: JsonObject, o: { target: string; now?: number; ttlMs?: number }): JsonObject {
  const { sig: _sig, ...out } = command;
  const now = o.now ?? Date.now();
  if (out.target === undefined) out.target = o.target;
  if (out.issuedAt === undefined) out.issuedAt = new Date(now).toISOString();
  if (out.expiresAt === undefined) out.expiresAt = new Date(now + (o.ttlMs ?? DEFAULT_TTL_MS)).toISOString();
  if (out.nonce === undefined) out.nonce = newNonce();
  return out;
}

/**
 * Signs a command: returns a copy with `sig` (any old one replaced). Throws a
 * TypeError when a member of SIGNED_FIELDS is missing (see prepareCommand)
 * or the command cannot be canonicalized.
 */
export function signCommand(command: JsonObject, privateKey: KeyObject, keyId: string): JsonObject & { sig: CommandSignature } {
  const missing = SIGNED_FIELDS.filter((f) => command[f] === undefined);
  if (missing.length > 0) throw new TypeError(`cannot sign: the command lacks ${missing.join(', ')} (prepareCommand adds them)`);
  const { sig: _sig, ...rest } = command;
  const value = sign(null, signingBytes(rest), privateKey).toString('base64');
  return { ...rest, sig: { keyId, alg: SIGNATURE_ALG, value } };
}

export type SignatureCheck =
  | { ok: true; keyId: string }
  | { ok: false; code: 'UNSIGNED' | 'UNKNOWN_KEY' | 'BAD_SIGNATURE' | 'INVALID_COMMAND'; message: string };

/**
 * Checks only the signature (not the times, the nonce or the target: see
 * CommandVerifier) against the keys by id.
 */
export function verifyCommandSignature(command: JsonObject, keys: ReadonlyMap<string, KeyObject>): SignatureCheck {
  const sig = command.sig as Partial<CommandSignature> | undefined;
  if (sig === undefined) return { ok: false, code: 'UNSIGNED', message: 'command is not signed: this agent accepts only commands signed with a key in its security.commandKeys' };
  if (typeof sig !== 'object' || sig === null || typeof sig.keyId !== 'string' || typeof sig.value !== 'string' || sig.alg !== SIGNATURE_ALG) {
    return { ok: false, code: 'INVALID_COMMAND', message: 'sig: expected {keyId, alg:"ed25519", value}' };
  }
  const key = keys.get(sig.keyId);
  if (!key) return { ok: false, code: 'UNKNOWN_KEY', message: `sig.keyId: no key "${sig.keyId}" in this agent's security.commandKeys (known: ${[...keys.keys()].join(', ')})` };
  let bytes: Buffer;
  try {
    bytes = signingBytes(command);
  } catch (err) {
    return { ok: false, code: 'INVALID_COMMAND', message: `cannot be verified: ${(err as Error).message}` };
  }
  const value = Buffer.from(sig.value, 'base64');
  if (value.length !== 64 || !verify(null, bytes, key, value)) {
    return { ok: false, code: 'BAD_SIGNATURE', message: `signature does not match the command under key "${sig.keyId}" (altered in transit, or signed over a different canonical form)` };
  }
  return { ok: true, keyId: sig.keyId };
}

// ---------- the agent's acceptance rules ----------

export type VerifyRejectCode = 'UNSIGNED' | 'UNKNOWN_KEY' | 'BAD_SIGNATURE' | 'INVALID_COMMAND' | 'WRONG_TARGET' | 'STALE' | 'REPLAYED';
export type VerifyOutcome = { ok: true; keyId: string | null } | { ok: false; code: VerifyRejectCode; message: string };

export interface CommandVerifierOptions {
  /** Public keys by id; empty: signatures are not checked (their members only have to be well-formed). */
  keys: ReadonlyMap<string, KeyObject>;
  /** Refuse unsigned commands (needs keys). */
  requireSigned: boolean;
  /** How far `issuedAt` may lie ahead of this clock. */
  maxClockSkewMs: number;
  /** How old `issuedAt` may be; nonces are remembered this long. */
  replayWindowMs: number;
  /** "<site>/<rack>": a command whose `target` differs is refused (signed or not). */
  target?: string | undefined;
  /** Wall-clock ms at start-up: signed commands issued earlier are stale (their nonces were in a previous process's memory). */
  startedAt: number;
  /** Bound of the nonce memory (default 10 000); on overflow the oldest is forgotten and anything issued before it becomes stale. */
  maxNonces?: number;
}

/** Epoch ms of an ISO-8601 string or epoch-ms number; NaN when neither. */
export function epochMs(t: unknown): number {
  if (typeof t === 'number') return Number.isFinite(t) ? t : NaN;
  if (typeof t === 'string') return Date.parse(t);
  return NaN;
}

const iso = (ms: number): string => (Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : String(ms));

/**
 * The rules by which an agent accepts a command, in this order (the first
 * failing one answers):
 *  1. no keys configured: only `target` is checked (when present); `sig`,
 *     `nonce` and `issuedAt` are ignored;
 *  2. no `sig`: UNSIGNED when signatures are required, else accepted (after `target`);
 *  3. `sig.keyId` not configured: UNKNOWN_KEY; signature wrong: BAD_SIGNATURE;
 *  4. a member of SIGNED_FIELDS missing or unreadable: INVALID_COMMAND;
 *  5. `target` not this rack: WRONG_TARGET;
 *  6. `issuedAt` more than maxClockSkewMs ahead, more than replayWindowMs
 *     behind, or before the agent started (or before a nonce it had to
 *     forget): STALE;
 *  7. `nonce` already seen within the window: REPLAYED. Otherwise the nonce
 *     is remembered until `issuedAt + replayWindowMs`.
 * Expiry (`expiresAt`) is the caller's to check, for signed and unsigned
 * commands alike.
 */
export class CommandVerifier {
  private readonly nonces = new Map<string, { issuedAt: number; id: unknown }>();
  private notBefore: number;
  private readonly maxNonces: number;

  constructor(private readonly o: CommandVerifierOptions) {
    if (o.requireSigned && o.keys.size === 0) throw new Error('requireSigned needs at least one key');
    this.notBefore = o.startedAt;
    this.maxNonces = o.maxNonces ?? 10_000;
  }

  /**
   * Takes over what another verifier remembers (the nonces it saw, and the
   * time before which it refuses everything): a config reload replaces the
   * agent in the same process, and a signed command delivered twice across
   * the reload must still be refused the second time.
   */
  adopt(previous: CommandVerifier): void {
    for (const [nonce, e] of previous.nonces) if (!this.nonces.has(nonce)) this.nonces.set(nonce, e);
    this.notBefore = Math.min(this.notBefore, previous.notBefore);
    while (this.nonces.size > this.maxNonces) {
      const [oldest, entry] = this.nonces.entries().next().value as [string, { issuedAt: number }];
      this.nonces.delete(oldest);
      this.notBefore = Math.max(this.notBefore, entry.issuedAt + 1);
    }
  }

  /** Nonces remembered now. */
  get remembered(): number {
    return this.nonces.size;
  }

  check(command: JsonObject, now: number): VerifyOutcome {
    const { keys, requireSigned, target } = this.o;
    const targetOk = (): VerifyOutcome =>
      target !== undefined && command.target !== undefined && command.target !== target
        ? { ok: false, code: 'WRONG_TARGET', message: `target: this command is for ${JSON.stringify(command.target)}, this agent is "${target}"` }
        : { ok: true, keyId: null };
    if (keys.size === 0) return targetOk();
    if (command.sig === undefined && !requireSigned) return targetOk();
    const sig = verifyCommandSignature(command, keys);
    if (!sig.ok) return sig;
    const missing = SIGNED_FIELDS.filter((f) => command[f] === undefined);
    if (missing.length > 0) return { ok: false, code: 'INVALID_COMMAND', message: `a signed command must carry ${SIGNED_FIELDS.join(', ')}; missing: ${missing.join(', ')}` };
    const t = targetOk();
    if (!t.ok) return t;
    if (target === undefined && typeof command.target !== 'string') return { ok: false, code: 'INVALID_COMMAND', message: 'target: expected "<site>/<rack>"' };
    const issuedAt = epochMs(command.issuedAt);
    if (Number.isNaN(issuedAt) || Number.isNaN(epochMs(command.expiresAt))) return { ok: false, code: 'INVALID_COMMAND', message: 'issuedAt and expiresAt must be ISO-8601 times or epoch milliseconds' };
    const nonce = command.nonce;
    if (typeof nonce !== 'string' || nonce.length === 0) return { ok: false, code: 'INVALID_COMMAND', message: 'nonce: expected a string' };
    const stale = (why: string): VerifyOutcome => ({ ok: false, code: 'STALE', message: `issuedAt ${iso(issuedAt)} ${why} (agent clock ${iso(now)}): sign it again with a fresh issuedAt and nonce; check both clocks (NTP) if this repeats` });
    if (issuedAt > now + this.o.maxClockSkewMs) return stale(`is more than ${this.o.maxClockSkewMs} ms ahead`);
    if (issuedAt < now - this.o.replayWindowMs) return stale(`is more than ${this.o.replayWindowMs} ms old`);
    if (issuedAt < this.notBefore) return stale(`is before ${iso(this.notBefore)}, when this agent started or last had to forget a nonce`);
    this.prune(now);
    const seen = this.nonces.get(nonce);
    if (seen) {
      return { ok: false, code: 'REPLAYED', message: `nonce already used (by command ${JSON.stringify(seen.id)}): this delivery is refused, the earlier one stands; to send a command again, sign it again (same id, new nonce)` };
    }
    this.nonces.set(nonce, { issuedAt, id: command.id });
    while (this.nonces.size > this.maxNonces) {
      const [oldest, entry] = this.nonces.entries().next().value as [string, { issuedAt: number }];
      this.nonces.delete(oldest);
      this.notBefore = Math.max(this.notBefore, entry.issuedAt + 1);
    }
    return { ok: true, keyId: sig.keyId };
  }

  /** Forgets nonces whose command is stale anyway (oldest inserted first). */
  private prune(now: number): void {
    for (const [nonce, e] of this.nonces) {
      if (e.issuedAt >= now - this.o.replayWindowMs) return;
      this.nonces.delete(nonce);
    }
  }
}
