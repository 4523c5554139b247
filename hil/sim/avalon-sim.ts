/**
 * Canaan Avalon personality of the cgminer-family simulator (facts in
 * drivers/avalon/api-facts.md): `version` (PROD "AvalonMiner 1466"),
 * `devdetails`, `summary` (MH/s; "MHS av" stays high in standby, as on the
 * real miner), `estats`/`stats` with the `MM ID0` bracketed string, and
 * `ascset`: `0,softoff,1:<ts>` / `0,softon,1:<ts>` act at that unix time
 * (scheduled with timers), `0,worklevel,set|get`, unknown options answer
 * "ASC 0 set failed: Unknown option". API writes can be denied (code 45).
 */
import { CgminerServer, statusSection, type CgminerRequest, type Fault } from './cgminer-server.js';
import { PowerModel, type PowerModelOptions } from './power-model.js';

export interface AvalonSimOptions extends Partial<Omit<PowerModelOptions, 'now'>> {
  host?: string;
  port?: number;
  model?: string;
  /** How softoff is answered: STATUS I "success softoff" (code 118, per the reference) or STATUS S "ASC 0 set OK". */
  softoffReply?: 'info' | 'ok';
  /** How softon is answered; 'close' closes without a reply (seen on an A1466). */
  softonReply?: 'info' | 'ok' | 'close';
  /** Newer firmware reports WALLPOWER[] and a 7-field PS[]; older only a 6-field PS[]. */
  powerStyle?: 'wallpower' | 'ps6';
  /** Valid work levels (inclusive); power scales by 10 % per level around 0. */
  levelRange?: [number, number];
  now?: () => number;
}

export interface AvalonBehaviour {
  /** ascset answers STATUS E code 45 (API write access not granted). */
  denyWrites: boolean;
  /** softoff/softon are acknowledged but nothing happens. */
  ignoreCurtail: boolean;
}

const CLOSE = Symbol('close');

export class AvalonSim {
  readonly server: CgminerServer;
  readonly power: PowerModel;
  readonly behaviour: AvalonBehaviour = { denyWrites: false, ignoreCurtail: false };
  /** ascset parameters received, for tests. */
  readonly actions: string[] = [];
  workLevel = 0;
  softOffTime = 0;
  softOnTime = 0;
  private readonly now: () => number;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly opts: AvalonSimOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.power = new PowerModel({
      miningW: opts.miningW ?? 3730,
      sleepW: opts.sleepW ?? 18,
      hashrateThs: opts.hashrateThs ?? 200,
      sleepDelayMs: opts.sleepDelayMs ?? 5000,
      wakeRampMs: opts.wakeRampMs ?? 60_000,
      now: this.now,
    });
    this.server = new CgminerServer({
      ...(opts.host !== undefined ? { host: opts.host } : {}),
      ...(opts.port !== undefined ? { port: opts.port } : {}),
      handler: (req) => this.reply(req),
    });
  }

  listen(): Promise<{ host: string; port: number }> {
    return this.server.listen();
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.server.close();
  }

  setFault(f: Fault): void {
    this.server.fault = f;
  }

  get sleeping(): boolean {
    return this.power.target === 'sleeping';
  }

  private scale(): number {
    return 1 + 0.1 * this.workLevel;
  }

  powerW(at = this.now()): number {
    const { miningW, sleepW } = this.power.opts;
    return Math.round(sleepW + (miningW * this.scale() - sleepW) * this.power.level(at));
  }

  hashrateThs(at = this.now()): number {
    return Math.round(this.power.hashrateThs(at) * this.scale() * 100) / 100;
  }

  private st(status: 'S' | 'I' | 'E', code: number, msg: string, sections: Record<string, unknown> = {}): Record<string, unknown> {
    return { STATUS: statusSection(status, code, msg, 'cgminer 4.11.1'), ...sections, id: 1 };
  }

  /** The handler seen by CgminerServer: CLOSE becomes an empty reply (only the trailing NUL, then the socket ends). */
  private reply(req: CgminerRequest): unknown {
    const r = this.handle(req);
    return r === CLOSE ? '' : r;
  }

  private schedule(atS: number, fn: () => void): void {
    const delay = Math.max(0, atS * 1000 - this.now());
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, delay);
    this.timers.add(t);
  }

  mmString(at = this.now()): string {
    const level = this.power.level(at);
    const idle = this.power.target === 'sleeping';
    const ghs = this.hashrateThs(at) * 1000;
    const nominal = this.power.opts.hashrateThs * this.scale() * 1000;
    const tmax = Math.round(30 + 48 * level);
    const fan = Math.round(4300 * level);
    const w = this.powerW(at);
    const ps = this.opts.powerStyle === 'ps6' ? `PS[0 1228 1299 238 ${w} 1296]` : `PS[0 1209 1187 297 ${Math.round(w * 0.945)} 1188 ${w}] WALLPOWER[${w}]`;
    const boards = [0, 1, 2].map(() => (ghs / 3).toFixed(2)).join(' ');
    return [
      'Ver[15-194-24102401_25462b2_9ddf522] DNA[020100008c699117] MEMFREE[1392832.1381104] NETFAIL[0 0 0 0 0 0 0 0]',
      `SYSTEMSTATU[Work: ${idle ? 'In Idle' : 'In Work'}, Hash Board: 3 ] Elapsed[975]BOOTBY[0x04.00000000] LW[714031] MH[0 0 0] DHW[0] HW[0] DH[nan%]`,
      `Temp[31] ITemp[31] TMax[${tmax}] TAvg[${tmax - 8}] Fan1[${fan}] Fan2[${fan + 7}] FanR[${Math.round(49 * level)}%] Vo[296] ${ps}`,
      `GHSspd[${ghs.toFixed(2)}] DHspd[1.299%] GHSmm[${nominal.toFixed(2)}] GHSavg[${(nominal * 0.92).toFixed(2)}] WU[2570548.05] Freq[345.94] Led[0]`,
      `MGHS[${boards}] MTmax[${tmax - 1} ${tmax} ${tmax - 1}] MTavg[${tmax - 9} ${tmax - 8} ${tmax - 7}] TA[480] Core[A3197S] PING[131] POWS[0] HASHS[0 0 0]`,
      `POOLS[0] SoftOFF[${idle ? 4 : 0}] SoftOffTime[${this.softOffTime}] SoftOnTime[${this.softOnTime}] ECHU[0 0 0] ECMM[0]`,
      `WORKMODE[1] WORKLEVEL[${this.workLevel}] MPO[${Math.round(this.power.opts.miningW * 1.2)}] Nonce Mask[25]`,
    ].join(' ');
  }

  handle(req: CgminerRequest): unknown {
    const now = this.now();
    const model = this.opts.model ?? 'AvalonMiner 1466';
    switch (req.command) {
      case 'version':
        return this.st('S', 22, 'CGMiner versions', {
          VERSION: [
            {
              CGMiner: '4.11.1',
              API: '3.7',
              STM8: '20.08.01',
              PROD: model,
              MODEL: model.replace(/\D+/g, ''),
              HWTYPE: 'MM4v2_X3',
              SWTYPE: 'MM314',
              VERSION: '24102401_25462b2_9ddf522',
              LOADER: 'd0d779de.00',
              DNA: '020100008c699117',
              MAC: 'b4a2eb3f1a2c',
              UPAPI: '2',
            },
          ],
        });
      case 'devdetails':
        return this.st('S', 69, 'Device Details', { DEVDETAILS: [{ DEVDETAILS: 0, Name: 'AVA10', ID: 0, Driver: 'avalon', Kernel: '', Model: '', 'Device Path': '' }] });
      case 'summary': {
        const mhs = this.hashrateThs(now) * 1e6;
        return this.st('S', 11, 'Summary', {
          SUMMARY: [{ Elapsed: 975, 'MHS av': this.power.opts.hashrateThs * 0.92e6, 'MHS 5s': mhs, 'MHS 1m': mhs, Accepted: 52, Rejected: 0, 'Hardware Errors': 0 }],
        });
      }
      case 'estats':
      case 'stats':
        return this.st('S', 70, 'CGMiner stats', {
          STATS: [
            { STATS: 0, ID: 'AVA100', Elapsed: 975, Calls: 0, Wait: 0, Max: 0, Min: 99999999, 'MM ID0': this.mmString(now) },
            { STATS: 1, ID: 'POOL0', Elapsed: 975, Calls: 0, Wait: 0, Max: 0, Min: 99999999 },
          ],
        });
      case 'ascset':
        return this.ascset(req.parameter ?? '');
      default:
        return this.st('E', 14, 'Invalid command');
    }
  }

  private ascset(param: string): unknown {
    if (this.behaviour.denyWrites) return this.st('E', 45, "Access denied to 'ascset' command");
    const parts = param.split(',');
    if (parts[0] !== '0') return this.st('E', 120, 'ASC 0 set failed: Missing device id parameter');
    const opt = parts[1] ?? '';
    this.actions.push(param);
    switch (opt) {
      case 'softoff':
      case 'softon': {
        const m = /^1:(\d+)$/.exec(parts[2] ?? '');
        if (!m) return this.st('E', 120, `ASC 0 set failed: ${opt} needs 1:<timestamp>`);
        const ts = Number(m[1]);
        const off = opt === 'softoff';
        if (off) this.softOffTime = ts;
        else this.softOnTime = ts;
        if (!this.behaviour.ignoreCurtail) this.schedule(ts, () => this.power.set(off ? 'sleeping' : 'mining'));
        const style = off ? (this.opts.softoffReply ?? 'info') : (this.opts.softonReply ?? 'info');
        if (style === 'close') return CLOSE;
        if (style === 'ok') return this.st('S', 119, 'ASC 0 set OK');
        return this.st('I', 118, `ASC 0 set info: success ${opt}:${ts}`);
      }
      case 'worklevel': {
        if (parts[2] === 'get') return this.st('I', 118, `ASC 0 set info: worklevel ${this.workLevel}`);
        const n = Number(parts[3]);
        const [lo, hi] = this.opts.levelRange ?? [-1, 2];
        if (parts[2] !== 'set' || !Number.isInteger(n) || n < lo || n > hi) {
          return this.st('E', 120, `ASC 0 set failed: worklevel out of range ${lo}~${hi}`);
        }
        this.workLevel = n;
        return this.st('S', 119, 'ASC 0 set OK');
      }
      default:
        return this.st('E', 120, `ASC 0 set failed: Unknown option: ${opt}`);
    }
  }
}
