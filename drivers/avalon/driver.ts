/**
 * Canaan Avalon driver over the cgminer-family TCP API (port 4028).
 * Telemetry: `estats` (one request; Canaan asks for one API call at a time,
 * so nothing is sent in parallel), whose `MM ID0` bracketed string is parsed.
 * Curtail/restore: `ascset 0,softoff|softon,1:<unix ts>` (acts at that time),
 * confirmed by read-back. Work levels: `ascset 0,worklevel,set,<N>` as profiles.
 * The curtail can be armed: encoded ahead, only its time stamped at the send.
 */
import type { ActionOptions, ActionResult, ArmedAction, Capabilities, DeviceDriver, DeviceState, DriverContext, Profile, Reading } from '../contract.js';
import { CgminerClient, cgminerEndpoint, cgminerExchange, checkStatus, type CgminerEndpoint, type CgminerReply } from '../lib/cgminer/client.js';
import { mean, sectionItems } from '../lib/cgminer/fields.js';
import { parseTolerantJson } from '../lib/cgminer/tolerant-json.js';
import { actAndConfirm, type InFlightSend } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { ReadingTracker, type Sample } from '../lib/reading.js';
import { estatsMap, first, numbers, powerOf, workState } from './estats.js';
import type { AvalonConfig } from './schema.js';

export class AvalonDriver implements DeviceDriver {
  readonly kind = 'asic' as const;
  readonly driverId = 'avalon';
  readonly capabilities: Capabilities;
  readonly id: string;
  private readonly ep: CgminerEndpoint;
  private readonly client: CgminerClient;
  private readonly tracker = new ReadingTracker();

  constructor(
    private readonly cfg: AvalonConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    // Work levels are steps whose watts the firmware does not state: profiles, not a watt target.
    this.capabilities = { curtail: true, restore: true, powerTarget: null, profiles: cfg.workLevels.length > 0, switchOutlet: false };
    this.ep = cgminerEndpoint(cfg);
    this.client = new CgminerClient(this.ep);
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const reply = await withDeadline(`${this.id} read`, opts.deadlineMs, (signal) => this.client.command('estats', undefined, signal), opts.signal);
      return this.tracker.ok(this.toSample(reply));
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  private toSample(reply: CgminerReply): Sample {
    const m = estatsMap(sectionItems(reply, 'STATS'));
    if (m.size === 0) {
      throw new RackpilotError('MALFORMED_RESPONSE', `${this.id}: ${this.client.where} estats: no "MM ID" section in the reply (not an Avalon?)`);
    }
    // GHSspd is instantaneous; GHSavg and summary "MHS av" stay high in standby.
    const ghs = first(m.get('GHSspd'));
    const hashrateThs = ghs === undefined ? null : Math.round(ghs) / 1000;
    const powerW = powerOf(m) ?? null;
    const fans: number[] = [];
    for (let i = 1; i <= 8; i++) {
      const f = first(m.get(`Fan${i}`));
      if (f !== undefined) fans.push(f);
    }
    const fanRpm = mean(fans);
    const tmax = first(m.get('TMax')) ?? Math.max(...numbers(m.get('MTmax')), -Infinity);
    const work = workState(m) ?? null;
    const softOff = first(m.get('SoftOFF'));
    const level = first(m.get('WORKLEVEL'));
    const mode = first(m.get('WORKMODE'));
    const inlet = first(m.get('ITemp')) ?? first(m.get('Temp'));
    return {
      ts: this.ctx.now(),
      state: this.stateOf(hashrateThs, powerW, work, softOff),
      powerW,
      fields: {
        hashrateThs,
        temperatureC: Number.isFinite(tmax) ? tmax : null,
        inletTemperatureC: inlet !== undefined && inlet > -100 ? inlet : null,
        fanRpm: fanRpm === undefined ? null : Math.round(fanRpm),
        workState: work,
        softOff: softOff ?? null,
        workLevel: level ?? null,
        workMode: mode ?? null,
        maxPowerW: first(m.get('MPO')) ?? null,
        firmware: m.get('Ver') ?? null,
      },
    };
  }

  private stateOf(hashrateThs: number | null, powerW: number | null, work: string | null, softOff: number | undefined): DeviceState {
    const idleFlag = work === 'In Idle' || (softOff !== undefined && softOff !== 0);
    if (hashrateThs !== null && hashrateThs > 0) return idleFlag ? 'transitioning' : 'running';
    if (hashrateThs === null && !idleFlag) return 'unknown';
    if (powerW === null) return 'unknown';
    return powerW <= this.cfg.sleepPowerMaxW ? 'curtailed' : 'transitioning';
  }

  /**
   * Sends one `ascset` and checks its answer. Firmware differs: STATUS I
   * "success softoff:<ts>", STATUS S "ASC 0 set OK", and softon on some
   * firmware closes the connection without a reply (taken as sent: read-back
   * decides). STATUS E/F is an error (code 45: access denied).
   */
  private async ascset(parameter: string, signal: AbortSignal): Promise<void> {
    this.checkAscset(await cgminerExchange(this.ep, JSON.stringify({ command: 'ascset', parameter }), signal), parameter);
  }

  /** Checks the raw answer to `ascset <parameter>` (see `ascset`). */
  private checkAscset(text: string, parameter: string): void {
    const where = `${this.id}: ${this.client.where} ascset ${parameter}`;
    if (text.length === 0) {
      this.ctx.logger.debug({ parameter }, 'ascset closed without a reply; confirming by read-back');
      return;
    }
    const reply = parseTolerantJson(text, where);
    if (!reply || typeof reply !== 'object' || Array.isArray(reply)) {
      throw new RackpilotError('MALFORMED_RESPONSE', `${where}: reply is not a JSON object`);
    }
    checkStatus(reply as CgminerReply, where);
  }

  /** The unix second a soft action sent now is scheduled for. */
  private scheduleAt(): number {
    return Math.floor(this.ctx.now() / 1000) + this.cfg.scheduleOffsetS;
  }

  private soft(action: 'softoff' | 'softon', want: DeviceState, opts: ActionOptions, inFlight?: InFlightSend): Promise<ActionResult> {
    return actAndConfirm(
      {
        deviceId: this.id,
        what: `${action} (scheduled ${this.cfg.scheduleOffsetS} s ahead)`,
        want: `state "${want}"`,
        ...(inFlight ? { inFlight } : {}),
        send: (signal) => this.ascset(`0,${action},1:${this.scheduleAt()}`, signal),
        read: (o) => this.read(o),
        confirmed: (r) => r.state === want,
        readDeadlineMs: this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs,
        pollMs: this.cfg.confirmPollMs,
        now: this.ctx.now,
      },
      opts,
    );
  }

  curtail(opts: ActionOptions): Promise<ActionResult> {
    return this.soft('softoff', 'curtailed', opts);
  }

  restore(opts: ActionOptions): Promise<ActionResult> {
    return this.soft('softon', 'running', opts);
  }

  /**
   * `ascset 0,softoff,1:<ts>` encoded now; fire() writes the current
   * schedule time (now + scheduleOffsetS, as the plain curtail sends) over
   * the ts digits in place, then opens the connection and queues the bytes.
   * The time is restamped rather than kept from arming because the miner
   * acts at that second: kept, it would be up to one poll interval old, and
   * with the usual 5 s offset and a 5 s poll often already past, and whether
   * the firmware acts at once on a past time is unverified (README). Nothing
   * to log on to, so an arm only goes stale when the clock's ts gains a digit.
   */
  armCurtail(): ArmedAction | undefined {
    const armedTs = this.scheduleAt();
    const digits = String(armedTs);
    const bytes = this.client.encode('ascset', `0,softoff,1:${digits}`);
    const end = bytes.lastIndexOf(digits) + digits.length;
    // fire() rewrites the same number of digits: ts must stay within them
    const lo = 10 ** (digits.length - 1);
    const hi = 10 ** digits.length;
    let fired = false;
    return {
      fire: () => {
        let ts = this.scheduleAt();
        if (fired || ts < lo || ts >= hi) return undefined;
        fired = true;
        const sentTs = ts;
        for (let i = end - 1; i >= end - digits.length; i--) {
          bytes[i] = 0x30 + (ts % 10);
          ts = Math.floor(ts / 10);
        }
        const ex = this.client.start(bytes);
        return {
          // an exchange nobody waited for (the action ended before its wait) is dropped, not left open
          complete: (opts) =>
            this.soft('softoff', 'curtailed', opts, {
              sentAt: ex.sentAt,
              wait: async (signal) => {
                this.checkAscset(await ex.result(signal), `0,softoff,1:${sentTs}`);
                return ex.endedAt;
              },
            }).finally(() => ex.cancel()),
        };
      },
    };
  }

  listProfiles(): Promise<Profile[]> {
    return Promise.resolve(this.cfg.workLevels.map((w) => ({ name: w.name, ...(w.powerW !== undefined ? { powerW: w.powerW } : {}) })));
  }

  /** `ascset 0,worklevel,set,<N>`; confirmed when estats shows WORKLEVEL[N] and the miner hashes. */
  setProfile(name: string, opts: ActionOptions): Promise<ActionResult> {
    const wl = this.cfg.workLevels.find((w) => w.name === name);
    if (!wl) {
      const offered = this.cfg.workLevels.map((w) => w.name).join(', ') || 'none configured (workLevels)';
      return Promise.reject(new RackpilotError('UNSUPPORTED', `${this.id}: no profile "${name}" (offered: ${offered})`));
    }
    return actAndConfirm(
      {
        deviceId: this.id,
        what: `worklevel ${wl.level} (${name})`,
        want: `WORKLEVEL[${wl.level}] while hashing`,
        send: (signal) => this.ascset(`0,worklevel,set,${wl.level}`, signal),
        read: (o) => this.read(o),
        confirmed: (r) => r.fields.workLevel === wl.level && r.state === 'running',
        readDeadlineMs: this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs,
        pollMs: this.cfg.confirmPollMs,
        now: this.ctx.now,
      },
      opts,
    );
  }
}
