/**
 * Vnish (AnthillOS) personality of the HTTP simulator: the web API under
 * `/api/v1` as documented in drivers/vnish/api-facts.md. `POST /unlock
 * {"pw"}` returns a bearer token (wrong password: 401); mining stop/start,
 * pause/resume and throttle need `Authorization: Bearer <token>` (the bare
 * token is accepted too, as pyasic sends it); `GET /summary` follows the
 * shared power model; `GET /` is the AnthillOS web page.
 */
import { randomBytes } from 'node:crypto';
import { HttpSimServer, type SimRequest, type SimResponse } from './http-server.js';
import type { Fault } from './cgminer-server.js';
import { PowerModel, type PowerModelOptions } from './power-model.js';

export interface VnishSimOptions extends Partial<Omit<PowerModelOptions, 'now'>> {
  host?: string;
  port?: number;
  password?: string;
  model?: string;
  fwVersion?: string;
  chains?: number;
  fans?: number;
  now?: () => number;
}

export interface VnishBehaviour {
  /** Every write answers 403 {"err":"Forbidden"} even with a valid token. */
  writesDenied: boolean;
  /** Stop/pause are acknowledged but the miner keeps hashing. */
  ignoreCurtail: boolean;
}

export type VnishMiningState = 'mining' | 'stopped' | 'paused';

const PAGE = (title: string) =>
  `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title>` +
  `<meta name="description" content="AnthillOS"><link rel="icon" href="/favicon.ico"></head>` +
  `<body><div id="app"></div><script src="/assets/index.js"></script></body></html>`;

export class VnishSim {
  readonly server: HttpSimServer;
  readonly power: PowerModel;
  readonly behaviour: VnishBehaviour = { writesDenied: false, ignoreCurtail: false };
  /** Accepted writes, e.g. "mining/stop", "mining/throttle 50". */
  readonly actions: string[] = [];
  /** Unlocks answered with a token. */
  unlocks = 0;
  mining: VnishMiningState = 'mining';
  throttle = 100;
  private readonly tokens = new Set<string>();
  private readonly now: () => number;

  constructor(private readonly opts: VnishSimOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.power = new PowerModel({
      miningW: opts.miningW ?? 3250,
      sleepW: opts.sleepW ?? 40,
      hashrateThs: opts.hashrateThs ?? 95,
      sleepDelayMs: opts.sleepDelayMs ?? 4000,
      wakeRampMs: opts.wakeRampMs ?? 30_000,
      now: this.now,
    });
    this.server = new HttpSimServer((req) => this.handle(req), opts.host ?? '127.0.0.1', opts.port ?? 0);
  }

  listen(): Promise<{ host: string; port: number }> {
    return this.server.listen();
  }

  close(): Promise<void> {
    return this.server.close();
  }

  setFault(f: Fault): void {
    this.server.fault = f;
  }

  /** Forgets every token, as after a reboot. */
  expireTokens(): void {
    this.tokens.clear();
  }

  get sleeping(): boolean {
    return this.power.target === 'sleeping';
  }

  private authorized(req: SimRequest): boolean {
    const h = req.headers.authorization ?? '';
    const token = h.startsWith('Bearer ') ? h.slice(7) : h;
    return token !== '' && this.tokens.has(token);
  }

  handle(req: SimRequest): SimResponse {
    const { method, path } = req;
    if (method === 'GET' && (path === '/' || path === '/index.html')) {
      return { headers: { 'content-type': 'text/html' }, body: PAGE('AnthillOS') };
    }
    if (!path.startsWith('/api/v1/')) return { status: 404, body: { err: 'Not found' } };
    const route = path.slice('/api/v1/'.length);
    if (method === 'GET') {
      if (route === 'info') return { body: this.info() };
      if (route === 'summary') return { body: this.summary() };
      if (route === 'status') return { body: { miner_state: this.minerState(), unlocked: false } };
      return { status: 404, body: { err: 'Not found' } };
    }
    if (method !== 'POST') return { status: 405, body: { err: 'Method not allowed' } };
    if (route === 'unlock') {
      const pw = isObj(req.json) ? req.json.pw : undefined;
      if (pw !== (this.opts.password ?? 'admin')) return { status: 401, body: { err: 'Wrong password' } };
      const token = randomBytes(24).toString('base64url').slice(0, 32);
      this.tokens.add(token);
      this.unlocks++;
      return { body: { token } };
    }
    if (!this.authorized(req)) return { status: 401, body: { err: 'Unauthorized' } };
    if (this.behaviour.writesDenied) return { status: 403, body: { err: 'Forbidden' } };
    switch (route) {
      case 'mining/stop':
      case 'mining/pause':
        this.actions.push(route);
        if (!this.behaviour.ignoreCurtail) {
          this.mining = route === 'mining/stop' ? 'stopped' : 'paused';
          this.power.set('sleeping');
        }
        return {};
      case 'mining/start':
      case 'mining/resume':
        this.actions.push(route);
        this.mining = 'mining';
        this.power.set('mining');
        return {};
      case 'mining/throttle': {
        const percent = isObj(req.json) ? req.json.percent : undefined;
        if (typeof percent !== 'number' || !Number.isInteger(percent) || percent < 20 || percent > 100) {
          return { status: 422, body: { err: 'percent must be an integer 20..100' } };
        }
        this.actions.push(`mining/throttle ${percent}`);
        this.throttle = percent;
        this.power.setPowerTarget(percent === 100 ? null : (this.power.opts.miningW * percent) / 100);
        return { body: { restart_required: false, reboot_required: false } };
      }
      default:
        return { status: 404, body: { err: 'Not found' } };
    }
  }

  private minerState(): string {
    if (this.mining !== 'mining') return this.mining;
    return this.power.isHashing() ? 'mining' : 'starting';
  }

  private info(): Record<string, unknown> {
    return {
      miner: this.opts.model ?? 'Antminer S19',
      model: 's19',
      fw_name: 'Vnish',
      fw_version: this.opts.fwVersion ?? '1.2.6',
      algorithm: 'sha256d',
      hr_measure: 'GH/s',
      system: { os: 'GNU/Linux', network_status: { hostname: 'antminer', mac: '02:00:00:00:00:01' } },
    };
  }

  summary(): Record<string, unknown> {
    const now = this.now();
    const p = this.power;
    const ths = p.hashrateThs(now);
    const level = p.level(now);
    const chip = Math.round(40 + 30 * level);
    const pcb = Math.round(35 + 22 * level);
    const nChains = this.opts.chains ?? 3;
    const nFans = this.opts.fans ?? 4;
    const rpm = Math.round(1500 + 3000 * level);
    const w = p.powerW(now);
    return {
      miner: {
        miner_status: { miner_state: this.minerState(), miner_state_time: 60, throttled: this.throttle },
        miner_type: `${this.opts.model ?? 'Antminer S19'} (Vnish ${this.opts.fwVersion ?? '1.2.6'})`,
        hr_stock: p.opts.hashrateThs * 1000,
        average_hashrate: ths,
        instant_hashrate: ths,
        hr_realtime: Math.round(ths * 1000 * 10) / 10,
        hr_nominal: p.opts.hashrateThs * 1000,
        pcb_temp: { min: pcb - 5, max: pcb },
        chip_temp: { min: chip - 6, max: chip },
        power_consumption: w,
        power_usage: w,
        power_efficiency: ths > 0 ? Math.round((w / ths) * 10) / 10 : 0,
        hw_errors_percent: 0,
        hw_errors: 0,
        cooling: {
          fan_num: nFans,
          fans: Array.from({ length: nFans }, (_, i) => ({ id: i, rpm, status: 'ok', max_rpm: 6000 })),
          settings: { mode: { name: 'auto' } },
          fan_duty: Math.round(30 + 50 * level),
        },
        chains: Array.from({ length: nChains }, (_, i) => ({
          id: i + 1,
          frequency: 675,
          voltage: 13800,
          hashrate_rt: Math.round(((ths * 1000) / nChains) * 10) / 10,
          chip_temp: { min: chip - 6, max: chip - (i % 2) },
          pcb_temp: { min: pcb - 5, max: pcb - (i % 2) },
          status: { state: this.mining === 'mining' ? 'mining' : 'stopped' },
        })),
      },
    };
  }
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
