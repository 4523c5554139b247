/**
 * The Whatsminer API v2 write path: a token from `get_token` (kept warm, it
 * lives 30 min on the miner and one client may hold at most 32), commands
 * encrypted with it, replies decrypted. An expired or rejected token gets one
 * fresh `get_token` and one retry; a second rejection is AUTH_FAILED.
 */
import { cgminerExchange, type CgminerClient, type CgminerEndpoint } from '../lib/cgminer/client.js';
import { parseTolerantJson } from '../lib/cgminer/tolerant-json.js';
import { RackpilotError } from '../lib/errors.js';
import { decrypt, deriveToken, sealCommand, type V2Token } from './crypto.js';

/** A reply in btminer's flat shape: `{"STATUS":"S","When":..,"Code":131,"Msg":..,"Description":""}`. */
export interface FlatReply {
  STATUS: string;
  Code?: number;
  Msg?: unknown;
}

/** Codes after which a fresh token is worth one retry (api-facts.md §3). */
const TOKEN_CODES = new Set([23, 135, 136, 137]);

/** How long the miner keeps a token (api-facts.md §1). */
export const TOKEN_LIFE_MS = 30 * 60_000;
/** A write prepared with a token goes out only while the token is at least this far from the end of its life. */
const TOKEN_LIFE_MARGIN_MS = 60_000;

/** A write already on the wire (a prepared one): the token it was sealed with and its parsed reply (see `reply`). */
export interface SentWrite {
  token: V2Token;
  reply: (signal?: AbortSignal) => Promise<FlatReply>;
}

export function asFlat(reply: unknown, where: string): FlatReply {
  if (!reply || typeof reply !== 'object' || Array.isArray(reply) || typeof (reply as { STATUS?: unknown }).STATUS !== 'string') {
    throw new RackpilotError('MALFORMED_RESPONSE', `${where}: reply has no STATUS field`);
  }
  return reply as FlatReply;
}

function msgText(r: FlatReply): string {
  return typeof r.Msg === 'string' ? r.Msg : JSON.stringify(r.Msg ?? '');
}

export function isWritesDisabled(r: FlatReply): boolean {
  return r.Code === 45 || /access write cmd|permission denied|access denied/i.test(msgText(r));
}

/** Throws for an error STATUS; `deviceId` names the device in every message. */
export function checkFlat(r: FlatReply, where: string, deviceId: string): FlatReply {
  if (r.STATUS === 'S' || r.STATUS === 'I') return r;
  const msg = msgText(r);
  if (isWritesDisabled(r)) {
    throw new RackpilotError(
      'AUTH_FAILED',
      `${where}: access denied by the miner (code ${r.Code ?? '?'}: ${msg}). Writes are off on this Whatsminer: in WhatsMinerTool change the admin password from the default "admin" and enable the API (Remote Ctrl -> Miner API Switch), then set that password as "password" in the config of ${deviceId}`,
      { device: deviceId, deviceCode: r.Code ?? null },
    );
  }
  throw new RackpilotError('DEVICE_ERROR', `${where}: miner answered error ${r.Code ?? '?'}: ${msg}`, { device: deviceId, deviceCode: r.Code ?? null });
}

export class V2TokenCache {
  private token: { t: V2Token; at: number } | undefined;
  private inflight: Promise<V2Token> | undefined;

  constructor(
    private readonly client: CgminerClient,
    private readonly ep: CgminerEndpoint,
    private readonly deviceId: string,
    private readonly password: string | undefined,
    private readonly now: () => number,
    private readonly refreshMs: number,
  ) {}

  private get where(): string {
    return `${this.deviceId} (${this.client.where})`;
  }

  /** Whether a token younger than the refresh age is held (no round trip needed to write). */
  get warm(): boolean {
    return this.token !== undefined && this.now() - this.token.at < this.refreshMs;
  }

  invalidate(): void {
    this.token = undefined;
  }

  /** The token to prepare a write with: the one held while warm (no round trip needed), else undefined. */
  usable(): V2Token | undefined {
    return this.token !== undefined && this.warm ? this.token.t : undefined;
  }

  /** Whether `t` is still the token held and the miner still knows it (a write prepared with it may go out). */
  holds(t: V2Token): boolean {
    return this.token?.t === t && this.now() - this.token.at < TOKEN_LIFE_MS - TOKEN_LIFE_MARGIN_MS;
  }

  /** A token: the held one while warm, else a fresh one (concurrent callers share one get_token). */
  async get(signal?: AbortSignal): Promise<V2Token> {
    if (this.token && this.warm) return this.token.t;
    this.inflight ??= this.fetch(signal).finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async fetch(signal?: AbortSignal): Promise<V2Token> {
    const password = this.password;
    if (password === undefined) {
      throw new RackpilotError('AUTH_FAILED', `${this.where}: no admin password configured; writes need "password" in the config of ${this.deviceId}`, {
        device: this.deviceId,
      });
    }
    const where = `${this.where} get_token`;
    const reply = checkFlat(asFlat(await this.client.raw('get_token', undefined, signal), where), where, this.deviceId);
    const m = reply.Msg;
    const ok = (k: string): string | undefined => {
      const v = m && typeof m === 'object' ? (m as Record<string, unknown>)[k] : undefined;
      return typeof v === 'string' && v.length > 0 ? v : typeof v === 'number' ? String(v) : undefined;
    };
    const time = ok('time');
    const salt = ok('salt');
    const newsalt = ok('newsalt');
    if (!time || !salt || !newsalt) throw new RackpilotError('MALFORMED_RESPONSE', `${where}: reply lacks Msg.time/salt/newsalt`, { device: this.deviceId });
    const t = deriveToken(password, { time, salt, newsalt });
    this.token = { t, at: this.now() };
    return t;
  }

  /** The request bytes of an encrypted write (for a prepared send). */
  seal(t: V2Token, cmd: string, args: Record<string, string>): Buffer {
    return Buffer.from(sealCommand(t, cmd, args), 'utf8');
  }

  /** The reply to a write sealed with `t`, from its raw text: decrypted when encrypted, not yet checked. */
  reply(t: V2Token, text: string, cmd: string): FlatReply {
    const where = `${this.where} ${cmd}`;
    if (text.length === 0) throw new RackpilotError('CONNECTION_CLOSED', `${where}: the miner closed the connection without a reply`, { device: this.deviceId });
    const outer = parseTolerantJson(text, where);
    const enc = outer && typeof outer === 'object' ? (outer as { enc?: unknown }).enc : undefined;
    if (typeof enc !== 'string') return asFlat(outer, where);
    let plain: string;
    try {
      plain = decrypt(t.aesKey, enc);
    } catch (err) {
      throw new RackpilotError('MALFORMED_RESPONSE', `${where}: encrypted reply cannot be decrypted (${(err as Error).message})`, { device: this.deviceId });
    }
    return asFlat(parseTolerantJson(plain, `${where} (decrypted)`), where);
  }

  /**
   * Sends an encrypted write and returns its checked, decrypted reply.
   * `sent`: the write already on the wire (a prepared one); its reply is
   * checked the same way, and a rejected token gets the same fresh retry.
   */
  async write(cmd: string, args: Record<string, string>, signal?: AbortSignal, sent?: SentWrite): Promise<FlatReply> {
    const where = `${this.where} ${cmd}`;
    for (let attempt = 0; ; attempt++) {
      let t: V2Token;
      let reply: FlatReply;
      if (attempt === 0 && sent) {
        t = sent.token;
        reply = await sent.reply(signal);
      } else {
        t = await this.get(signal);
        reply = this.reply(t, await cgminerExchange(this.ep, this.seal(t, cmd, args), signal), cmd);
      }
      if (reply.STATUS !== 'S' && reply.STATUS !== 'I' && !isWritesDisabled(reply) && TOKEN_CODES.has(reply.Code ?? -1)) {
        // a newer token fetched meanwhile is not the one refused
        if (this.token?.t === t) this.invalidate();
        if (attempt === 0) continue;
        throw new RackpilotError(
          'AUTH_FAILED',
          `${where}: the miner rejected the encrypted command twice, the second time with a fresh token (code ${reply.Code ?? '?'}: ${msgText(reply)}); check "password" in the config of ${this.deviceId} (the miner's admin password)`,
          { device: this.deviceId, deviceCode: reply.Code ?? null },
        );
      }
      return checkFlat(reply, where, this.deviceId);
    }
  }
}
