/**
 * A small deadline-bound wrapper around one net-snmp session: `get` of many
 * OIDs (split into PDUs of at most `maxOidsPerRequest` varbinds, sent in
 * parallel) and `set` of one Integer, with net-snmp failures mapped to
 * RackpilotError codes. The community and v3 keys never appear in errors.
 */
import snmp from 'net-snmp';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError } from '../lib/errors.js';
import type { SnmpOptions } from '../lib/transports.js';

export interface SnmpTarget {
  deviceId: string;
  host: string;
  port: number;
  /** Deadline of one request (all tries). */
  requestMs: number;
  maxOidsPerRequest: number;
  snmp: SnmpOptions;
}

/** A varbind's value: a number, or null for noSuchObject / noSuchInstance / endOfMibView or a non-numeric type. */
export type SnmpValue = number | null;

const AUTH: Record<Extract<SnmpOptions, { version: '3' }>['authProtocol'], snmp.AuthProtocols> = {
  md5: snmp.AuthProtocols.md5,
  sha: snmp.AuthProtocols.sha,
  sha224: snmp.AuthProtocols.sha224,
  sha256: snmp.AuthProtocols.sha256,
  sha384: snmp.AuthProtocols.sha384,
  sha512: snmp.AuthProtocols.sha512,
};
const PRIV: Record<Extract<SnmpOptions, { version: '3' }>['privProtocol'], snmp.PrivProtocols> = {
  des: snmp.PrivProtocols.des,
  aes: snmp.PrivProtocols.aes,
  aes256b: snmp.PrivProtocols.aes256b,
  aes256r: snmp.PrivProtocols.aes256r,
};

function numeric(vb: snmp.Varbind): SnmpValue {
  if (snmp.isVarbindError(vb)) return null;
  const v = vb.value;
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (Buffer.isBuffer(v) && vb.type === snmp.ObjectType.Counter64) return Number(v.length === 0 ? 0n : BigInt(`0x${v.toString('hex')}`));
  if (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v)) return Number(v);
  return null;
}

/** SNMP error-status names (RFC 3416), for messages. */
function statusName(status: number | undefined): string {
  if (status === undefined) return 'error';
  return (snmp.ErrorStatus as unknown as Record<number, string>)[status] ?? `error-status ${status}`;
}

export class SnmpClient {
  private session: snmp.Session | undefined;

  constructor(private readonly t: SnmpTarget) {}

  /** Opens the session's UDP socket (no packet is sent). */
  open(): void {
    if (this.session) return;
    const tries = this.t.snmp.retries + 1;
    const common = {
      port: this.t.port,
      retries: this.t.snmp.retries,
      // the per-try timeout leaves the whole request inside its deadline
      timeout: Math.max(10, Math.floor(this.t.requestMs / tries)),
      transport: this.t.host.includes(':') ? ('udp6' as const) : ('udp4' as const),
      backoff: 1,
      idBitsSize: 32 as const,
    };
    const o = this.t.snmp;
    if (o.version === '2c') {
      this.session = snmp.createSession(this.t.host, o.community, { ...common, version: snmp.Version2c });
    } else {
      const level = o.privKey !== undefined ? snmp.SecurityLevel.authPriv : o.authKey !== undefined ? snmp.SecurityLevel.authNoPriv : snmp.SecurityLevel.noAuthNoPriv;
      const user: snmp.User = { name: o.user, level };
      if (o.authKey !== undefined) {
        user.authProtocol = AUTH[o.authProtocol];
        user.authKey = o.authKey;
      }
      if (o.privKey !== undefined) {
        user.privProtocol = PRIV[o.privProtocol];
        user.privKey = o.privKey;
      }
      this.session = snmp.createV3Session(this.t.host, user, { ...common, version: snmp.Version3 });
    }
    // a socket error must never become an uncaught exception; requests fail on their own
    this.session.on('error', () => undefined);
  }

  close(): void {
    const s = this.session;
    this.session = undefined;
    if (!s) return;
    try {
      s.close();
    } catch {
      // already closed
    }
  }

  get isOpen(): boolean {
    return this.session !== undefined;
  }

  private need(): snmp.Session {
    if (!this.session) throw new RackpilotError('NOT_STARTED', `${this.t.deviceId}: SNMP session not open (start() the driver first)`, { device: this.t.deviceId });
    return this.session;
  }

  /** Gets every OID; the result has one value per OID, in order. */
  async get(oids: readonly string[], signal?: AbortSignal): Promise<SnmpValue[]> {
    const session = this.need();
    const chunks: string[][] = [];
    for (let i = 0; i < oids.length; i += this.t.maxOidsPerRequest) chunks.push(oids.slice(i, i + this.t.maxOidsPerRequest));
    const parts = await Promise.all(chunks.map((c) => this.request(`get of ${c.length} OID(s)`, signal, (cb) => session.get(c, cb))));
    return parts.flat().map(numeric);
  }

  /** Sets one Integer; rejects with DEVICE_ERROR (naming the SNMP error status) when the agent refuses it. */
  async setInteger(oid: string, value: number, signal?: AbortSignal): Promise<void> {
    const session = this.need();
    const vbs = await this.request(`set ${oid} = ${value}`, signal, (cb) => session.set([{ oid, type: snmp.ObjectType.Integer, value }], cb));
    const vb = vbs[0];
    if (vb && snmp.isVarbindError(vb)) {
      const noSuch = vb.type === snmp.ObjectType.NoSuchObject || vb.type === snmp.ObjectType.NoSuchInstance;
      throw new RackpilotError('DEVICE_ERROR', `${this.t.deviceId}: SNMP set of ${oid} answered ${snmp.varbindError(vb)}`, { device: this.t.deviceId, oid, noSuch });
    }
  }

  private request(what: string, signal: AbortSignal | undefined, send: (cb: (err: Error | null, vbs?: snmp.Varbind[]) => void) => void): Promise<snmp.Varbind[]> {
    const where = `${this.t.host}:${this.t.port}`;
    return withDeadline(
      `${this.t.deviceId}: SNMP ${what} to ${where}`,
      this.t.requestMs + 50,
      () =>
        new Promise<snmp.Varbind[]>((resolve, reject) => {
          try {
            send((err, vbs) => {
              if (err) reject(this.mapError(err, what, where));
              else resolve(vbs ?? []);
            });
          } catch (err) {
            reject(this.mapError(err, what, where));
          }
        }),
      signal,
    );
  }

  private mapError(err: unknown, what: string, where: string): RackpilotError {
    const ctx = { device: this.t.deviceId, host: this.t.host, port: this.t.port };
    if (err instanceof RackpilotError) return err;
    const e = err as Error & { status?: number; code?: number | string };
    const v3 = this.t.snmp.version === '3';
    switch (e.name) {
      case 'RequestTimedOutError':
        return new RackpilotError(
          'READ_TIMEOUT',
          `${this.t.deviceId}: no SNMP answer from ${where} to ${what} within ${this.t.requestMs} ms (${v3 ? 'wrong v3 user or keys' : 'wrong community'}, SNMP disabled, or the PDU is down)`,
          ctx,
          { cause: err },
        );
      case 'RequestFailedError':
        return new RackpilotError('DEVICE_ERROR', `${this.t.deviceId}: SNMP ${what} refused by ${where}: ${statusName(e.status)} (${e.message})`, { ...ctx, status: statusName(e.status) }, { cause: err });
      case 'ResponseInvalidError':
      case 'ProcessingError':
        if (/auth|digest|usm|user|engine|decrypt/i.test(e.message)) {
          return new RackpilotError('AUTH_FAILED', `${this.t.deviceId}: SNMPv3 authentication with ${where} failed (${e.message}): check user, authProtocol/authKey and privProtocol/privKey`, ctx, { cause: err });
        }
        return new RackpilotError('MALFORMED_RESPONSE', `${this.t.deviceId}: invalid SNMP answer from ${where} to ${what}: ${e.message}`, ctx, { cause: err });
      default:
        if (/auth|wrongDigest|unknownUser|unknown user|usmStats/i.test(e.message)) {
          return new RackpilotError('AUTH_FAILED', `${this.t.deviceId}: SNMPv3 authentication with ${where} failed (${e.message}): check user, authProtocol/authKey and privProtocol/privKey`, ctx, { cause: err });
        }
        return new RackpilotError('UNREACHABLE', `${this.t.deviceId}: SNMP ${what} to ${where} failed: ${e.message}`, ctx, { cause: err });
    }
  }
}
