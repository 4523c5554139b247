/**
 * LuxOS driver: telemetry from summary/stats/power/temps/fans/config over
 * the cgminer-family API; curtail = `curtail <sid>,sleep`, restore =
 * `curtail <sid>,wakeup`, each confirmed by read-back.
 */
import type { ActionOptions, ActionResult, Capabilities, DeviceDriver, DeviceState, DriverContext, Reading } from '../contract.js';
import { CgminerClient, type CgminerReply } from '../lib/cgminer/client.js';
import { maxOf, mean, num, sectionItems, str } from '../lib/cgminer/fields.js';
import { actAndConfirm } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { toRackpilotError } from '../lib/errors.js';
import { ReadingTracker, type Sample } from '../lib/reading.js';
import type { LuxosConfig } from './schema.js';
import { LuxosSession } from './session.js';

const TELEMETRY = ['summary', 'stats', 'power', 'temps', 'fans', 'config'] as const;

export class LuxosDriver implements DeviceDriver {
  readonly kind = 'asic' as const;
  readonly driverId = 'luxos';
  readonly capabilities: Capabilities = { curtail: true, restore: true, powerTarget: null, profiles: false, switchOutlet: false };
  readonly id: string;
  private readonly client: CgminerClient;
  private readonly session: LuxosSession;
  private readonly tracker = new ReadingTracker();

  constructor(
    private readonly cfg: LuxosConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    this.client = new CgminerClient({
      host: cfg.host,
      port: cfg.port,
      connectTimeoutMs: cfg.timeouts.connectMs,
      readTimeoutMs: cfg.timeouts.readMs,
      maxResponseBytes: cfg.maxResponseBytes,
    });
    this.session = new LuxosSession(this.client, ctx.now);
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
      return this.tracker.ok(this.toSample(replies));
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

  /** Sends the curtail command, then polls read-back until the wanted state or the deadline. */
  private act(action: 'sleep' | 'wakeup', want: DeviceState, opts: ActionOptions): Promise<ActionResult> {
    return actAndConfirm(
      {
        deviceId: this.id,
        what: `curtail ${action}`,
        want: `state "${want}"`,
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
}
