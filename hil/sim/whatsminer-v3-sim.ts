/**
 * Whatsminer API v3 personality (firmware after 2024.11): TCP (4433 on the
 * device), every frame both ways a 4-byte little-endian length + JSON.
 * Reads `get.device.info` (param "salt" -> the salt) and `get.miner.status`
 * (param "summary"); writes carry `ts`, `account`, `token` = first 8 chars of
 * base64(sha256(cmd + password + salt + ts)) and are checked for real:
 * `set.miner.service` stop/start, `set.miner.power_percent`,
 * `set.miner.power_limit` (recorded: the device restarts on it). Fault
 * switches as the cgminer server's, applied to the framing.
 */
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { encodeFrame, FrameReader } from '../../drivers/lib/lpjson.js';
import { flood, type Fault } from './cgminer-server.js';
import { SimListener } from './listen.js';
import { PowerModel, type PowerModelOptions } from './power-model.js';

export interface WhatsminerV3SimOptions extends Partial<Omit<PowerModelOptions, 'now' | 'miningW'>> {
  host?: string;
  port?: number;
  account?: string;
  password?: string;
  powerLimitW?: number;
  /** Accepted |ts - device clock| in seconds. */
  maxSkewS?: number;
  model?: string;
  now?: () => number;
}

export interface WhatsminerV3Behaviour {
  /** Every write answers code -4 "access denied" (writes turned off on the device). */
  writesDisabled: boolean;
  ignoreCurtail: boolean;
}

export function v3Token(cmd: string, password: string, salt: string, ts: number): string {
  return createHash('sha256').update(`${cmd}${password}${salt}${ts}`, 'utf8').digest('base64').slice(0, 8);
}

export class WhatsminerV3Sim {
  readonly power: PowerModel;
  readonly behaviour: WhatsminerV3Behaviour = { writesDisabled: false, ignoreCurtail: false };
  readonly actions: string[] = [];
  fault: Fault = { kind: 'none' };
  requests = 0;
  percent = 100;
  readonly salt = randomBytes(6).toString('hex');
  private readonly listener: SimListener;
  private readonly now: () => number;

  constructor(private readonly opts: WhatsminerV3SimOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.power = new PowerModel({
      miningW: opts.powerLimitW ?? 3500,
      sleepW: opts.sleepW ?? 15,
      hashrateThs: opts.hashrateThs ?? 200,
      sleepDelayMs: opts.sleepDelayMs ?? 5000,
      wakeRampMs: opts.wakeRampMs ?? 30_000,
      now: this.now,
    });
    this.listener = new SimListener(net.createServer((s) => this.onConnection(s)));
  }

  listen(): Promise<{ host: string; port: number }> {
    return this.listener.listen(this.opts.host ?? '127.0.0.1', this.opts.port ?? 0);
  }

  get port(): number {
    return this.listener.port;
  }

  close(): Promise<void> {
    return this.listener.close();
  }

  setFault(f: Fault): void {
    this.fault = f;
  }

  get stopped(): boolean {
    return this.power.target === 'sleeping';
  }

  powerW(at = this.now()): number {
    return this.power.powerW(at);
  }

  hashrateThs(at = this.now()): number {
    return this.power.hashrateThs(at);
  }

  private onConnection(s: net.Socket): void {
    this.listener.track(s);
    s.on('error', () => s.destroy());
    const fault = this.fault;
    if (fault.kind === 'reset') {
      s.resetAndDestroy();
      return;
    }
    const reader = new FrameReader(64 * 1024, 'sim');
    // the device serves several requests on one connection
    s.on('data', (chunk: Buffer) => {
      let body: Buffer | undefined;
      try {
        body = reader.push(chunk);
      } catch {
        s.destroy();
        return;
      }
      if (!body) return;
      this.requests++;
      let req: unknown;
      try {
        req = JSON.parse(body.toString('utf8'));
      } catch {
        req = undefined;
      }
      this.answer(s, req, fault);
      Object.assign(reader, new FrameReader(64 * 1024, 'sim'));
    });
  }

  private answer(s: net.Socket, req: unknown, fault: Fault): void {
    switch (fault.kind) {
      case 'silent':
        return;
      case 'garbage':
        s.end(Buffer.from('\x07\xffnot a frame {{{', 'latin1'));
        return;
      case 'flood': {
        const h = Buffer.alloc(4);
        h.writeUInt32LE(fault.bytes, 0);
        s.write(h);
        flood(s, fault.bytes);
        return;
      }
      case 'reset':
      case 'none':
      case 'slow':
      case 'truncate':
        break;
    }
    const frame = encodeFrame(this.handle(req));
    if (fault.kind === 'truncate') {
      s.end(frame.subarray(0, Math.max(5, Math.floor(frame.length / 2))));
      return;
    }
    if (fault.kind === 'slow') {
      const t = setTimeout(() => {
        if (!s.destroyed) s.write(frame);
      }, fault.delayMs);
      s.once('close', () => clearTimeout(t));
      return;
    }
    s.write(frame);
  }

  private reply(code: number, msg: unknown, desc: string): Record<string, unknown> {
    return { code, when: Math.floor(this.now() / 1000), msg, desc };
  }

  /** Answers one decoded request (exposed so tests can observe or replace it). */
  handle(req: unknown): Record<string, unknown> {
    if (!req || typeof req !== 'object') return this.reply(-3, 'invalid json', '');
    const r = req as Record<string, unknown>;
    const cmd = typeof r.cmd === 'string' ? r.cmd : '';
    if (cmd.startsWith('set.')) {
      const denied = this.checkWrite(cmd, r);
      if (denied) return denied;
    }
    const now = this.now();
    switch (cmd) {
      case 'get.device.info':
        if (r.param === 'salt') return this.reply(0, { salt: this.salt }, cmd);
        return this.reply(
          0,
          {
            network: { hostname: 'WhatsMiner' },
            miner: { type: this.opts.model ?? 'M60S', 'power-limit-set': String(this.power.opts.miningW) },
            system: { api: '3.0.1', fwversion: '20250214.16.REL' },
            salt: this.salt,
          },
          cmd,
        );
      case 'get.miner.status': {
        const lvl = this.power.level(now);
        const t = Math.round((35 + 35 * lvl) * 10) / 10;
        const fan = this.stopped && lvl === 0 ? 0 : Math.round(2000 + 4000 * lvl);
        return this.reply(
          0,
          {
            summary: {
              elapsed: 3600,
              'hash-realtime': this.hashrateThs(now),
              'hash-1min': this.hashrateThs(now),
              'factory-hash': this.power.opts.hashrateThs,
              'power-realtime': this.powerW(now),
              'power-limit': this.power.opts.miningW,
              'environment-temperature': 24,
              'board-temperature': [t, t + 1, t - 1],
              'chip-temp-max': t + 12,
              'fan-speed-in': fan,
              'fan-speed-out': fan,
            },
          },
          cmd,
        );
      }
      case 'set.miner.service': {
        const p = r.param;
        if (p !== 'stop' && p !== 'start' && p !== 'restart') return this.reply(-1, 'invalid param', cmd);
        this.actions.push(`service ${p}`);
        if (p === 'stop' && !this.behaviour.ignoreCurtail) this.power.set('sleeping');
        if (p === 'start') this.power.set('mining');
        return this.reply(0, 'ok', cmd);
      }
      case 'set.miner.power_percent': {
        let p: unknown = r.param;
        if (typeof p === 'string') {
          try {
            p = JSON.parse(p);
          } catch {
            return this.reply(-1, 'invalid param', cmd);
          }
        }
        const pct = Number((p as { percent?: unknown } | null)?.percent);
        if (!Number.isInteger(pct) || pct < 0 || pct > 100) return this.reply(-1, 'invalid power percent', cmd);
        this.actions.push(`power_percent ${pct}`);
        this.percent = pct;
        this.power.setPowerTarget(pct >= 100 ? null : (this.power.opts.miningW * pct) / 100);
        return this.reply(0, 'ok', cmd);
      }
      case 'set.miner.power_limit':
        this.actions.push(`power_limit ${JSON.stringify(r.param)}`);
        return this.reply(0, 'ok', cmd);
      default:
        return this.reply(-2, 'invalid command', cmd);
    }
  }

  private checkWrite(cmd: string, r: Record<string, unknown>): Record<string, unknown> | undefined {
    const account = this.opts.account ?? 'super';
    const ts = typeof r.ts === 'number' ? r.ts : Number.NaN;
    if (this.behaviour.writesDisabled) return this.reply(-4, 'access denied', cmd);
    if (r.account !== account || typeof r.token !== 'string') return this.reply(-4, 'invalid account or token', cmd);
    if (!Number.isFinite(ts) || Math.abs(ts - Math.floor(this.now() / 1000)) > (this.opts.maxSkewS ?? 300)) return this.reply(-4, 'invalid timestamp', cmd);
    if (r.token !== v3Token(cmd, this.opts.password ?? 'super', this.salt, ts)) return this.reply(-4, 'invalid token', cmd);
    return undefined;
  }
}
