/**
 * LuxOS personality of the cgminer-family simulator. Speaks the LuxOS API as
 * documented by Luxor (see drivers/luxos/README.md for sources): one session
 * at a time (`logon` -> SessionID, Code 316; a second logon -> Code 402
 * "Another session is active"), sessions expire after `sessionIdleMs` idle,
 * `curtail <sid>,sleep|wakeup` (Code 335), power profiles (`profiles`,
 * `profileset <sid>,<profile>` Code 321: the power model follows the
 * profile's watts and hashrate), and telemetry that follows the shared
 * power model.
 */
import { randomBytes } from 'node:crypto';
import { CgminerServer, statusSection, type CgminerRequest, type Fault } from './cgminer-server.js';
import { PowerModel, type PowerModelOptions } from './power-model.js';

export interface LuxosSimProfile {
  name: string;
  watts: number;
  hashrateThs: number;
}

export interface LuxosSimOptions extends Partial<Omit<PowerModelOptions, 'now'>> {
  host?: string;
  port?: number;
  /** Idle expiry of the single session (LuxOS: 60 s). */
  sessionIdleMs?: number;
  boards?: number;
  fans?: number;
  model?: string;
  /** Power profiles; the default ones are derived from miningW/hashrateThs ("default" is the full one). */
  profiles?: LuxosSimProfile[];
  /** The profile active at start (default "default"). */
  profile?: string;
  now?: () => number;
}

export interface LuxosBehaviour {
  /** logon answers "access denied" (code 45), as when the API refuses writes. */
  refuseLogon: boolean;
  /** Curtail commands are acknowledged but ignored (a miner that keeps hashing). */
  ignoreCurtail: boolean;
}

const DESC = 'LUXminer 2024.11.1-sim';

export class LuxosSim {
  readonly server: CgminerServer;
  readonly power: PowerModel;
  readonly behaviour: LuxosBehaviour = { refuseLogon: false, ignoreCurtail: false };
  private session: { id: string; lastUsed: number } | undefined;
  private readonly now: () => number;
  private readonly idleMs: number;
  /** Log of privileged commands received, for tests. */
  readonly actions: string[] = [];
  readonly profiles: LuxosSimProfile[];
  private profileName: string;

  constructor(private readonly opts: LuxosSimOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.idleMs = opts.sessionIdleMs ?? 60_000;
    this.power = new PowerModel({
      miningW: opts.miningW ?? 3250,
      sleepW: opts.sleepW ?? 25,
      hashrateThs: opts.hashrateThs ?? 110,
      sleepDelayMs: opts.sleepDelayMs ?? 4000,
      wakeRampMs: opts.wakeRampMs ?? 8000,
      now: this.now,
    });
    const w = this.power.opts.miningW;
    const h = this.power.opts.hashrateThs;
    const scaled = (name: string, fw: number, fh: number) => ({ name, watts: Math.round(w * fw), hashrateThs: Math.round(h * fh * 10) / 10 });
    this.profiles = opts.profiles ?? [scaled('385MHz', 0.82, 0.86), scaled('410MHz', 0.91, 0.93), scaled('default', 1, 1), scaled('460MHz', 1.09, 1.07)];
    this.profileName = opts.profile ?? 'default';
    this.applyProfile(this.profileName);
    this.server = new CgminerServer({
      ...(opts.host !== undefined ? { host: opts.host } : {}),
      ...(opts.port !== undefined ? { port: opts.port } : {}),
      handler: (req) => this.handle(req),
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

  /** Another client (say, a fleet tool) opens the single session. */
  takeSessionElsewhere(): string {
    const id = this.newSessionId();
    this.session = { id, lastUsed: this.now() };
    return id;
  }

  get activeSession(): string | undefined {
    this.expireSession();
    return this.session?.id;
  }

  /** The active profile's name. */
  get profile(): string {
    return this.profileName;
  }

  private applyProfile(name: string): boolean {
    const prof = this.profiles.find((x) => x.name === name);
    if (!prof) return false;
    this.profileName = prof.name;
    // the shared model's full-power level follows the profile
    this.power.opts.miningW = prof.watts;
    this.power.opts.hashrateThs = prof.hashrateThs;
    return true;
  }

  get sleeping(): boolean {
    return this.power.target === 'sleeping';
  }

  private newSessionId(): string {
    return randomBytes(6).toString('base64url').slice(0, 8);
  }

  private expireSession(): void {
    if (this.session && this.now() - this.session.lastUsed > this.idleMs) this.session = undefined;
  }

  private ok(code: number, msg: string, sections: Record<string, unknown> = {}): Record<string, unknown> {
    return { STATUS: statusSection('S', code, msg, DESC), ...sections, id: 1 };
  }

  private err(code: number, msg: string): Record<string, unknown> {
    return { STATUS: statusSection('E', code, msg, DESC), id: 1 };
  }

  /** Validates the session id that LuxOS expects as the first parameter field. */
  private checkSession(param: string | undefined): { args: string[] } | { error: Record<string, unknown> } {
    this.expireSession();
    const parts = (param ?? '').split(',');
    const sid = parts[0] ?? '';
    if (!this.session || sid !== this.session.id) {
      return { error: this.err(400, sid ? `Invalid session id: ${sid}` : 'Missing session id') };
    }
    this.session.lastUsed = this.now();
    return { args: parts.slice(1) };
  }

  handle(req: CgminerRequest): unknown {
    const now = this.now();
    const p = this.power;
    switch (req.command) {
      case 'version':
        return this.ok(22, 'LUXminer versions', {
          VERSION: [{ API: '3.7', LUXminer: '2024.11.1-sim', Miner: 'sim', Type: this.opts.model ?? 'Antminer S21' }],
        });
      case 'devdetails': {
        const boards = this.opts.boards ?? 3;
        return this.ok(69, 'Device Details', {
          DEVDETAILS: Array.from({ length: boards }, (_, i) => ({
            DEVDETAILS: i,
            Name: 'ASC',
            ID: i,
            Driver: 'LUXminer',
            Kernel: '',
            Model: this.opts.model ?? 'Antminer S21',
            'Device Path': '',
          })),
        });
      }
      case 'profiles':
        return this.ok(327, 'Profiles', {
          PROFILES: this.profiles.map((x) => ({
            CanRestore: false,
            Frequency: Number.parseInt(x.name, 10) || 435,
            HasOverrides: false,
            Hashrate: x.hashrateThs,
            IsDynamic: true,
            IsTuned: false,
            'Profile Name': x.name,
            Step: x.name === 'default' ? '0' : '',
            Voltage: 13.6,
            Watts: x.watts,
          })),
        });
      case 'profileset': {
        const c = this.checkSession(req.parameter);
        if ('error' in c) return c.error;
        // "<sid>,<profile>" or the legacy "<sid>,<board>,<profile>"
        const name = c.args.length >= 2 ? c.args[1] : c.args[0];
        if (!name || !this.applyProfile(name)) return this.err(14, `Invalid profile: ${name ?? '(none)'}`);
        this.actions.push(`profileset ${name}`);
        return this.ok(321, 'Profile Set', {
          PROFILE: [{ Board: 0, FrequencyStep: 5, Profile: name, VoltageStep: 0.05 }],
        });
      }
      case 'summary': {
        const ghs = p.hashrateThs(now) * 1000;
        return this.ok(11, 'Summary', {
          SUMMARY: [
            {
              Elapsed: 3600,
              'GHS 5s': ghs,
              'GHS av': ghs,
              'GHS 1m': ghs,
              Accepted: 1000,
              Rejected: 2,
              'Hardware Errors': 0,
            },
          ],
        });
      }
      case 'stats': {
        const boards = this.opts.boards ?? 3;
        const detail: Record<string, unknown> = {
          Elapsed: 3600,
          total_rateideal: p.opts.hashrateThs * 1000,
          rate_unit: 'GH',
        };
        for (let i = 1; i <= boards; i++) {
          detail[`chain_rate${i}`] = (p.hashrateThs(now) * 1000) / boards;
          detail[`chain_acn${i}`] = 108;
          detail[`temp${i}`] = this.boardTemp(now) + 10;
          detail[`temp2_${i}`] = this.boardTemp(now);
        }
        return this.ok(70, 'CGMiner stats', { STATS: [{ STATS: 0, ID: 'LUXMINER0' }, detail] });
      }
      case 'power':
        return this.ok(30, 'Power', { POWER: [{ PSU: true, Watts: p.powerW(now) }] });
      case 'temps': {
        const t = this.boardTemp(now);
        const boards = this.opts.boards ?? 3;
        const TEMPS = Array.from({ length: boards }, (_, i) => ({
          ID: i,
          TEMP: t,
          TopLeft: t - 2,
          TopRight: t + 1,
          BottomLeft: t - 3,
          BottomRight: t,
        }));
        return this.ok(201, `${boards} Temp(s)`, { TEMPS });
      }
      case 'fans': {
        const n = this.opts.fans ?? 4;
        const speed = p.target === 'sleeping' && p.level(now) === 0 ? 20 : 30 + Math.round(40 * p.level(now));
        const FANS = Array.from({ length: n }, (_, i) => ({ FAN: `J${i + 12}`, ID: i, RPM: speed * 80, Speed: speed }));
        return this.ok(202, `${n} Fan(s)`, { FANS, FANCTRL: [{ MinFans: 1, PowerOffSpeed: 20 }] });
      }
      case 'config':
        return this.ok(33, 'LUXminer config', {
          CONFIG: [
            {
              CurtailMode: p.target === 'sleeping' ? 'Sleep' : 'None',
              IsPowerSupplyOn: !(p.target === 'sleeping' && p.level(now) === 0),
              Model: this.opts.model ?? 'Antminer S21',
              OS: 'LuxOS',
              NameplateTHS: p.opts.hashrateThs,
              Profile: this.profileName,
              SystemStatus: 'Normal',
            },
          ],
        });
      case 'logon':
        this.expireSession();
        if (this.behaviour.refuseLogon) return this.err(45, 'Access denied');
        if (this.session) return this.err(402, 'Another session is active');
        this.session = { id: this.newSessionId(), lastUsed: now };
        return this.ok(316, 'Session created', { SESSION: [{ SessionID: this.session.id }] });
      case 'session':
        this.expireSession();
        return this.ok(319, 'Session information', { SESSION: [{ SessionID: this.session?.id ?? '' }] });
      case 'logoff': {
        const c = this.checkSession(req.parameter);
        if ('error' in c) return c.error;
        this.session = undefined;
        return this.ok(317, 'Session dropped');
      }
      case 'kill':
        this.session = undefined;
        return this.ok(318, 'Session killed');
      case 'curtail': {
        const c = this.checkSession(req.parameter);
        if ('error' in c) return c.error;
        const action = c.args[0];
        if (action !== 'sleep' && action !== 'wakeup') {
          return this.err(14, `Invalid curtail action: ${action ?? '(none)'}`);
        }
        this.actions.push(`curtail ${action}`);
        if (!this.behaviour.ignoreCurtail) p.set(action === 'sleep' ? 'sleeping' : 'mining');
        return this.ok(335, 'Curtailment command sent', {
          CURTAIL: [{ Action: action === 'sleep' ? 'sleep mode' : 'wake up' }],
        });
      }
      default:
        return this.err(14, 'Invalid command');
    }
  }

  private boardTemp(now: number): number {
    return Math.round(35 + 35 * this.power.level(now));
  }
}
