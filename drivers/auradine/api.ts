/**
 * The Auradine web API (port 8080) over the shared keep-alive HTTP client.
 * `POST /token {"command":"token","user","password"}` answers
 * `{"STATUS":[…],"Token":[{"Token":"…"}]}`; every later request carries the
 * token in a `Token` header. Answers are cgminer-shaped: `STATUS[0].STATUS`
 * is "S" on success, "E" with a `Msg` on failure. A request refused for its
 * token (401, or STATUS E naming the token) gets one new token and one retry.
 */
import { RackpilotError } from '../lib/errors.js';
import type { FiredRequest, HttpClient, HttpRequest, HttpResponse, PreparedRequest } from '../lib/http.js';
import { isObj, objs, str } from '../lib/json.js';

export class AuradineApi {
  private token: string | undefined;

  constructor(
    private readonly http: HttpClient,
    private readonly deviceId: string,
    private readonly user: string,
    private readonly password: string,
  ) {}

  get hasToken(): boolean {
    return this.token !== undefined;
  }

  private fail(code: 'AUTH_FAILED' | 'DEVICE_ERROR' | 'MALFORMED_RESPONSE', message: string): RackpilotError {
    return new RackpilotError(code, `${this.deviceId}: ${message}`, { device: this.deviceId, host: this.http.where });
  }

  async login(signal?: AbortSignal): Promise<void> {
    this.token = undefined;
    const res = await this.http.request({
      method: 'POST',
      path: '/token',
      body: { command: 'token', user: this.user, password: this.password },
      ...(signal ? { signal } : {}),
    });
    const body = res.status === 200 || res.status === 401 || res.status === 403 ? res.json() : undefined;
    const st = status(body);
    if (res.status === 401 || res.status === 403 || st?.STATUS === 'E') {
      throw this.fail('AUTH_FAILED', `Auradine at ${this.http.where} refused the login (HTTP ${res.status}${st?.Msg ? `: ${st.Msg}` : ''} on POST /token); check "username" and "password" in the config`);
    }
    if (res.status !== 200) throw this.fail('DEVICE_ERROR', `Auradine at ${this.http.where} answered HTTP ${res.status} to POST /token`);
    const token = isObj(body) ? str(objs(body.Token)[0]?.Token) : undefined;
    if (!token) throw this.fail('MALFORMED_RESPONSE', `Auradine at ${this.http.where}: POST /token answered without a token`);
    this.token = token;
  }

  private callRequest(path: string, body: Record<string, unknown> | undefined): HttpRequest {
    return {
      method: body ? 'POST' : 'GET',
      path,
      headers: this.token ? { token: this.token } : {},
      ...(body ? { body: { command: path.slice(1), ...body } } : {}),
    };
  }

  /**
   * A call encoded now with the token held now, to be fired later (see
   * HttpClient.prepare) and finished by `call(..., fired)`; undefined without
   * a token. `token` tells whether it is still the one held.
   */
  prepareCall(path: string, body: Record<string, unknown> | undefined): { token: string; prepared: PreparedRequest } | undefined {
    const token = this.token;
    if (token === undefined) return undefined;
    try {
      return { token, prepared: this.http.prepare(this.callRequest(path, body)) };
    } catch {
      // a token that cannot go in a header: the plain path reports it
      return undefined;
    }
  }

  /** Whether `token` is the one held now. */
  holds(token: string): boolean {
    return this.token === token;
  }

  /** GET (body undefined) or POST `{command, ...body}`; returns the parsed answer after a STATUS check. */
  async call(path: string, body?: Record<string, unknown>, signal?: AbortSignal): Promise<Record<string, unknown>> {
    return (await this.answer(path, body, signal)).parsed;
  }

  /**
   * `call`, with when the accepted answer arrived (performance.now()).
   * `fired`: the same call already on the wire (prepareCall, with the token
   * held then); its answer is checked the same way.
   */
  async answer(
    path: string,
    body?: Record<string, unknown>,
    signal?: AbortSignal,
    fired?: FiredRequest,
  ): Promise<{ parsed: Record<string, unknown>; receivedAt: number }> {
    const method = body ? 'POST' : 'GET';
    const reused = fired !== undefined || this.token !== undefined;
    if (!reused) await this.login(signal);
    const send = () => this.http.request({ ...this.callRequest(path, body), ...(signal ? { signal } : {}) });
    let res = fired ? await fired.result(signal ? { signal } : {}) : await send();
    if (reused && tokenRefused(res)) {
      await this.login(signal);
      res = await send();
    }
    const what = `${method} ${path}`;
    if (res.status === 401 || res.status === 403 || (res.status === 200 && tokenRefused(res))) {
      throw this.fail('AUTH_FAILED', `Auradine at ${this.http.where} refused ${what} (HTTP ${res.status}${msgText(res)}): this login may not change the miner`);
    }
    if (res.status !== 200) throw this.fail('DEVICE_ERROR', `Auradine at ${this.http.where} answered HTTP ${res.status} to ${what}${msgText(res)}`);
    const parsed = res.json();
    if (!isObj(parsed)) throw this.fail('MALFORMED_RESPONSE', `Auradine at ${this.http.where}: ${what} did not answer a JSON object`);
    const st = status(parsed);
    if (st?.STATUS === 'E') throw this.fail('DEVICE_ERROR', `Auradine at ${this.http.where} rejected ${what}: ${st.Msg ?? 'STATUS E'}`);
    return { parsed, receivedAt: res.receivedAt };
  }
}

function status(body: unknown): { STATUS?: string; Msg?: string } | undefined {
  if (!isObj(body)) return undefined;
  const s = objs(body.STATUS)[0];
  if (!s) return undefined;
  const out: { STATUS?: string; Msg?: string } = {};
  const st = str(s.STATUS);
  const msg = str(s.Msg);
  if (st !== undefined) out.STATUS = st;
  if (msg !== undefined) out.Msg = msg.slice(0, 200);
  return out;
}

function parsed(res: HttpResponse): unknown {
  try {
    return JSON.parse(res.text()) as unknown;
  } catch {
    return undefined;
  }
}

/** 401, or STATUS E whose message is about the token. */
function tokenRefused(res: HttpResponse): boolean {
  if (res.status === 401) return true;
  const st = status(parsed(res));
  return st?.STATUS === 'E' && /token/i.test(st.Msg ?? '');
}

function msgText(res: HttpResponse): string {
  const m = status(parsed(res))?.Msg;
  return m ? `: ${m}` : '';
}
