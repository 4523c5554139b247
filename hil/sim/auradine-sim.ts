/**
 * Auradine personality: the web API on 8080 (token from `POST /token`, then a
 * `Token` header; cgminer-shaped answers with STATUS S/E) and the gcminer TCP
 * API on 4028 (`version`, `summary`, `devs`), both following the shared power
 * model. `POST /mode {"sleep":"on"|"off"}` sleeps/wakes; `{"mode":"custom",
 * "tune":"power","power":W}` sets the power target. See
 * drivers/auradine/api-facts.md for what is verified.
 */
import { randomBytes } from 'node:crypto';
import { CgminerServer, statusSection, type CgminerRequest, type Fault } from './cgminer-server.js';
import { HttpSimServer, type SimRequest, type SimResponse } from './http-server.js';
import { PowerModel, type PowerModelOptions } from './power-model.js';

export interface AuradineSimOptions extends Partial<Omit<PowerModelOptions, 'now'>> {
  host?: string;
  /** Web API port (default ephemeral). */
  port?: number;
  /** gcminer TCP API port (default ephemeral). */
  apiPort?: number;
  user?: string;
  password?: string;
  model?: string;
  boards?: number;
  fans?: number;
  now?: () => number;
}

export interface AuradineBehaviour {
  /** POST /mode answers 403 STATUS E "Permission denied" even with a valid token. */
  writesDenied: boolean;
  /** sleep on is acknowledged but the miner keeps hashing. */
  ignoreCurtail: boolean;
}

const PAGE =
  '<!doctype html><html><head><meta charset="utf-8"><title>Miner UI</title></head>' +
  '<body><div id="root">Auradine Miner UI</div><script src="/static/js/main.js"></script></body></html>';

const S = (msg: string) => [{ STATUS: 'S', When: Math.floor(Date.now() / 1000), Code: 0, Msg: msg, Description: 'Auradine' }];
const E = (msg: string) => [{ STATUS: 'E', When: Math.floor(Date.now() / 1000), Code: 1, Msg: msg, Description: 'Auradine' }];

export class AuradineSim {
  readonly web: HttpSimServer;
  readonly api: CgminerServer;
  readonly power: PowerModel;
  readonly behaviour: AuradineBehaviour = { writesDenied: false, ignoreCurtail: false };
  /** Accepted mode writes, e.g. "sleep on", "custom power 2500". */
  readonly actions: string[] = [];
  logins = 0;
  sleep: 'on' | 'off' = 'off';
  mode: { mode: string; power?: number } = { mode: 'normal' };
  private readonly tokens = new Set<string>();
  private readonly now: () => number;

  constructor(private readonly opts: AuradineSimOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.power = new PowerModel({
      miningW: opts.miningW ?? 3500,
      sleepW: opts.sleepW ?? 30,
      hashrateThs: opts.hashrateThs ?? 130,
      sleepDelayMs: opts.sleepDelayMs ?? 5000,
      wakeRampMs: opts.wakeRampMs ?? 30_000,
      now: this.now,
    });
    const host = opts.host ?? '127.0.0.1';
    this.web = new HttpSimServer((req) => this.handle(req), host, opts.port ?? 0);
    this.api = new CgminerServer({ host, port: opts.apiPort ?? 0, handler: (req) => this.handleApi(req) });
  }

  async listen(): Promise<{ host: string; port: number; apiPort: number }> {
    const w = await this.web.listen();
    const a = await this.api.listen();
    return { host: w.host, port: w.port, apiPort: a.port };
  }

  async close(): Promise<void> {
    await this.web.close();
    await this.api.close();
  }

  /** Faults on the web API (the TCP API has its own: `api.fault`). */
  setFault(f: Fault): void {
    this.web.fault = f;
  }

  expireTokens(): void {
    this.tokens.clear();
  }

  get sleeping(): boolean {
    return this.power.target === 'sleeping';
  }

  handle(req: SimRequest): SimResponse {
    if (req.method === 'GET' && req.path === '/') return { headers: { 'content-type': 'text/html' }, body: PAGE };
    const body = isObj(req.json) ? req.json : {};
    if (req.path === '/token' && req.method === 'POST') {
      if (body.user !== (this.opts.user ?? 'admin') || body.password !== (this.opts.password ?? 'admin')) {
        return { status: 401, body: { STATUS: E('Invalid username or password') } };
      }
      const t = randomBytes(24).toString('base64url');
      this.tokens.add(t);
      this.logins++;
      return { body: { STATUS: S('Token'), Token: [{ Token: t }] } };
    }
    const token = req.headers.token;
    if (typeof token !== 'string' || !this.tokens.has(token)) return { status: 401, body: { STATUS: E('Invalid token') } };
    const now = this.now();
    if (req.method === 'GET') {
      switch (req.path) {
        case '/mode':
          return {
            body: {
              STATUS: S('Mode'),
              Mode: [{ Mode: this.mode.mode, Sleep: this.sleep, ...(this.mode.power !== undefined ? { Tune: 'power', Power: this.mode.power } : {}) }],
            },
          };
        case '/psu':
          return {
            body: {
              STATUS: S('PSU'),
              PSU: [{ PowerIn: `${this.power.powerW(now)}W`, PoutMax: `${this.power.opts.miningW + 300}W`, VoltageIn: '230V', Status: 'ok' }],
            },
          };
        case '/fan': {
          const rpm = Math.round(1000 + 4000 * this.power.level(now));
          return { body: { STATUS: S('Fan'), Fan: Array.from({ length: this.opts.fans ?? 4 }, (_, i) => ({ Index: i, Speed: rpm, Percentage: 50 })) } };
        }
        case '/ipreport':
          return {
            body: {
              STATUS: S('IPReport'),
              IPReport: [{ mac: '02:00:00:00:00:02', hostname: 'auradine-sim', version: 'FW2024.10.1-sim', model: this.opts.model ?? 'AT2880', HBSerialNo: ['HB0', 'HB1', 'HB2'] }],
            },
          };
        default:
          return { status: 404, body: { STATUS: E(`Unknown command ${req.path}`) } };
      }
    }
    if (req.method !== 'POST' || req.path !== '/mode') return { status: 404, body: { STATUS: E(`Unknown command ${req.path}`) } };
    if (this.behaviour.writesDenied) return { status: 403, body: { STATUS: E('Permission denied') } };
    if (body.sleep === 'on' || body.sleep === 'off') {
      this.actions.push(`sleep ${body.sleep}`);
      if (body.sleep === 'off' || !this.behaviour.ignoreCurtail) {
        this.sleep = body.sleep;
        this.power.set(body.sleep === 'on' ? 'sleeping' : 'mining');
      }
      return { body: { STATUS: S('Mode set') } };
    }
    if (body.mode === 'custom' && body.tune === 'power' && typeof body.power === 'number') {
      if (body.power < 1000 || body.power > this.power.opts.miningW) return { body: { STATUS: E(`power ${body.power} out of range`) } };
      this.actions.push(`custom power ${body.power}`);
      this.mode = { mode: 'custom', power: body.power };
      this.power.setPowerTarget(body.power);
      return { body: { STATUS: S('Mode set') } };
    }
    if (typeof body.mode === 'string' && ['normal', 'eco', 'turbo'].includes(body.mode)) {
      this.actions.push(`mode ${body.mode}`);
      this.mode = { mode: body.mode };
      this.power.setPowerTarget(null);
      return { body: { STATUS: S('Mode set') } };
    }
    return { body: { STATUS: E('Invalid mode parameters') } };
  }

  handleApi(req: CgminerRequest): unknown {
    const now = this.now();
    const ok = (msg: string, sections: Record<string, unknown>) => ({ STATUS: statusSection('S', 11, msg, 'gcminer 1.0'), ...sections, id: 1 });
    switch (req.command) {
      case 'version':
        return ok('GCMiner versions', { VERSION: [{ GCMiner: '1.0-sim', API: '3.7', Model: this.opts.model ?? 'AT2880' }] });
      case 'summary': {
        const mhs = this.power.hashrateThs(now) * 1e6;
        return ok('Summary', { SUMMARY: [{ Elapsed: 3600, 'MHS 5s': mhs, 'MHS 1m': mhs, 'MHS av': mhs, Accepted: 900, Rejected: 1 }] });
      }
      case 'devs': {
        const n = this.opts.boards ?? 3;
        const t = Math.round(35 + 35 * this.power.level(now));
        const mhs = (this.power.hashrateThs(now) * 1e6) / n;
        return ok(`${n} ASC(s)`, { DEVS: Array.from({ length: n }, (_, i) => ({ ASC: i, ID: i + 1, Enabled: 'Y', Status: 'Alive', Temperature: t - i, 'MHS 5s': mhs })) });
      }
      default:
        return { STATUS: statusSection('E', 14, 'Invalid command', 'gcminer 1.0'), id: 1 };
    }
  }
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
