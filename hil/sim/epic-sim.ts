/**
 * ePIC PowerPlay / UMC personality of the HTTP simulator: the HTTP API that
 * ePIC control boards serve on port 4028 (see drivers/epic/api-facts.md).
 * GETs (`/summary`, `/capabilities`) are open; every POST carries
 * `{"param", "password"}` and answers `{"result", "error"}` (wrong password:
 * 401). `/miner` Stop/Autostart drives the shared power model;
 * `/perpetualtune/algo` with the PowerTune algorithm sets its power target.
 * `GET /` is the "Miner Web Dashboard" page.
 */
import { HttpSimServer, type SimRequest, type SimResponse } from './http-server.js';
import type { Fault } from './cgminer-server.js';
import { PowerModel, type PowerModelOptions } from './power-model.js';

export interface EpicSimOptions extends Partial<Omit<PowerModelOptions, 'now'>> {
  host?: string;
  port?: number;
  password?: string;
  model?: string;
  software?: string;
  boards?: number;
  fans?: number;
  /** Range of the PowerTune algorithm in /capabilities (W). */
  powerTuneMinW?: number;
  powerTuneMaxW?: number;
  now?: () => number;
}

export interface EpicBehaviour {
  /** Every POST answers 403 (API writes disabled), whatever the password. */
  writesDenied: boolean;
  /** Stop is acknowledged but the miner keeps hashing. */
  ignoreCurtail: boolean;
}

const PAGE =
  '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"/><title>Miner Web Dashboard</title>' +
  '<link rel="manifest" href="/manifest.json"/></head><body><noscript>You need to enable JavaScript to run this app.</noscript>' +
  '<div id="root"></div><script src="/static/js/main.js"></script></body></html>';

export class EpicSim {
  readonly server: HttpSimServer;
  readonly power: PowerModel;
  readonly behaviour: EpicBehaviour = { writesDenied: false, ignoreCurtail: false };
  /** Accepted writes, e.g. "miner Stop", "perpetualtune/algo PowerTune 2500". */
  readonly actions: string[] = [];
  operatingState: 'Mining' | 'Idling' = 'Mining';
  tuneRunning = true;
  algorithm: { name: string; target: number; minThrottle?: number; step?: number } = { name: 'VoltageOptimizer', target: 110 };
  private readonly now: () => number;

  constructor(private readonly opts: EpicSimOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.power = new PowerModel({
      miningW: opts.miningW ?? 3300,
      sleepW: opts.sleepW ?? 60,
      hashrateThs: opts.hashrateThs ?? 110,
      sleepDelayMs: opts.sleepDelayMs ?? 5000,
      wakeRampMs: opts.wakeRampMs ?? 60_000,
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

  get sleeping(): boolean {
    return this.power.target === 'sleeping';
  }

  handle(req: SimRequest): SimResponse {
    if (req.method === 'GET') {
      switch (req.path) {
        case '/':
          return { headers: { 'content-type': 'text/html' }, body: PAGE };
        case '/summary':
          return { body: this.summary() };
        case '/capabilities':
          return { body: this.capabilitiesBody() };
        default:
          return { status: 404, body: { result: false, error: 'Not found' } };
      }
    }
    if (req.method !== 'POST') return { status: 405, body: { result: false, error: 'Method not allowed' } };
    const body = isObj(req.json) ? req.json : {};
    if (body.password !== (this.opts.password ?? 'letmein')) return { status: 401, body: { result: false, error: 'Incorrect password' } };
    if (this.behaviour.writesDenied) return { status: 403, body: { result: false, error: 'API writes are disabled' } };
    const param = body.param;
    switch (req.path) {
      case '/miner':
        if (param === 'Stop') {
          this.actions.push('miner Stop');
          if (!this.behaviour.ignoreCurtail) {
            this.operatingState = 'Idling';
            this.power.set('sleeping');
          }
          return ok();
        }
        if (param === 'Autostart') {
          this.actions.push('miner Autostart');
          this.operatingState = 'Mining';
          this.power.set('mining');
          return ok();
        }
        return { body: { result: false, error: `Invalid param: ${JSON.stringify(param)}` } };
      case '/perpetualtune':
        if (typeof param !== 'boolean') return { body: { result: false, error: 'param must be a boolean' } };
        this.actions.push(`perpetualtune ${String(param)}`);
        this.tuneRunning = param;
        return ok();
      case '/perpetualtune/algo': {
        const p = isObj(param) ? param : {};
        const { algo, target } = p;
        if (typeof algo !== 'string' || typeof target !== 'number') return { body: { result: false, error: 'param needs algo and target' } };
        const isPower = algo === 'PowerTune';
        const min = isPower ? (this.opts.powerTuneMinW ?? 1000) : 50;
        const max = isPower ? (this.opts.powerTuneMaxW ?? this.power.opts.miningW) : this.power.opts.hashrateThs;
        if (!['PowerTune', 'VoltageOptimizer', 'BoardTune', 'ChipTune'].includes(algo)) return { body: { result: false, error: `Unknown algorithm ${algo}` } };
        if (target < min || target > max) return { body: { result: false, error: `Target ${target} outside ${min}..${max}` } };
        this.actions.push(`perpetualtune/algo ${algo} ${target}`);
        this.algorithm = {
          name: algo,
          target,
          ...(typeof p.min_throttle === 'number' ? { minThrottle: p.min_throttle } : {}),
          ...(typeof p.throttle_step === 'number' ? { step: p.throttle_step } : {}),
        };
        this.power.setPowerTarget(isPower ? target : (this.power.opts.miningW * target) / this.power.opts.hashrateThs);
        return ok();
      }
      default:
        return { status: 404, body: { result: false, error: 'Not found' } };
    }
  }

  private capabilitiesBody(): Record<string, unknown> {
    return {
      Model: this.opts.model ?? 'Antminer S19j Pro',
      'Performance Estimator': { 'Chip Count': 126 },
      'Board Serial Numbers': Array.from({ length: this.opts.boards ?? 3 }, (_, i) => `SIM-HB-${i}`),
      PerpetualTune: {
        VoltageOptimizer: { algorithm: 'VoltageOptimizer', name: 'Voltage Optimizer', description: 'Hashrate target (TH/s)', min: 50, max: this.power.opts.hashrateThs },
        PowerTune: {
          algorithm: 'PowerTune',
          name: 'Power Tune',
          description: 'Power target (W)',
          min: this.opts.powerTuneMinW ?? 1000,
          max: this.opts.powerTuneMaxW ?? this.power.opts.miningW,
        },
      },
    };
  }

  summary(): Record<string, unknown> {
    const now = this.now();
    const p = this.power;
    const level = p.level(now);
    const n = this.opts.boards ?? 3;
    const mhsPerBoard = (p.hashrateThs(now) * 1e6) / n;
    const temp = Math.round(35 + 33 * level);
    const rpm = Math.round(1200 + 3600 * level);
    const mining = this.operatingState === 'Mining';
    const state = mining && !p.isHashing(now) ? 'Initializing' : this.operatingState;
    const a = this.algorithm;
    return {
      Hostname: 'epic-sim',
      Software: this.opts.software ?? 'PowerPlay-BM v1.10.0',
      Mining: { Algorithm: 'SHA256' },
      Status: { 'Operating State': state, 'Last Command': mining ? 'Autostart' : 'Stop', 'Last Error': null },
      Session: { Uptime: 3600, Accepted: 1200, Rejected: 3, 'Active HBs': mining ? n : 0 },
      Stratum: { 'Current Pool': 'stratum+tcp://pool.example:3333', 'Current User': 'sim.worker' },
      'Power Supply Stats': { 'Input Power': p.powerW(now), 'Output Voltage': 12.8, 'Target Voltage': 12.8, 'Input Voltage': 230 },
      HBs: Array.from({ length: n }, (_, i) => ({
        Index: i,
        'Input Voltage': 12.8,
        Temperature: temp - i,
        'Core Clock Avg': mining ? 500 : 0,
        Hashrate: [Math.round(mhsPerBoard), mining ? 98.5 : 0],
      })),
      'Fans Rpm': { 'Fans Speed 0': rpm, 'Fans Speed 1': rpm, 'Fans Speed 2': rpm, 'Fans Speed 3': rpm },
      PerpetualTune: {
        Running: this.tuneRunning,
        Algorithm: {
          [a.name]: {
            Target: a.target,
            Optimized: false,
            ...(a.minThrottle !== undefined ? { 'Min Throttle Target': a.minThrottle } : {}),
            ...(a.step !== undefined ? { 'Throttle Step': a.step } : {}),
          },
        },
      },
      Misc: { 'Locate Miner State': false },
    };
  }
}

function ok(): SimResponse {
  return { body: { result: true, error: null } };
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
