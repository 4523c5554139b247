/**
 * LuxOS driver: telemetry from summary/stats/power/temps/fans/config over
 * the cgminer-family API; curtail = `curtail <sid>,sleep`, restore =
 * `curtail <sid>,wakeup`, profiles = `profiles` / `profileset <sid>,<name>`,
 * each action confirmed by read-back.
 */
import type {
  ActionOptions,
  ActionResult,
  ArmedAction,
  Capabilities,
  DeviceDriver,
  DeviceState,
  DriverContext,
  Profile,
  Reading,
} from '../contract.js';
import { CgminerClient, cgminerEndpoint, type CgminerReply } from '../lib/cgminer/client.js';
import { maxOf, mean, num, sectionItems, str } from '../lib/cgminer/fields.js';
import { actAndConfirm, type InFlightSend } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { ReadingTracker, type Sample } from '../lib/reading.js';
import type { LuxosConfig } from './schema.js';
import { LuxosSession } from './session.js';

const TELEMETRY = ['summary', 'stats', 'power', 'temps', 'fans', 'config'] as const;

export class LuxosDriver implements DeviceDriver {
  readonly kind = 'asic' as const;
  readonly driverId = 'luxos';
  readonly capabilities: Capabilities = { curtail: true, restore: true, powerTarget: null, profiles: true, switchOutlet: false };
  readonly id: string;
  private readonly client: CgminerClient;
  private readonly session: LuxosSession;
  private readonly tracker = new ReadingTracker();

  constructor(
    private readonly cfg: LuxosConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    this.client = new CgminerClient(cgminerEndpoint(cfg));
    this.session = new LuxosSession(this.client, ctx.now, cfg.timeouts.connectMs + cfg.timeouts.readMs, (err) =>
      ctx.logger.debug({ err: err.toJSON() }, 'session warm-up failed'),
    );
  }

  /** The LuxOS session id held now, if any (diagnostics and tests). */
  get sessionId(): string | undefined {
    return this.session.current;
  }

  /** Nothing to open: the API is one connection per request. A miner that is down now is simply unreachable. */
  start(): Promise<void> {
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    try {
      await withDeadline(`${this.id} logoff`, this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs, (s) =>
        this.session.close(s),
      );
    } catch (err) {
      this.ctx.logger.debug({ err: toRackpilotError(err).toJSON() }, 'logoff failed');
    }
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const replies = await withDeadline(
        `${this.id} read`,
        opts.deadlineMs,
        (signal) => this.client.multi(TELEMETRY, signal),
        opts.signal,
      );
      const reading = this.tracker.ok(this.toSample(replies));
      // the miner answers: make sure the next action finds a live session (runs in the background)
      if (this.cfg.keepSessionWarm) this.session.warm();
      return reading;
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  private toSample(r: Record<string, CgminerReply>): Sample {
    const summary = sectionItems(r.summary, 'SUMMARY')[0];
    const power = sectionItems(r.power, 'POWER')[0];
    const config = sectionItems(r.config, 'CONFIG')[0];
    const stats = sectionItems(r.stats, 'STATS')[1];
    const temps = sectionItems(r.temps, 'TEMPS');
    const fans = sectionItems(r.fans, 'FANS');
    const ghs = num(summary, 'GHS 5s', 'GHS 1m', 'GHS av');
    const hashrateThs = ghs === undefined ? null : Math.round(ghs) / 1000;
    const powerW = num(power, 'Watts') ?? null;
    const curtailMode = str(config, 'CurtailMode') ?? null;
    const boardTemps = temps.map((t) => maxOf([num(t, 'TopLeft'), num(t, 'TopRight'), num(t, 'BottomLeft'), num(t, 'BottomRight'), num(t, 'Board'), num(t, 'TEMP')]));
    const ideal = num(stats, 'total_rateideal');
    return {
      ts: this.ctx.now(),
      state: this.stateOf(curtailMode, hashrateThs, powerW),
      powerW,
      fields: {
        hashrateThs,
        nominalHashrateThs: ideal === undefined ? null : Math.round(ideal) / 1000,
        temperatureC: maxOf(boardTemps) ?? null,
        fanRpm: (() => {
          const m = mean(fans.map((f) => num(f, 'RPM')));
          return m === undefined ? null : Math.round(m);
        })(),
        curtailMode,
        profile: str(config, 'Profile') ?? null,
      },
    };
  }

  private stateOf(curtailMode: string | null, hashrateThs: number | null, powerW: number | null): DeviceState {
    const hashing = hashrateThs !== null && hashrateThs > 0;
    if (curtailMode !== null && curtailMode !== 'None') {
      const asleep = !hashing && powerW !== null && powerW <= this.cfg.sleepPowerMaxW;
      return asleep ? 'curtailed' : 'transitioning';
    }
    if (curtailMode === 'None') return hashing ? 'running' : 'transitioning';
    return hashing ? 'running' : 'unknown';
  }

  curtail(opts: ActionOptions): Promise<ActionResult> {
    return this.act('sleep', 'curtailed', opts);
  }

  restore(opts: ActionOptions): Promise<ActionResult> {
    return this.act('wakeup', 'running', opts);
  }

  /**
   * `curtail <sid>,sleep` encoded with the session held now; fire() opens the
   * connection and queues the bytes, nothing else. A session that ended
   * meanwhile answers an error, which gets the plain path's one fresh logon.
   */
  armCurtail(): ArmedAction | undefined {
    const sid = this.session.usable();
    if (sid === undefined) return undefined;
    const bytes = this.client.encode('curtail', `${sid},sleep`);
    return {
      fire: () => {
        if (this.session.usable() !== sid) return undefined;
        const ex = this.client.start(bytes);
        let answer: CgminerReply | undefined;
        const sent = { sid, reply: async (signal?: AbortSignal) => (answer = this.client.parse(await ex.result(signal), 'curtail')) };
        return {
          // an exchange nobody waited for (the action ended before its wait) is dropped, not left open
          complete: (opts) =>
            this.act('sleep', 'curtailed', opts, {
              sentAt: ex.sentAt,
              wait: async (signal) => {
                const reply = await this.session.run('curtail', 'sleep', signal, sent);
                // acknowledged by the prepared send itself, not by a retry after a fresh logon
                return reply === answer ? ex.endedAt : undefined;
              },
            }).finally(() => ex.cancel()),
        };
      },
    };
  }

  /** Sends the curtail command (or waits for the one in flight), then polls read-back until the wanted state or the deadline. */
  private act(action: 'sleep' | 'wakeup', want: DeviceState, opts: ActionOptions, inFlight?: InFlightSend): Promise<ActionResult> {
    return actAndConfirm(
      {
        deviceId: this.id,
        what: `curtail ${action}`,
        want: `state "${want}"`,
        ...(inFlight ? { inFlight } : {}),
        send: async (signal) => {
          await this.session.run('curtail', action, signal);
        },
        read: (o) => this.read(o),
        confirmed: (r) => r.state === want,
        readDeadlineMs: this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs,
        pollMs: this.cfg.confirmPollMs,
        now: this.ctx.now,
      },
      opts,
    );
  }

  /** The profiles the miner offers (`profiles`, no session needed). */
  async listProfiles(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Profile[]> {
    const reply = await withDeadline(
      `${this.id} profiles`,
      opts.deadlineMs,
      (signal) => this.client.command('profiles', undefined, signal),
      opts.signal,
    );
    const out: Profile[] = [];
    for (const p of sectionItems(reply, 'PROFILES')) {
      const name = str(p, 'Profile Name');
      if (!name) continue;
      const watts = num(p, 'Watts');
      const ths = num(p, 'Hashrate');
      out.push({ name, ...(watts !== undefined ? { powerW: watts } : {}), ...(ths !== undefined ? { hashrateThs: ths } : {}) });
    }
    return out;
  }

  /** `profileset <sid>,<name>` (Code 321), confirmed when `config` reports `Profile == name`. */
  setProfile(name: string, opts: ActionOptions): Promise<ActionResult> {
    // the name travels inside a comma-separated parameter: refuse anything that could add fields
    // eslint-disable-next-line no-control-regex
    if (!/^[^,\x00-\x1f]{1,64}$/.test(name)) {
      return Promise.reject(
        new RackpilotError('CONFIG_INVALID', `${this.id}: profile name ${JSON.stringify(name.slice(0, 64))} is not valid (1-64 characters, no commas)`, {
          device: this.id,
        }),
      );
    }
    return actAndConfirm(
      {
        deviceId: this.id,
        what: `profileset ${name}`,
        want: `profile "${name}"`,
        send: async (signal) => {
          await this.session.run('profileset', name, signal);
        },
        read: (o) => this.read(o),
        confirmed: (r) => r.fields.profile === name,
        readDeadlineMs: this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs,
        pollMs: this.cfg.confirmPollMs,
        now: this.ctx.now,
      },
      opts,
    );
  }
}
