/**
 * The stock Antminer web CGI: HTTP Digest (realm "antMiner Configuration",
 * qop=auth) over the keep-alive HttpClient. The digest nonce is kept warm
 * (nonce count increments), so a write pays no 401 round trip; a 401 on a
 * kept nonce gets one fresh challenge, a second 401 is AUTH_FAILED.
 */
import { RackpilotError } from '../lib/errors.js';
import { HttpClient, type FiredRequest, type HttpEndpoint, type HttpRequest, type HttpResponse } from '../lib/http.js';
import { DigestSession } from '../lib/http-digest.js';

export const GET_CONF = '/cgi-bin/get_miner_conf.cgi';
export const SET_CONF = '/cgi-bin/set_miner_conf.cgi';

/** Where the CGI is (an HTTP endpoint) and who logs in. */
export interface CgiOptions extends HttpEndpoint {
  deviceId: string;
  username: string;
  password: string;
}

/** A set_miner_conf POST made ready to go out with one write (AntminerCgi.armSetConf). */
export interface ArmedSetConf {
  /** Not fired yet, and the digest challenge it carries is still the one held. */
  readonly usable: boolean;
  /** Writes it now (see PreparedRequest.fire); undefined when no longer usable. */
  fire(): FiredRequest | undefined;
}

export class AntminerCgi {
  private readonly http: HttpClient;
  private readonly digest: DigestSession;

  constructor(private readonly o: CgiOptions) {
    this.http = new HttpClient({
      host: o.host,
      port: o.port,
      connectTimeoutMs: o.connectTimeoutMs,
      readTimeoutMs: o.readTimeoutMs,
      maxResponseBytes: o.maxResponseBytes,
      // the web port carries only actions and a config refresh every few minutes: keep its connection warm
      ...(o.keepWarm ? { keepWarm: { ...o.keepWarm, ping: (signal: AbortSignal) => this.ping(signal) } } : {}),
    });
    this.digest = new DigestSession(o.username, o.password);
  }

  close(): void {
    this.http.close();
  }

  get stats(): HttpClient['stats'] {
    return this.http.stats;
  }

  /** Keep-warm ping: `GET /` (the web UI's index page, a static file) with the kept digest nonce; any answer but a login refusal will do. */
  private async ping(signal: AbortSignal): Promise<void> {
    await this.request('GET', '/', { signal, anyStatus: true });
  }

  /** The request with an Authorization of its own (the next nonce count of the kept challenge), if there is one. */
  private build(method: 'GET' | 'POST', path: string, opts: { body?: object; timeoutMs?: number }): HttpRequest {
    const auth = this.digest.authorization(method, path);
    return {
      method,
      path,
      headers: auth ? { authorization: auth } : {},
      ...(opts.body !== undefined ? { body: opts.body } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    };
  }

  /**
   * `fired`: the request already on the wire (armSetConf); its answer is
   * the first attempt's, checked the same way (a 401 gets the fresh
   * challenge and one plain retry).
   */
  private async request(
    method: 'GET' | 'POST',
    path: string,
    opts: { body?: object; timeoutMs?: number; signal?: AbortSignal; anyStatus?: boolean; fired?: FiredRequest } = {},
  ): Promise<HttpResponse> {
    const where = `${this.o.deviceId}: ${method} ${path} on ${this.o.host}:${this.o.port}`;
    for (let attempt = 0; ; attempt++) {
      const res =
        attempt === 0 && opts.fired
          ? await opts.fired.result({ ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}), ...(opts.signal ? { signal: opts.signal } : {}) })
          : await this.http.request({ ...this.build(method, path, opts), ...(opts.signal ? { signal: opts.signal } : {}) });
      if (res.status === 401) {
        if (!this.digest.accept(res.headers['www-authenticate'])) {
          this.digest.forget();
          throw new RackpilotError('AUTH_FAILED', `${where}: HTTP 401 without a Digest challenge (is this a stock Antminer web UI?)`);
        }
        if (attempt === 0) continue;
        throw new RackpilotError('AUTH_FAILED', `${where}: login refused (HTTP 401); check "username" and "password" in the config`);
      }
      if (opts.anyStatus) return res;
      if (res.status === 403) {
        throw new RackpilotError('AUTH_FAILED', `${where}: access denied (HTTP 403); the web configuration is locked or writes are disabled on this miner`);
      }
      if (res.status !== 200) {
        throw new RackpilotError('DEVICE_ERROR', `${where}: unexpected HTTP ${res.status}`, { status: res.status });
      }
      return res;
    }
  }

  /** Reads the miner config (cgminer.conf as JSON). */
  async getConf(signal?: AbortSignal): Promise<Record<string, unknown>> {
    const res = await this.request('GET', GET_CONF, signal ? { signal } : {});
    const j = res.json();
    if (!j || typeof j !== 'object' || Array.isArray(j)) {
      throw new RackpilotError('MALFORMED_RESPONSE', `${this.o.deviceId}: ${GET_CONF} did not return a JSON object`);
    }
    return j as Record<string, unknown>;
  }

  /**
   * set_miner_conf.cgi with `conf`, encoded now for `fire()` later, with the
   * Authorization of the challenge held now and a nonce count taken for it
   * alone (so requests sent in between do not spoil it). Undefined before
   * any challenge (start() gets one). Fires once, and only while the
   * challenge it was built with is still the one held.
   */
  armSetConf(conf: Record<string, unknown>, timeoutMs: number): ArmedSetConf | undefined {
    if (!this.digest.hasChallenge) return undefined;
    const digest = this.digest;
    const epoch = digest.epoch;
    const prepared = this.http.prepare(this.build('POST', SET_CONF, { body: conf, timeoutMs }));
    let spent = false;
    return {
      get usable() {
        return !spent && digest.epoch === epoch;
      },
      fire: () => {
        if (spent || digest.epoch !== epoch) return undefined;
        const fired = prepared.fire();
        spent = fired !== undefined;
        return fired;
      },
    };
  }

  /**
   * Writes the whole config; resolves on {"stats":"success","code":"M000"},
   * with when that answer arrived (performance.now()). `fired`: the same
   * POST already on the wire (armSetConf).
   */
  async setConf(conf: Record<string, unknown>, timeoutMs: number, fired?: FiredRequest): Promise<number> {
    const res = await this.request('POST', SET_CONF, { body: conf, timeoutMs, ...(fired ? { fired } : {}) });
    const j = res.json() as { stats?: unknown; code?: unknown; msg?: unknown } | null;
    if (!j || typeof j !== 'object' || j.stats !== 'success' || j.code !== 'M000') {
      const code = j && typeof j === 'object' && (typeof j.code === 'string' || typeof j.code === 'number') ? String(j.code) : '?';
      const msg = j && typeof j === 'object' && typeof j.msg === 'string' ? j.msg : 'no message';
      throw new RackpilotError('DEVICE_ERROR', `${this.o.deviceId}: ${SET_CONF} refused the config (code ${code}: ${msg})`, { deviceCode: code });
    }
    return res.receivedAt;
  }
}
