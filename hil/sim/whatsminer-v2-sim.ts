/**
 * Whatsminer (btminer) API v2 personality of the cgminer-family simulator
 * (port 4028 style): plaintext reads (`summary`, `devs`, `devdetails`,
 * `status`, `get_version`, `get_psu`, `get_token`), encrypted writes
 * `{"enc":1,"data":base64(AES-256-ECB)}` checked with the real key/sign
 * derivation (drivers/whatsminer-v2/api-facts.md), encrypted replies, a token
 * life of 30 min and at most 32 tokens per client, writes disabled while the
 * admin password is the default "admin", and the shared PowerModel with a
 * power-percent target on top.
 */
import { randomBytes } from 'node:crypto';
import { CgminerServer, statusSection, type CgminerRequest, type Fault } from './cgminer-server.js';
import { PowerModel, type PowerModelOptions } from './power-model.js';
import { decrypt, deriveToken, encrypt, type V2Token } from '../../drivers/whatsminer-v2/crypto.js';

export interface WhatsminerV2SimOptions extends Partial<Omit<PowerModelOptions, 'now' | 'miningW'>> {
  host?: string;
  port?: number;
  /** Admin password; "admin" (the factory default) means writes are refused. */
  password?: string;
  /** The miner's power limit (summary `Power Limit`), drawn at 100 %. */
  powerLimitW?: number;
  tokenLifeMs?: number;
  maxTokens?: number;
  model?: string;
  now?: () => number;
}

export interface WhatsminerV2Behaviour {
  /** Writes answer "can't access write cmd" (API writes not enabled in WhatsMinerTool). */
  writesDisabled: boolean;
  /** power_off is acknowledged but ignored (a miner that keeps hashing). */
  ignoreCurtail: boolean;
}

const FW = '20240723.22.REL';
const SALT_CHARS = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** 8 characters from the crypt(3) salt alphabet. */
function cryptSalt(): string {
  return Array.from(randomBytes(8), (b) => SALT_CHARS[b & 63]).join('');
}
const API_VER = '2.0.5';

export class WhatsminerV2Sim {
  readonly server: CgminerServer;
  readonly power: PowerModel;
  readonly behaviour: WhatsminerV2Behaviour;
  /** Decrypted write commands accepted, in order (for tests). */
  readonly actions: string[] = [];
  /** How many get_token calls were answered. */
  tokensIssued = 0;
  /** set_power_pct in force (100 = the full power limit). */
  percent = 100;
  private readonly salt = cryptSalt();
  private tokens: { t: V2Token; at: number }[] = [];
  private readonly now: () => number;
  private readonly password: string;
  /**
   * The AES key of the encrypted writes: it depends only on the password and
   * the salt, both fixed for the simulator's life, so it is derived once (two
   * md5crypt runs, about 3 ms) and not per write. A rack of these in one
   * process would otherwise spend its CPU deriving the same key for every
   * write, one miner after another, where real miners each use their own CPU.
   */
  private aesKeyOnce: Buffer | undefined;

  constructor(private readonly opts: WhatsminerV2SimOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.password = opts.password ?? 'sim-pass';
    this.behaviour = { writesDisabled: this.password === 'admin', ignoreCurtail: false };
    this.power = new PowerModel({
      miningW: opts.powerLimitW ?? 3300,
      sleepW: opts.sleepW ?? 18,
      hashrateThs: opts.hashrateThs ?? 126,
      sleepDelayMs: opts.sleepDelayMs ?? 5000,
      wakeRampMs: opts.wakeRampMs ?? 30_000,
      now: this.now,
    });
    this.server = new CgminerServer({
      ...(opts.host !== undefined ? { host: opts.host } : {}),
      ...(opts.port !== undefined ? { port: opts.port } : {}),
      handler: (req) => this.handle(req),
      raw: (text) => this.raw(text),
    });
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

  get powerLimitW(): number {
    return this.power.opts.miningW;
  }

  get mineroff(): boolean {
    return this.power.target === 'sleeping';
  }

  /** Forget every token (as after a miner restart). */
  dropTokens(): void {
    this.tokens = [];
  }

  private flat(status: 'S' | 'E', code: number, msg: unknown): Record<string, unknown> {
    return { STATUS: status, When: Math.floor(this.now() / 1000), Code: code, Msg: msg, Description: '' };
  }

  private ok(code: number, msg: string, sections: Record<string, unknown>): Record<string, unknown> {
    return { STATUS: statusSection('S', code, msg, 'btminer'), ...sections, id: 1 };
  }

  powerW(at = this.now()): number {
    return this.power.powerW(at);
  }

  hashrateThs(at = this.now()): number {
    return this.power.hashrateThs(at);
  }

  /** Encrypted writes; anything else goes to the plaintext handler. */
  private raw(text: string): unknown {
    let j: unknown;
    try {
      j = JSON.parse(text.trim());
    } catch {
      return undefined;
    }
    if (!j || typeof j !== 'object' || !('enc' in j)) return undefined;
    const data = (j as { data?: unknown }).data;
    if (typeof data !== 'string') return this.flat('E', 23, 'invalid JSON message');
    if (this.behaviour.writesDisabled) return this.flat('E', 45, "can't access write cmd");
    const at = this.now();
    const life = this.opts.tokenLifeMs ?? 30 * 60_000;
    this.tokens = this.tokens.filter((t) => at - t.at < life);
    // The miner's key depends only on its password and salt, so any live token's aesKey decrypts.
    const aesKey = (this.aesKeyOnce ??= deriveToken(this.password, { salt: this.salt, time: '0', newsalt: 'x' }).aesKey);
    let cmd: Record<string, unknown>;
    try {
      const plain = JSON.parse(decrypt(aesKey, data)) as unknown;
      if (!plain || typeof plain !== 'object') throw new Error('not an object');
      cmd = plain as Record<string, unknown>;
    } catch {
      // a wrong password gives a wrong key: the plaintext is noise
      return this.flat('E', 23, 'invalid JSON message');
    }
    if (!this.tokens.some((t) => t.t.sign === cmd.token)) return this.flat('E', 135, 'check token err');
    const reply = this.write(cmd);
    return { enc: encrypt(aesKey, JSON.stringify(reply)) };
  }

  private write(cmd: Record<string, unknown>): Record<string, unknown> {
    const name = typeof cmd.cmd === 'string' ? cmd.cmd : '';
    switch (name) {
      case 'power_off':
        this.actions.push(`power_off respbefore=${String(cmd.respbefore)}`);
        if (!this.behaviour.ignoreCurtail) this.power.set('sleeping');
        return this.flat('S', 131, '');
      case 'power_on':
        this.actions.push('power_on');
        this.power.set('mining');
        return this.flat('S', 131, '');
      case 'set_power_pct':
      case 'set_power_pct_v2': {
        const p = Number(cmd.percent);
        if (!Number.isInteger(p) || p < 0 || p > 100) return this.flat('E', 14, 'invalid API command or data');
        this.actions.push(`${name} ${p}`);
        this.percent = p;
        this.power.setPowerTarget(p >= 100 ? null : (this.powerLimitW * p) / 100);
        return this.flat('S', 131, '');
      }
      case 'adjust_power_limit':
        // the real miner reboots to apply it; recorded so tests can prove it is never sent
        this.actions.push(`adjust_power_limit ${String(cmd.power_limit)}`);
        return this.flat('S', 131, '');
      default:
        return this.flat('E', 14, 'invalid API command or data');
    }
  }

  handle(req: CgminerRequest): unknown {
    const now = this.now();
    const p = this.power;
    const hash = this.hashrateThs(now);
    const temp = Math.round((35 + 35 * p.level(now)) * 10) / 10;
    const fan = p.level(now) === 0 && p.target === 'sleeping' ? 0 : Math.round(2000 + 4000 * p.level(now));
    switch (req.command) {
      case 'summary': {
        const mhs = hash * 1e6;
        return this.ok(11, 'Summary', {
          SUMMARY: [
            {
              Elapsed: 3600,
              'MHS av': mhs,
              'MHS 5s': mhs,
              'MHS 1m': mhs,
              'MHS 5m': mhs,
              'MHS 15m': mhs,
              Temperature: temp,
              'Fan Speed In': fan,
              'Fan Speed Out': fan,
              Power: this.powerW(now),
              'Power Rate': hash > 0 ? Math.round((this.powerW(now) / hash) * 100) / 100 : 0,
              'Power Limit': this.powerLimitW,
              'Power Mode': 'Normal',
              'Factory GHS': p.opts.hashrateThs * 1000,
              'Chip Temp Max': temp + 12,
              'Env Temp': 25,
              'Hash Stable': true,
              'Target Freq': 100,
            },
          ],
        });
      }
      case 'devs':
        return this.ok(9, '3 ASC(s)', {
          DEVS: [0, 1, 2].map((i) => ({ ASC: i, Slot: i, Enabled: 'Y', Status: 'Alive', Temperature: temp, 'MHS 1m': (hash * 1e6) / 3 })),
        });
      case 'devdetails':
        return this.ok(69, 'Device Details', {
          DEVDETAILS: [0, 1, 2].map((i) => ({ DEVDETAILS: i, Name: 'SM', ID: i, Driver: 'bitmicro', Kernel: '', Model: this.opts.model ?? 'M50S' })),
        });
      case 'version':
        return this.ok(22, 'BTMiner versions', { VERSION: [{ BTMiner: FW, API: API_VER }] });
      case 'status':
        return this.flat('S', 131, {
          mineroff: this.mineroff ? 'true' : 'false',
          mineroff_reason: this.mineroff ? 'by whatsminer api' : '',
          FirmwareVersion: `'${FW}'`,
          power_mode: 'Normal',
          hash_percent: '',
        });
      case 'get_version':
        return this.flat('S', 131, { api_ver: `whatsminer v${API_VER}`, fw_ver: FW, platform: 'H6OS', chip: 'K210' });
      case 'get_psu':
        return this.flat('S', 131, { name: 'P221B', iin: '14.2', vin: '22800', pin: String(this.powerW(now)), fan_speed: '6200' });
      case 'get_token': {
        const live = this.tokens.filter((t) => now - t.at < (this.opts.tokenLifeMs ?? 30 * 60_000));
        if (live.length >= (this.opts.maxTokens ?? 32)) return this.flat('E', 136, 'token over max times');
        const msg = { time: String(Math.floor(now / 1000) % 10000).padStart(4, '0'), salt: this.salt, newsalt: cryptSalt() };
        this.tokens = [...live, { t: deriveToken(this.password, msg), at: now }];
        this.tokensIssued++;
        return this.flat('S', 134, msg);
      }
      default:
        return { STATUS: statusSection('E', 14, 'invalid cmd', 'btminer'), id: 1 };
    }
  }
}
