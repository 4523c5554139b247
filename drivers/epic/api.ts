/**
 * The ePIC PowerPlay / UMC HTTP API (port 4028) over the shared keep-alive
 * HTTP client. No token: every POST carries `{"param": ..., "password": ...}`,
 * and answers `{"result": bool, "error": str|null}`. GETs need no password.
 */
import { RackpilotError } from '../lib/errors.js';
import type { FiredRequest, HttpClient, HttpRequest, HttpResponse, PreparedRequest } from '../lib/http.js';
import { isObj } from '../lib/json.js';

export class EpicApi {
  constructor(
    private readonly http: HttpClient,
    private readonly deviceId: string,
    private readonly password: string,
  ) {}

  private fail(code: 'AUTH_FAILED' | 'DEVICE_ERROR', message: string): RackpilotError {
    return new RackpilotError(code, `${this.deviceId}: ${message}`, { device: this.deviceId, host: this.http.where });
  }

  async get(path: string, signal?: AbortSignal): Promise<unknown> {
    const res = await this.http.request({ path, ...(signal ? { signal } : {}) });
    if (res.status !== 200) throw this.fail('DEVICE_ERROR', `ePIC at ${this.http.where} answered HTTP ${res.status} to GET ${path}${errText(res)}`);
    return res.json();
  }

  private postRequest(path: string, param: unknown): HttpRequest {
    return { method: 'POST', path, body: { param, password: this.password } };
  }

  /** The POST encoded now, to be fired later (see HttpClient.prepare) and finished by `post(..., fired)`. */
  preparePost(path: string, param: unknown): PreparedRequest {
    return this.http.prepare(this.postRequest(path, param));
  }

  /**
   * POST `{param, password}`; resolves once the device answered `result:
   * true`, with when that answer arrived (performance.now()). `fired`: the
   * same POST already on the wire (preparePost); its answer is checked the
   * same way.
   */
  async post(path: string, param: unknown, signal?: AbortSignal, fired?: FiredRequest): Promise<number> {
    const res = fired ? await fired.result(signal ? { signal } : {}) : await this.http.request({ ...this.postRequest(path, param), ...(signal ? { signal } : {}) });
    if (res.status === 401) {
      throw this.fail('AUTH_FAILED', `ePIC at ${this.http.where} refused the password (HTTP 401 on POST ${path}${errText(res)}); check "password" in the config`);
    }
    if (res.status === 403) {
      throw this.fail('AUTH_FAILED', `ePIC at ${this.http.where} denied POST ${path} (HTTP 403${errText(res)}): writes are not allowed on this miner`);
    }
    if (res.status !== 200) throw this.fail('DEVICE_ERROR', `ePIC at ${this.http.where} answered HTTP ${res.status} to POST ${path}${errText(res)}`);
    const body = res.body.length ? res.json() : {};
    if (isObj(body) && body.result === false) {
      throw this.fail('DEVICE_ERROR', `ePIC at ${this.http.where} rejected POST ${path}: ${typeof body.error === 'string' ? body.error.slice(0, 200) : 'result false'}`);
    }
    return res.receivedAt;
  }
}


function errText(res: HttpResponse): string {
  try {
    const j = JSON.parse(res.text()) as unknown;
    return isObj(j) && typeof j.error === 'string' && j.error ? `: ${j.error.slice(0, 200)}` : '';
  } catch {
    return '';
  }
}
