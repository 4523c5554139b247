/**
 * The Vnish web API (`/api/v1`) over the shared keep-alive HTTP client, with
 * its bearer token kept warm: `POST /unlock {"pw"}` -> `{"token"}`, reused for
 * every write; a write answered 401 (token no longer valid, e.g. after a
 * reboot) gets one fresh unlock and one retry. 403 on a write means the
 * device refuses writes: AUTH_FAILED at once, no retry.
 */
import { RackpilotError } from '../lib/errors.js';
import type { FiredRequest, HttpClient, HttpRequest, HttpResponse, PreparedRequest } from '../lib/http.js';
import { isObj } from '../lib/json.js';

const BASE = '/api/v1';

export class VnishApi {
  private token: string | undefined;

  constructor(
    private readonly http: HttpClient,
    private readonly deviceId: string,
    private readonly password: string,
  ) {}

  get hasToken(): boolean {
    return this.token !== undefined;
  }

  private fail(code: 'AUTH_FAILED' | 'DEVICE_ERROR' | 'MALFORMED_RESPONSE', message: string): RackpilotError {
    return new RackpilotError(code, `${this.deviceId}: ${message}`, { device: this.deviceId, host: this.http.where });
  }

  /** `POST /unlock`: a new bearer token. */
  async unlock(signal?: AbortSignal): Promise<string> {
    this.token = undefined;
    const res = await this.http.request({ method: 'POST', path: `${BASE}/unlock`, body: { pw: this.password }, ...(signal ? { signal } : {}) });
    if (res.status === 401 || res.status === 403) {
      throw this.fail('AUTH_FAILED', `Vnish at ${this.http.where} refused the password (HTTP ${res.status} on POST ${BASE}/unlock); check "password" in the config`);
    }
    if (res.status !== 200) throw this.fail('DEVICE_ERROR', `Vnish at ${this.http.where} answered HTTP ${res.status} to POST ${BASE}/unlock${errText(res)}`);
    const body = res.json();
    const token = isObj(body) && typeof body.token === 'string' && body.token.length > 0 ? body.token : undefined;
    if (!token) throw this.fail('MALFORMED_RESPONSE', `Vnish at ${this.http.where}: unlock answered 200 without a token`);
    this.token = token;
    return token;
  }

  private headers(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  /** `GET /summary` (sends the token when there is one; re-unlocks once on 401). */
  async summary(signal?: AbortSignal): Promise<unknown> {
    const get = () => this.http.request({ path: `${BASE}/summary`, headers: this.headers(), ...(signal ? { signal } : {}) });
    let res = await get();
    if (res.status === 401) {
      await this.unlock(signal);
      res = await get();
    }
    if (res.status !== 200) throw this.fail('DEVICE_ERROR', `Vnish at ${this.http.where} answered HTTP ${res.status} to GET ${BASE}/summary${errText(res)}`);
    return res.json();
  }

  private writeRequest(path: string, body: object | undefined): HttpRequest {
    return { method: 'POST', path: `${BASE}${path}`, headers: this.headers(), ...(body ? { body } : {}) };
  }

  /**
   * A privileged POST encoded now with the token held now, to be fired later
   * (see HttpClient.prepare) and finished by `write(..., fired)`; undefined
   * without a token. `token` tells whether it is still the one held.
   */
  prepareWrite(path: string, body: object | undefined): { token: string; prepared: PreparedRequest } | undefined {
    const token = this.token;
    if (token === undefined) return undefined;
    try {
      return { token, prepared: this.http.prepare(this.writeRequest(path, body)) };
    } catch {
      // a token that cannot go in a header: the plain path reports it
      return undefined;
    }
  }

  /** Whether `token` is the one held now. */
  holds(token: string): boolean {
    return this.token === token;
  }

  /**
   * A privileged POST. Resolves once the device acknowledged it (2xx without
   * `err`), with when that answer arrived (performance.now()). `fired`: the
   * same POST already on the wire (prepared with the token held then, see
   * prepareWrite); its answer is checked the same way.
   */
  async write(path: string, body: object | undefined, signal?: AbortSignal, fired?: FiredRequest): Promise<number> {
    const reused = fired !== undefined || this.token !== undefined;
    if (!reused) await this.unlock(signal);
    const post = () => this.http.request({ ...this.writeRequest(path, body), ...(signal ? { signal } : {}) });
    let res = fired ? await fired.result(signal ? { signal } : {}) : await post();
    if (res.status === 401 && reused) {
      await this.unlock(signal);
      res = await post();
    }
    if (res.status === 401 || res.status === 403) {
      throw this.fail(
        'AUTH_FAILED',
        `Vnish at ${this.http.where} refused POST ${BASE}${path} (HTTP ${res.status}${errText(res)}): writes are not allowed for this login; check the password and whether the web API requires an API key`,
      );
    }
    if (res.status < 200 || res.status > 299) {
      throw this.fail('DEVICE_ERROR', `Vnish at ${this.http.where} answered HTTP ${res.status} to POST ${BASE}${path}${errText(res)}`);
    }
    const err = errField(res);
    if (err) throw this.fail('DEVICE_ERROR', `Vnish at ${this.http.where} rejected POST ${BASE}${path}: ${err}`);
    return res.receivedAt;
  }
}


/** The `{"err": "..."}` Vnish puts in failed answers, if any. */
function errField(res: HttpResponse): string | undefined {
  if (res.body.length === 0) return undefined;
  try {
    const j = JSON.parse(res.text()) as unknown;
    return isObj(j) && typeof j.err === 'string' && j.err ? j.err.slice(0, 200) : undefined;
  } catch {
    return undefined;
  }
}

function errText(res: HttpResponse): string {
  const e = errField(res);
  return e ? `: ${e}` : '';
}
