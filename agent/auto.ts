/**
 * `driver: auto`: a device whose firmware family is found by detection
 * (drivers/detect.ts) when the agent starts, then driven by that family's
 * driver. It lives in agent/ because when to re-detect is agent policy
 * (CONVENTIONS #3: the agent, not the driver, decides retry policy), and it
 * keeps the registry free of a driver that needs the registry.
 *
 * Re-detection (cheap, off the read path, one at a time):
 *   - after `redetectAfterFailures` consecutive failed reads (a reflashed
 *     miner often stops answering its old API), and
 *   - every `firmwareCheckMs`, one `version` request on the API port: when
 *     the model/firmware string differs from the one seen after detection.
 * A new family (or firmware) swaps the inner driver: the old one is stopped.
 * While nothing is identified, read() returns `missing` with NOT_STARTED and
 * detection is retried at most every `retryMs`.
 */
import type { Logger } from 'pino';
import { z } from 'zod';
import type { ActionOptions, ActionResult, Capabilities, DeviceDriver, DriverContext, Profile, Reading } from '../drivers/contract.js';
import { apiFirmware, DEFAULT_HTTP_PORT, detect } from '../drivers/detect.js';
import { withDeadline } from '../drivers/lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../drivers/lib/errors.js';
import { idSchema } from '../drivers/lib/ids.js';
import { ReadingTracker } from '../drivers/lib/reading.js';
import { feedSchema, portSchema, tcpTransportSchema } from '../drivers/lib/transports.js';
import { DRIVERS, findDriver } from '../drivers/registry.js';
import { driverConfigFor } from './probe.js';

export const autoDeviceSchema = z
  .object({
    id: idSchema,
    driver: z.literal('auto'),
    name: z.string().max(128).optional(),
    feed: feedSchema,
    /** host, `port` = the cgminer-family API port used for detection (4028), timeouts for the inner driver. */
    ...tcpTransportSchema(4028),
    /** Web UI port used for detection (and by HTTP-speaking families). */
    httpPort: portSchema.default(DEFAULT_HTTP_PORT),
    /** Credentials handed to the detected driver when its schema takes them (never logged). */
    username: z.string().max(128).optional(),
    password: z.string().max(256).optional(),
    /** Extra config keys per family, used when that family is detected: `{ luxos: { sleepPowerMaxW: 50 } }`. */
    options: z.record(z.string(), z.record(z.string(), z.unknown())).default({}),
    /** Deadline of each detection probe. */
    probeTimeoutMs: z.number().int().min(100).max(30_000).default(2_000),
    /** Re-detect after this many consecutive failed reads (0: never). */
    redetectAfterFailures: z.number().int().min(0).max(1000).default(5),
    /** Check the API's version string this often and re-detect when it changed (0: never). */
    firmwareCheckMs: z.number().int().min(0).max(86_400_000).default(600_000),
    /** While unidentified, try detection again at most this often. */
    retryMs: z.number().int().min(1000).max(3_600_000).default(60_000),
  })
  .strict()
  .superRefine((v, ctx) => {
    for (const k of Object.keys(v.options)) {
      if (!findDriver(k)) ctx.addIssue({ code: 'custom', path: ['options', k], message: `unknown driver "${k}" (known: ${DRIVERS.map((d) => d.id).join(', ')})` });
    }
  });

export type AutoDeviceConfig = z.output<typeof autoDeviceSchema>;

const NO_CAPABILITIES: Capabilities = { curtail: false, restore: false, powerTarget: null, profiles: false, switchOutlet: false };

export class AutoDevice implements DeviceDriver {
  readonly id: string;
  readonly kind = 'asic' as const;
  private inner: DeviceDriver | undefined;
  private firmware: string | undefined;
  private failures = 0;
  private lastFirmwareCheck = 0;
  private lastAttempt = 0;
  private busy: Promise<void> | undefined;
  private problem = 'detection has not run yet';
  private readonly tracker = new ReadingTracker();
  private readonly log: Logger;
  /** Detections that changed the inner driver (for tests and status). */
  swaps = 0;

  constructor(
    private readonly cfg: AutoDeviceConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    this.log = ctx.logger;
  }

  get driverId(): string {
    return this.inner?.driverId ?? 'auto';
  }

  get capabilities(): Capabilities {
    return this.inner?.capabilities ?? NO_CAPABILITIES;
  }

  /** The driver detection chose, if any. */
  get detected(): DeviceDriver | undefined {
    return this.inner;
  }

  async start(): Promise<void> {
    await this.identify();
  }

  async stop(): Promise<void> {
    await this.busy?.catch(() => undefined);
    const d = this.inner;
    this.inner = undefined;
    await d?.stop();
  }

  /** Runs detection and (re)creates the inner driver when the family or firmware changed. */
  private identify(): Promise<void> {
    this.busy ??= this.doIdentify().finally(() => {
      this.busy = undefined;
    });
    return this.busy;
  }

  private async doIdentify(): Promise<void> {
    this.lastAttempt = this.ctx.now();
    const c = this.cfg;
    const d = await detect({ host: c.host, apiPort: c.port, httpPort: c.httpPort, probeTimeoutMs: c.probeTimeoutMs });
    if (!d.driver) {
      this.problem = `no known firmware family answered at ${c.host} (api port ${c.port}, http port ${c.httpPort})`;
      if (!this.inner) this.log.warn({ probes: d.probes.map((p) => `${p.probe}: ${p.saw}`) }, 'driver auto: firmware family not identified');
      return;
    }
    const fw = await apiFirmware({ host: c.host, apiPort: c.port, probeTimeoutMs: c.probeTimeoutMs });
    const fwText = fw ? `${fw.model ?? ''}|${fw.firmware ?? ''}` : undefined;
    if (this.inner && this.inner.driverId === d.driver && (fwText === undefined || fwText === this.firmware)) {
      this.failures = 0;
      return; // same family and firmware: keep the warm driver
    }
    const def = findDriver(d.driver);
    if (!def) return;
    const made = driverConfigFor(def, {
      id: c.id,
      host: c.host,
      apiPort: c.port,
      httpPort: c.httpPort,
      credentials: { user: c.username, password: c.password },
      extra: { ...(c.name !== undefined ? { name: c.name } : {}), ...(c.feed !== undefined ? { feed: c.feed } : {}), timeouts: c.timeouts, ...c.options[d.driver] },
    });
    if (!made.ok) {
      this.problem = `detected ${d.driver}, but the device block is not valid for that driver: ${made.errors.join('; ')}`;
      this.log.error({ detected: d.driver, errors: made.errors }, 'driver auto: config invalid for the detected driver');
      return;
    }
    const next = def.create(made.config, { ...this.ctx, logger: this.ctx.logger.child({ driver: def.id }) });
    const prev = this.inner;
    this.inner = next;
    this.firmware = fwText;
    this.failures = 0;
    this.lastFirmwareCheck = this.ctx.now();
    if (prev) {
      this.swaps++;
      await prev.stop().catch(() => undefined);
    }
    this.log.info({ detected: d.driver, model: d.model, firmware: d.firmware, previous: prev?.driverId ?? null }, 'driver auto: family detected');
    await next.start();
  }

  /** Background work must never throw out of a read. */
  private background(work: () => Promise<void>): void {
    if (this.busy) return;
    this.busy = work()
      .catch((err: unknown) => this.log.warn({ error: toRackpilotError(err).message }, 'driver auto: re-detection failed'))
      .finally(() => {
        this.busy = undefined;
      });
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    const now = this.ctx.now();
    const inner = this.inner;
    if (!inner) {
      if (!this.busy && now - this.lastAttempt >= this.cfg.retryMs) this.background(() => this.doIdentify());
      return this.tracker.failed(new RackpilotError('NOT_STARTED', `${this.id}: driver auto: ${this.problem}`, { device: this.id }), now);
    }
    const r = await inner.read(opts);
    if (r.online) this.failures = 0;
    else this.failures++;
    const c = this.cfg;
    if (c.redetectAfterFailures > 0 && this.failures >= c.redetectAfterFailures) {
      this.failures = 0;
      this.background(() => this.doIdentify());
    } else if (r.online && c.firmwareCheckMs > 0 && now - this.lastFirmwareCheck >= c.firmwareCheckMs) {
      this.lastFirmwareCheck = now;
      this.background(async () => {
        const fw = await apiFirmware({ host: c.host, apiPort: c.port, probeTimeoutMs: c.probeTimeoutMs });
        const fwText = fw ? `${fw.model ?? ''}|${fw.firmware ?? ''}` : undefined;
        if (fwText !== undefined && fwText !== this.firmware) {
          this.log.info({ was: this.firmware, now: fwText }, 'driver auto: firmware changed, re-detecting');
          await this.doIdentify();
        }
      });
    }
    return r;
  }

  private need<K extends 'curtail' | 'restore' | 'setPowerTarget' | 'listProfiles' | 'setProfile'>(k: K): NonNullable<DeviceDriver[K]> {
    const d = this.inner;
    if (!d) throw new RackpilotError('NOT_STARTED', `${this.id}: driver auto: ${this.problem}; cannot ${k}`, { device: this.id });
    const f = d[k];
    if (!f) throw new RackpilotError('UNSUPPORTED', `${this.id}: the ${d.driverId} driver has no ${k}`, { device: this.id });
    return f.bind(d) as NonNullable<DeviceDriver[K]>;
  }

  async curtail(opts: ActionOptions): Promise<ActionResult> {
    return this.need('curtail')(opts);
  }

  async restore(opts: ActionOptions): Promise<ActionResult> {
    return this.need('restore')(opts);
  }

  async setPowerTarget(watts: number, opts: ActionOptions): Promise<ActionResult> {
    return this.need('setPowerTarget')(watts, opts);
  }

  async listProfiles(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Profile[]> {
    return this.need('listProfiles')(opts);
  }

  async setProfile(name: string, opts: ActionOptions): Promise<ActionResult> {
    return this.need('setProfile')(name, opts);
  }

  /** Bounded wait for background detection (tests). */
  async settled(ms = 10_000): Promise<void> {
    if (this.busy) await withDeadline(`${this.id} detection`, ms, () => this.busy ?? Promise.resolve());
  }
}
