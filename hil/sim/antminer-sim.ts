/**
 * Bitmain stock Antminer personality: the cgminer-family TCP API (bmminer,
 * read-only, rejects joined commands by default) plus the web CGI on :80
 * behind HTTP Digest auth (realm "antMiner Configuration", qop=auth, MD5),
 * as described in drivers/antminer/api-facts.md:
 *  - GET /cgi-bin/get_miner_conf.cgi -> the miner config (cgminer.conf keys)
 *  - POST /cgi-bin/set_miner_conf.cgi with the whole config echoed back ->
 *    {"stats":"success","code":"M000","msg":"OK!"} after `cgiDelayMs`
 *    (~20 s on real firmware), then the mining process restarts: the API
 *    resets connections for `restartMs`, and comes back in the new mode.
 *  - work modes: 0 normal, 1 sleep, 2 high, 3 low.
 * The firmware trap: with `modeKeys: 'miner-mode'` the firmware acts only on
 * `miner-mode`; a config carrying `bitmain-work-mode` alone is acknowledged
 * with M000 and changes nothing.
 */
import { randomBytes } from 'node:crypto';
import { verifyDigest } from '../../drivers/lib/http-digest.js';
import { CgminerServer, statusSection, type CgminerRequest, type Fault } from './cgminer-server.js';
import { HttpSimServer, type SimRequest, type SimResponse } from './http-server.js';
import { PowerModel, type PowerModelOptions } from './power-model.js';

export const ANTMINER_REALM = 'antMiner Configuration';

export interface AntminerSimOptions extends Partial<Omit<PowerModelOptions, 'now'>> {
  host?: string;
  apiPort?: number;
  webPort?: number;
  username?: string;
  password?: string;
  /** How long set_miner_conf.cgi takes to answer (real firmware: ~20 s). */
  cgiDelayMs?: number;
  /** After a config change the mining process restarts: API connections are reset for this long. */
  restartMs?: number;
  /** Which mode key the firmware obeys: 'both' (either key works) or 'miner-mode' (the trap). */
  modeKeys?: 'both' | 'miner-mode';
  /** Power in `stats`: newer firmware `chain_power: "3250 W"`, older a numeric `power`, or none at all. */
  powerField?: 'chain_power' | 'power' | 'none';
  /** Stock builds reject `summary+stats` (default true). */
  rejectJoin?: boolean;
  model?: string;
  now?: () => number;
}

export interface AntminerBehaviour {
  /** set_miner_conf answers 403 (config locked / writes disabled on this unit). */
  rejectWrites: boolean;
  /** set_miner_conf answers M000 and changes nothing. */
  ignoreWrites: boolean;
}

/** Fraction of nominal power/hashrate per work mode (1 = sleep is handled by the power model). */
const MODE_SCALE: Record<number, number> = { 0: 1, 2: 1.1, 3: 0.75 };

export class AntminerSim {
  readonly api: CgminerServer;
  readonly web: HttpSimServer;
  readonly power: PowerModel;
  readonly behaviour: AntminerBehaviour = { rejectWrites: false, ignoreWrites: false };
  /** Bodies of set_miner_conf POSTs, for tests. */
  readonly writes: Record<string, unknown>[] = [];
  /** The active work mode (0 normal, 1 sleep, 2 high, 3 low). */
  mode = 0;
  private conf: Record<string, unknown>;
  private readonly nonces = new Set<string>();
  private readonly now: () => number;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly opts: AntminerSimOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.power = new PowerModel({
      miningW: opts.miningW ?? 3250,
      sleepW: opts.sleepW ?? 12,
      hashrateThs: opts.hashrateThs ?? 104,
      sleepDelayMs: opts.sleepDelayMs ?? 6000,
      wakeRampMs: opts.wakeRampMs ?? 30_000,
      now: this.now,
    });
    this.conf = {
      pools: [{ url: 'stratum+tcp://pool.example:3333', user: 'acct.worker1', pass: 'x' }],
      'api-listen': true,
      'api-network': true,
      'api-groups': 'A:stats:pools:devs:summary:version',
      'api-allow': 'A:0/0,W:*',
      'bitmain-fan-ctrl': false,
      'bitmain-fan-pwm': '100',
      'bitmain-use-vil': true,
      'bitmain-freq': '675',
      'bitmain-voltage': '1400',
      'bitmain-ccdelay': '0',
      'bitmain-pwth': '0',
      'bitmain-work-mode': '0',
      'bitmain-freq-level': '100',
      'miner-mode': 0,
    };
    this.api = new CgminerServer({
      ...(opts.host !== undefined ? { host: opts.host } : {}),
      ...(opts.apiPort !== undefined ? { port: opts.apiPort } : {}),
      splitJoined: opts.rejectJoin === false,
      handler: (req) => this.handleApi(req),
    });
    this.web = new HttpSimServer((req) => this.handleWeb(req), opts.host ?? '127.0.0.1', opts.webPort ?? 0);
  }

  async listen(): Promise<{ host: string; apiPort: number; webPort: number }> {
    const a = await this.api.listen();
    const w = await this.web.listen();
    return { host: a.host, apiPort: a.port, webPort: w.port };
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await Promise.all([this.api.close(), this.web.close()]);
  }

  setFault(f: Fault): void {
    this.api.fault = f;
    this.web.fault = f;
  }

  get sleeping(): boolean {
    return this.power.target === 'sleeping';
  }

  get config(): Record<string, unknown> {
    return { ...this.conf };
  }

  // ---- web CGI --------------------------------------------------------------

  private challenge(stale = false): SimResponse {
    const nonce = randomBytes(16).toString('hex');
    this.nonces.add(nonce);
    return {
      status: 401,
      headers: {
        'www-authenticate': `Digest realm="${ANTMINER_REALM}", nonce="${nonce}", qop="auth"${stale ? ', stale=true' : ''}`,
        'content-type': 'text/html',
      },
      body: '<html><head><title>401 Unauthorized</title></head><body><h1>401 Unauthorized</h1></body></html>',
    };
  }

  /** Forgets issued nonces, as a web server restart would (clients must re-challenge). */
  expireNonces(): void {
    this.nonces.clear();
  }

  handleWeb(req: SimRequest): SimResponse {
    const header = req.headers.authorization;
    const verdict = verifyDigest({
      header: typeof header === 'string' ? header : undefined,
      method: req.method,
      realm: ANTMINER_REALM,
      users: { [this.opts.username ?? 'root']: this.opts.password ?? 'root' },
      nonceValid: (n) => this.nonces.has(n),
    });
    if (verdict === 'stale') return this.challenge(true);
    if (verdict !== 'ok') return this.challenge();
    switch (`${req.method} ${req.path}`) {
      case 'GET /':
        return { status: 200, headers: { 'content-type': 'text/html' }, body: '<html><head><title>Antminer</title></head><body>antMiner</body></html>' };
      case 'GET /cgi-bin/get_miner_conf.cgi':
        return { status: 200, body: this.conf };
      case 'GET /cgi-bin/get_system_info.cgi':
        return {
          status: 200,
          body: { minertype: this.opts.model ?? 'Antminer S19j Pro', nettype: 'DHCP', macaddr: '02:50:53:09:DA:D9', system_filesystem_version: 'Thu Jun 30 15:14:27 CST 2022' },
        };
      case 'POST /cgi-bin/set_miner_conf.cgi':
        return this.setConf(req);
      default:
        return { status: 404, headers: { 'content-type': 'text/html' }, body: '<html><body>404 Not Found</body></html>' };
    }
  }

  private setConf(req: SimRequest): SimResponse {
    const delayMs = this.opts.cgiDelayMs ?? 50;
    if (this.behaviour.rejectWrites) {
      return { status: 403, headers: { 'content-type': 'text/html' }, body: '<html><body>403 Forbidden</body></html>' };
    }
    const body = req.json;
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      return { status: 200, body: { stats: 'error', code: 'M001', msg: 'Illegal parameter' }, delayMs };
    }
    const next = body as Record<string, unknown>;
    this.writes.push(next);
    const parsed = (v: unknown): number | undefined => {
      const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
      return Number.isInteger(n) && n >= 0 && n <= 3 ? n : undefined;
    };
    const viaMinerMode = parsed(next['miner-mode']);
    const viaWorkMode = parsed(next['bitmain-work-mode']);
    const wanted = this.opts.modeKeys === 'miner-mode' ? viaMinerMode : (viaMinerMode ?? viaWorkMode);
    // The answer comes only after the delay, and the change takes effect then (the restart follows).
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.behaviour.ignoreWrites) return;
      this.conf = { ...this.conf, ...next };
      if (wanted !== undefined && wanted !== this.mode) {
        this.mode = wanted;
        this.power.set(wanted === 1 ? 'sleeping' : 'mining');
        this.restart();
      }
    }, delayMs);
    this.timers.add(t);
    return { status: 200, body: { stats: 'success', code: 'M000', msg: 'OK!' }, delayMs };
  }

  /** bmminer restarts after a config change: the API drops connections for `restartMs`. */
  private restart(): void {
    const ms = this.opts.restartMs ?? 0;
    if (ms <= 0 || this.api.fault.kind !== 'none') return;
    const fault: Fault = { kind: 'reset' };
    this.api.fault = fault;
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.api.fault === fault) this.api.fault = { kind: 'none' };
    }, ms);
    this.timers.add(t);
  }

  // ---- TCP API --------------------------------------------------------------

  private ok(code: number, msg: string, sections: Record<string, unknown>): Record<string, unknown> {
    return { STATUS: statusSection('S', code, msg, 'bmminer 1.0.0'), ...sections, id: 1 };
  }

  private scale(): number {
    return MODE_SCALE[this.mode] ?? 1;
  }

  powerW(at = this.now()): number {
    const { miningW, sleepW } = this.power.opts;
    const full = miningW * (this.mode === 1 ? 1 : this.scale());
    return Math.round(sleepW + (full - sleepW) * this.power.level(at));
  }

  hashrateThs(at = this.now()): number {
    return Math.round(this.power.hashrateThs(at) * (this.mode === 1 ? 1 : this.scale()) * 100) / 100;
  }

  handleApi(req: CgminerRequest): unknown {
    const now = this.now();
    const type = this.opts.model ?? 'Antminer S19j Pro';
    switch (req.command) {
      case 'version':
        return this.ok(22, 'BMMiner versions', {
          VERSION: [{ BMMiner: '1.0.0', API: '3.1', Miner: '49.0.1.3', CompileTime: 'Thu Jun 30 15:14:27 CST 2022', Type: type }],
        });
      case 'devdetails':
        return this.ok(69, 'Device Details', {
          DEVDETAILS: [{ DEVDETAILS: 0, Name: 'BC5', ID: 0, Driver: 'bitmain-api', Kernel: '', Model: type }],
        });
      case 'summary': {
        const ghs = (this.hashrateThs(now) * 1000).toFixed(2);
        // bmminer sends "GHS 5s" as a string
        return this.ok(11, 'Summary', {
          SUMMARY: [{ Elapsed: 3600, 'GHS 5s': ghs, 'GHS av': Number(ghs), Accepted: 1000, Rejected: 2, 'Hardware Errors': 0 }],
        });
      }
      case 'stats': {
        const level = this.power.level(now);
        const chip = Math.round(40 + 35 * level);
        const fan = Math.round(1200 + 4800 * level);
        const detail: Record<string, unknown> = {
          STATS: 0,
          ID: 'BC50',
          Elapsed: 3600,
          'GHS 5s': (this.hashrateThs(now) * 1000).toFixed(2),
          'GHS av': this.hashrateThs(now) * 1000,
          rate_unit: 'GH/s',
          total_rateideal: this.power.opts.hashrateThs * 1000,
          fan_num: 4,
          fan1: fan,
          fan2: fan + 60,
          fan3: fan - 40,
          fan4: fan + 20,
          temp_num: 3,
          miner_version: '49.0.1.3',
        };
        for (let i = 1; i <= 3; i++) {
          detail[`temp${i}`] = chip - 15;
          detail[`temp2_${i}`] = chip;
          detail[`temp_chip${i}`] = `${chip - 6}-${chip - 4}-${chip - 1}-${chip}`;
          detail[`chain_rate${i}`] = ((this.hashrateThs(now) * 1000) / 3).toFixed(2);
        }
        const pf = this.opts.powerField ?? 'chain_power';
        if (pf === 'chain_power') detail.chain_power = `${this.powerW(now)} W`;
        else if (pf === 'power') detail.power = this.powerW(now);
        return this.ok(70, 'BMMiner stats', {
          STATS: [{ BMMiner: '1.0.0', Miner: '49.0.1.3', CompileTime: 'Thu Jun 30 15:14:27 CST 2022', Type: type }, detail],
        });
      }
      case 'pools':
        return this.ok(7, '1 Pool(s)', { POOLS: [{ POOL: 0, URL: 'stratum+tcp://pool.example:3333', Status: 'Alive', User: 'acct.worker1' }] });
      default:
        return { STATUS: statusSection('E', 14, 'Invalid command', 'bmminer 1.0.0'), id: 1 };
    }
  }
}
