/**
 * Braiins OS+ personality: a real gRPC server (@grpc/grpc-js, plaintext
 * HTTP/2) speaking the `braiins.bos.v1` API subset of drivers/braiins/proto,
 * behind a TCP front that injects transport faults, plus the legacy BOSminer
 * TCP API on a CgminerServer. Tokens come from `Login` (in the reply and in
 * the `authorization` response header), expire after `tokenIdleMs` idle and
 * are renewed by each call; a wrong password or token is UNAUTHENTICATED, a
 * write while `writesDenied` is PERMISSION_DENIED. Power follows PowerModel.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { braiinsPackage, type ServiceName } from '../../drivers/braiins/proto.js';
import { SimListener } from './listen.js';
import { CgminerServer, statusSection, type CgminerRequest, type Fault } from './cgminer-server.js';
import { PowerModel, type PowerModelOptions } from './power-model.js';

export interface BraiinsSimOptions extends Partial<Omit<PowerModelOptions, 'now'>> {
  host?: string;
  /** gRPC port (default ephemeral). */
  port?: number;
  /** Legacy TCP API port (default ephemeral). */
  legacyPort?: number;
  username?: string;
  password?: string;
  /** Idle expiry of a token (Braiins: 3600 s). */
  tokenIdleMs?: number;
  /** Tuner power-target range and default. */
  minPowerW?: number;
  maxPowerW?: number;
  /** Older firmware (API < 1.1.0) sends the token only as the `authorization` header. */
  tokenInBody?: boolean;
  /** What `version` on the legacy API calls the miner software. */
  legacyFlavor?: 'boser' | 'bosminer';
  model?: string;
  now?: () => number;
}

export interface BraiinsBehaviour {
  /** Every Login is refused (UNAUTHENTICATED), as with a changed password. */
  refuseAuth: boolean;
  /** Writes (pause, resume, power target, quick ramping) answer PERMISSION_DENIED. */
  writesDenied: boolean;
  /** Pause/resume are acknowledged but change nothing. */
  ignoreCurtail: boolean;
}

type Unary = (call: grpc.ServerUnaryCall<Record<string, unknown>, object>, cb: grpc.sendUnaryData<object>) => void;

const GARBAGE = Buffer.from('HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\nnot grpc!\r\n', 'latin1');

export class BraiinsSim {
  readonly power: PowerModel;
  readonly legacy: CgminerServer;
  readonly behaviour: BraiinsBehaviour = { refuseAuth: false, writesDenied: false, ignoreCurtail: false };
  /** Writes received, for assertions: e.g. "PauseMining", "SetPowerTarget 2500". */
  readonly actions: string[] = [];
  /** Every RPC received (method name), including refused ones. */
  readonly calls: string[] = [];
  logins = 0;
  quickRamping: { upS: number; downS: number } | undefined;
  private fault: Fault = { kind: 'none' };
  private readonly grpcServer = new grpc.Server();
  private readonly front: SimListener;
  private readonly conns = new Set<{ client: net.Socket; upstream?: net.Socket }>();
  private acceptedCount = 0;
  private innerPort = 0;
  private readonly tokens = new Map<string, number>();
  private paused = false;
  private readonly now: () => number;
  private readonly o: Required<Pick<BraiinsSimOptions, 'username' | 'password' | 'tokenIdleMs' | 'minPowerW' | 'maxPowerW'>>;

  constructor(private readonly opts: BraiinsSimOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.o = {
      username: opts.username ?? 'root',
      password: opts.password ?? 'secret',
      tokenIdleMs: opts.tokenIdleMs ?? 3_600_000,
      minPowerW: opts.minPowerW ?? 1100,
      maxPowerW: opts.maxPowerW ?? opts.miningW ?? 3500,
    };
    this.power = new PowerModel({
      miningW: opts.miningW ?? 3500,
      sleepW: opts.sleepW ?? 30,
      hashrateThs: opts.hashrateThs ?? 200,
      sleepDelayMs: opts.sleepDelayMs ?? 3000,
      wakeRampMs: opts.wakeRampMs ?? 6000,
      now: this.now,
    });
    this.power.setPowerTarget(this.o.maxPowerW);
    this.addServices();
    this.front = new SimListener(net.createServer((s) => this.onConnection(s)));
    this.legacy = new CgminerServer({
      ...(opts.host !== undefined ? { host: opts.host } : {}),
      ...(opts.legacyPort !== undefined ? { port: opts.legacyPort } : {}),
      handler: (req) => this.handleLegacy(req),
    });
  }

  async listen(): Promise<{ host: string; port: number; legacyPort: number }> {
    this.innerPort = await new Promise<number>((resolve, reject) => {
      this.grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
    });
    const { host, port } = await this.front.listen(this.opts.host ?? '127.0.0.1', this.opts.port ?? 0);
    const legacy = await this.legacy.listen();
    return { host, port, legacyPort: legacy.port };
  }

  get port(): number {
    return this.front.port;
  }

  /** TCP connections accepted on the gRPC port so far. */
  get accepted(): number {
    return this.acceptedCount;
  }

  async close(): Promise<void> {
    for (const c of this.conns) this.drop(c, false);
    await this.front.close();
    this.grpcServer.forceShutdown();
    await this.legacy.close();
  }

  /**
   * Transport fault on the gRPC port. `silent` stalls open connections and
   * answers nothing on new ones; `reset`, `garbage` and `truncate` drop open
   * connections (reset: with a TCP RST) and hit new ones; `slow` delays every
   * answer; `flood` makes GetMinerDetails answer `bytes` bytes.
   */
  setFault(f: Fault): void {
    this.fault = f;
    for (const c of [...this.conns]) {
      switch (f.kind) {
        case 'silent':
          c.client.unpipe();
          c.upstream?.unpipe();
          c.client.pause();
          break;
        case 'reset':
        case 'garbage':
        case 'truncate':
          this.drop(c, f.kind === 'reset');
          break;
        case 'none':
        case 'slow':
        case 'flood':
          if (c.client.isPaused()) this.drop(c, false);
          break;
      }
    }
  }

  get sleeping(): boolean {
    return this.paused;
  }

  get powerTargetW(): number | null {
    return this.power.powerTargetW;
  }

  /** Forgets every token, as after a reboot. */
  expireTokens(): void {
    this.tokens.clear();
  }

  private drop(c: { client: net.Socket; upstream?: net.Socket }, rst: boolean): void {
    if (rst) c.client.resetAndDestroy();
    else c.client.destroy();
    c.upstream?.destroy();
    this.conns.delete(c);
  }

  private onConnection(client: net.Socket): void {
    this.acceptedCount++;
    const fault = this.fault;
    const c: { client: net.Socket; upstream?: net.Socket } = { client };
    this.conns.add(c);
    // a proxy must not add Nagle's delay to small gRPC frames (~40 ms per call otherwise)
    client.setNoDelay(true);
    client.on('error', () => client.destroy());
    client.on('close', () => {
      c.upstream?.destroy();
      this.conns.delete(c);
    });
    switch (fault.kind) {
      case 'reset':
        client.resetAndDestroy();
        return;
      case 'silent':
        client.pause();
        return;
      case 'garbage':
        client.end(GARBAGE);
        return;
      case 'none':
      case 'slow':
      case 'flood':
      case 'truncate':
        break;
    }
    const up = net.createConnection({ host: '127.0.0.1', port: this.innerPort });
    up.setNoDelay(true);
    c.upstream = up;
    up.on('error', () => client.destroy());
    up.on('close', () => client.destroy());
    client.pipe(up);
    if (fault.kind === 'truncate') {
      // the server's first bytes (part of its SETTINGS frame), then the connection ends
      up.once('data', (chunk: Buffer) => {
        client.end(chunk.subarray(0, Math.max(1, Math.floor(chunk.length / 2))));
        up.destroy();
      });
      return;
    }
    up.pipe(client);
  }

  // ---- gRPC services ----

  private service(name: ServiceName): grpc.ServiceDefinition {
    return braiinsPackage()[name] as grpc.ServiceDefinition;
  }

  /** Wraps a handler: records the call, applies `slow`, checks the token unless `open`. */
  private rpc(name: string, fn: (req: Record<string, unknown>, call: grpc.ServerUnaryCall<Record<string, unknown>, object>) => object | grpc.StatusObject, kind: 'open' | 'read' | 'write' = 'read'): Unary {
    return (call, cb) => {
      this.calls.push(name);
      const answer = (): void => {
        if (kind !== 'open') {
          const token = call.metadata.get('authorization')[0];
          const last = typeof token === 'string' ? this.tokens.get(token) : undefined;
          if (typeof token !== 'string' || last === undefined || this.now() - last > this.o.tokenIdleMs) {
            if (typeof token === 'string') this.tokens.delete(token);
            cb({ code: grpc.status.UNAUTHENTICATED, details: 'Unauthenticated: missing or expired token' });
            return;
          }
          this.tokens.set(token, this.now());
          if (kind === 'write' && this.behaviour.writesDenied) {
            cb({ code: grpc.status.PERMISSION_DENIED, details: 'Permission denied' });
            return;
          }
        }
        const out = fn(call.request, call);
        if ('code' in out && typeof out.code === 'number' && 'details' in out) cb(out);
        else cb(null, out);
      };
      if (this.fault.kind === 'slow') setTimeout(answer, this.fault.delayMs);
      else answer();
    };
  }

  private addServices(): void {
    const p = this.power;
    this.grpcServer.addService(this.service('braiins.bos.ApiVersionService'), {
      GetApiVersion: this.rpc('GetApiVersion', () => ({ major: 1, minor: 5, patch: 0, pre: '', build: 'sim' }), 'open'),
    });
    this.grpcServer.addService(this.service('braiins.bos.v1.AuthenticationService'), {
      Login: this.rpc(
        'Login',
        (req, call) => {
          if (this.behaviour.refuseAuth || req.username !== this.o.username || req.password !== this.o.password) {
            return { code: grpc.status.UNAUTHENTICATED, details: 'Invalid username or password', metadata: new grpc.Metadata() };
          }
          const token = randomBytes(12).toString('base64url');
          this.tokens.set(token, this.now());
          this.logins++;
          const md = new grpc.Metadata();
          md.set('authorization', token);
          call.sendMetadata(md);
          return this.opts.tokenInBody === false ? {} : { token, timeout_s: Math.round(this.o.tokenIdleMs / 1000) };
        },
        'open',
      ),
    });
    this.grpcServer.addService(this.service('braiins.bos.v1.ActionsService'), {
      PauseMining: this.rpc(
        'PauseMining',
        () => {
          this.actions.push('PauseMining');
          const already = this.paused;
          if (!this.behaviour.ignoreCurtail) {
            this.paused = true;
            p.set('sleeping');
          }
          return { already_paused: already };
        },
        'write',
      ),
      ResumeMining: this.rpc(
        'ResumeMining',
        () => {
          this.actions.push('ResumeMining');
          const already = !this.paused;
          if (!this.behaviour.ignoreCurtail) {
            this.paused = false;
            p.set('mining');
          }
          return { already_mining: already };
        },
        'write',
      ),
    });
    this.grpcServer.addService(this.service('braiins.bos.v1.MinerService'), {
      GetMinerDetails: this.rpc('GetMinerDetails', () => ({
        uid: 'sim-uid',
        miner_identity: { name: this.opts.model ?? 'Antminer S21', miner_model: this.opts.model ?? 'Antminer S21' },
        bos_version: { current: '24.09-sim', major: '24.09', bos_plus: true },
        hostname: this.fault.kind === 'flood' ? 'x'.repeat(this.fault.bytes) : 'sim-miner',
        sticker_hashrate: { gigahash_per_second: p.opts.hashrateThs * 1000 },
        bosminer_uptime_s: 3600,
        status: this.paused ? 'MINER_STATUS_PAUSED' : 'MINER_STATUS_NORMAL',
      })),
      GetMinerStats: this.rpc('GetMinerStats', () => {
        const ghs = { gigahash_per_second: p.hashrateThs() * 1000 };
        return {
          miner_stats: {
            real_hashrate: { last_5s: ghs, last_15s: ghs, last_30s: ghs, last_1m: ghs },
            nominal_hashrate: { gigahash_per_second: p.opts.hashrateThs * 1000 },
          },
          power_stats: { approximated_consumption: { watt: p.powerW() } },
        };
      }),
    });
    this.grpcServer.addService(this.service('braiins.bos.v1.CoolingService'), {
      GetCoolingState: this.rpc('GetCoolingState', () => ({
        fans: [0, 1, 2, 3].map((i) => ({ position: i, rpm: this.fanRpm(), target_speed_ratio: this.fanRpm() / 6000 })),
        highest_temperature: { id: 1, location: 'SENSOR_LOCATION_CHIP', temperature: { degree_c: this.chipTemp() } },
      })),
    });
    this.grpcServer.addService(this.service('braiins.bos.v1.PerformanceService'), {
      GetTunerState: this.rpc('GetTunerState', () => ({
        overall_tuner_state: 'TUNER_STATE_STABLE',
        power_target_mode_state: { current_target: { watt: p.powerTargetW ?? p.opts.miningW } },
      })),
      SetPowerTarget: this.rpc(
        'SetPowerTarget',
        (req) => {
          const w = (req.power_target as { watt?: number } | undefined)?.watt ?? 0;
          if (w < this.o.minPowerW || w > this.o.maxPowerW) {
            return { code: grpc.status.INVALID_ARGUMENT, details: `power target ${w} W out of range`, metadata: new grpc.Metadata() };
          }
          this.actions.push(`SetPowerTarget ${w}`);
          p.setPowerTarget(w);
          return { power_target: { watt: w } };
        },
        'write',
      ),
      SetQuickRamping: this.rpc(
        'SetQuickRamping',
        (req) => {
          this.quickRamping = { upS: Number(req.up_s ?? 0), downS: Number(req.down_s ?? 0) };
          this.actions.push(`SetQuickRamping ${this.quickRamping.upS}/${this.quickRamping.downS}`);
          return { up_s: this.quickRamping.upS, down_s: this.quickRamping.downS };
        },
        'write',
      ),
    });
    this.grpcServer.addService(this.service('braiins.bos.v1.ConfigurationService'), {
      GetConstraints: this.rpc('GetConstraints', () => ({
        tuner_constraints: {
          power_target: { default: { watt: this.o.maxPowerW }, min: { watt: this.o.minPowerW }, max: { watt: this.o.maxPowerW } },
        },
        hashboards_constraints: { hashboard_ids: ['1', '2', '3'], quick_ramping_time_s: { default: 0, min: 0, max: 600 } },
      })),
    });
  }

  private fanRpm(): number {
    return this.power.level() === 0 ? 0 : Math.round(1500 + 3500 * this.power.level());
  }

  private chipTemp(): number {
    return Math.round(35 + 40 * this.power.level());
  }

  // ---- legacy TCP API (BOSminer) ----

  private handleLegacy(req: CgminerRequest): unknown {
    const p = this.power;
    const flavor = this.opts.legacyFlavor ?? 'boser';
    const desc = flavor === 'boser' ? 'BOSer boser-buildroot 0.1.0-sim' : 'BOSminer bosminer-plus-tuner 0.9.0-sim';
    const ok = (code: number, msg: string, sections: Record<string, unknown>) => ({ STATUS: statusSection('S', code, msg, desc), ...sections, id: 1 });
    const mhs = p.hashrateThs() * 1e6;
    switch (req.command) {
      case 'version':
        return ok(22, `${flavor === 'boser' ? 'BOSer' : 'BOSminer'} versions`, {
          VERSION: [flavor === 'boser' ? { API: '3.7', BOSer: 'boser-buildroot 0.1.0-sim' } : { API: '3.7', BOSminer: 'bosminer-plus-tuner 0.9.0-sim' }],
        });
      case 'devdetails':
        return ok(69, 'Device Details', {
          DEVDETAILS: [1, 2, 3].map((i) => ({ DEVDETAILS: i - 1, Name: 'Hashboard', ID: i, Driver: 'bitmain', Model: this.opts.model ?? 'Antminer S21', Chips: 108 })),
        });
      case 'summary':
        return ok(11, 'Summary', { SUMMARY: [{ Elapsed: 3600, 'MHS 5s': mhs, 'MHS 1m': mhs, 'MHS av': mhs, Accepted: 100, Rejected: 1 }] });
      case 'devs':
        return ok(9, '3 ASC(s)', { DEVS: [1, 2, 3].map((i) => ({ ASC: i - 1, ID: i, Enabled: 'Y', Status: 'Alive', 'MHS 5s': mhs / 3 })) });
      case 'temps':
        return ok(201, '3 Temp(s)', { TEMPS: [1, 2, 3].map((i) => ({ TEMPS: i - 1, ID: i, Board: this.chipTemp() - 15, Chip: this.chipTemp() })) });
      case 'fans':
        return ok(202, '4 Fan(s)', { FANS: [0, 1, 2, 3].map((i) => ({ FANS: i, ID: i, RPM: this.fanRpm(), Speed: Math.round(this.fanRpm() / 60) })) });
      case 'tunerstatus':
        return ok(203, 'Tuner Status', {
          TUNERSTATUS: [
            {
              PowerLimit: p.powerTargetW ?? p.opts.miningW,
              ApproximateMinerPowerConsumption: p.powerW(),
              ApproximateChainPowerConsumption: Math.max(0, p.powerW() - 30),
              TunerChainStatus: [],
            },
          ],
        });
      default:
        return { STATUS: statusSection('E', 14, 'Invalid command', desc), id: 1 };
    }
  }
}
