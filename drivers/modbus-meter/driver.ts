/**
 * Modbus meter driver: a sampling loop polls the register map at `sampleHz`
 * over one link (never two requests at once), streams `frequencyHz` and
 * `powerW` samples to signal listeners, and keeps the latest as a Reading.
 * A meter that stops answering turns stale: read() says so with the error,
 * and listeners get the last values with `fresh: false`.
 */
import type { Capabilities, DeviceDriver, DriverContext, FieldValue, Reading, SignalListener, SignalSample } from '../contract.js';
import { sleep } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { LazyTransport } from '../lib/lazy.js';
import { ReadingTracker } from '../lib/reading.js';
import type { ModbusLink } from './link.js';
import { decodeRegister, planReads, type ReadBlock } from './maps.js';
import { registersOf, type ModbusMeterConfig } from './schema.js';

export const SIGNAL_CHANNELS = ['frequencyHz', 'powerW'] as const;
/** Samples kept to compute the achieved rate. */
const RATE_WINDOW = 20;

export class ModbusMeterDriver implements DeviceDriver {
  readonly kind = 'meter' as const;
  readonly driverId = 'modbus-meter';
  readonly capabilities: Capabilities = { curtail: false, restore: false, powerTarget: null, profiles: false, switchOutlet: false };
  readonly id: string;
  readonly signalChannels: readonly string[];
  private readonly blocks: ReadBlock[];
  private readonly periodMs: number;
  /** A sample older than this is stale even without an error (the loop fell behind). */
  private readonly staleAfterMs: number;
  /** modbus-serial and serialport are loaded by start(), not with the registry. */
  private readonly transport: LazyTransport<ModbusLink>;
  private readonly tracker = new ReadingTracker();
  private readonly listeners = new Set<SignalListener>();
  private last: Reading | undefined;
  private lastValues = new Map<string, number>();
  private readonly okTimes: number[] = [];
  private loop: Promise<void> | undefined;
  private stopCtl: AbortController | undefined;
  private polls = 0;
  private failures = 0;

  constructor(
    private readonly cfg: ModbusMeterConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    const regs = registersOf(cfg);
    this.blocks = planReads(regs);
    this.signalChannels = SIGNAL_CHANNELS.filter((c) => regs.some((r) => r.name === c));
    this.periodMs = 1000 / cfg.sampleHz;
    this.staleAfterMs = Math.max(3 * this.periodMs, cfg.timeouts.readMs + this.periodMs);
    this.transport = new LazyTransport('Modbus client (modbus-serial, serialport)', async () => new (await import('./link.js')).ModbusLink(cfg, ctx.logger));
  }

  /** Opens the link and starts the sampling loop. A meter that does not answer yet is not an error: its readings stay missing/stale. */
  async start(): Promise<void> {
    if (this.loop) return;
    const link = await this.transport.get();
    if (this.loop) return;
    const ctl = new AbortController();
    this.stopCtl = ctl;
    try {
      await link.connect(ctl.signal);
    } catch (err) {
      const e = toRackpilotError(err, { device: this.id });
      this.last = this.tracker.failed(e, this.ctx.now());
      if (!e.retriable) {
        this.stopCtl = undefined;
        throw e;
      }
      this.ctx.logger.warn({ err: e.toJSON() }, 'meter link not open yet; the sampling loop retries');
    }
    this.loop = this.run(ctl.signal);
  }

  async stop(): Promise<void> {
    this.stopCtl?.abort();
    this.stopCtl = undefined;
    const loop = this.loop;
    this.loop = undefined;
    if (loop) await loop;
    await this.transport.loaded?.close();
  }

  /** The link, loaded by start(); only used while the sampling loop exists. */
  private get link(): ModbusLink {
    const l = this.transport.loaded;
    if (!l) throw new RackpilotError('NOT_STARTED', `meter ${this.id}: not started`, { device: this.id });
    return l;
  }

  /** The latest sample (no I/O: the sampling loop reads the meter). */
  read(_opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    const now = this.ctx.now();
    if (!this.loop) {
      return Promise.resolve(this.tracker.failed(new RackpilotError('NOT_STARTED', `meter ${this.id}: not started`), now));
    }
    const last = this.last;
    if (!last) {
      return Promise.resolve(this.tracker.failed(new RackpilotError('READ_TIMEOUT', `meter ${this.id}: no sample yet (${this.link.where})`), now));
    }
    if (last.freshness === 'fresh' && now - last.ts > this.staleAfterMs) {
      return Promise.resolve(
        this.tracker.failed(new RackpilotError('READ_TIMEOUT', `meter ${this.id}: no sample for ${now - last.ts} ms (${this.link.where})`), now),
      );
    }
    return Promise.resolve({ ...last, fields: { ...last.fields, sampleHz: last.freshness === 'fresh' ? this.achievedHz() : null } });
  }

  onSignal(listener: SignalListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Samples per second over the last RATE_WINDOW good polls. */
  achievedHz(): number | null {
    const t = this.okTimes;
    if (t.length < 2) return null;
    const span = (t[t.length - 1] ?? 0) - (t[0] ?? 0);
    return span > 0 ? Math.round(((t.length - 1) * 1000 * 100) / span) / 100 : null;
  }

  private async run(signal: AbortSignal): Promise<void> {
    let next = Date.now();
    while (!signal.aborted) {
      let waitMs: number;
      try {
        const ok = await this.pollOnce(signal);
        next += this.periodMs;
        const now = Date.now();
        if (next < now) next = now; // behind: no catch-up burst
        waitMs = next - now;
        if (!ok) {
          // let a late answer pass before the next request (it is flushed then) and do not hammer a dead link
          waitMs = Math.max(waitMs, this.cfg.transport === 'rtu' ? this.cfg.timeouts.readMs : 0, this.link.connected ? 0 : 1000);
          next = now + waitMs;
        }
      } catch (err) {
        // pollOnce does not throw; this is the loop's last line of defence
        this.ctx.logger.error({ err: toRackpilotError(err).toJSON() }, 'meter sampling loop error');
        waitMs = 1000;
        next = Date.now() + waitMs;
      }
      try {
        await sleep(waitMs, signal);
      } catch {
        return;
      }
    }
  }

  /** One poll of every block; true when all answered. */
  private async pollOnce(signal: AbortSignal): Promise<boolean> {
    this.polls++;
    try {
      if (!this.link.connected) await this.link.connect(signal);
      const values: Record<string, FieldValue> = {};
      for (const b of this.blocks) {
        const data = await this.link.readBlock(b, this.cfg.timeouts.readMs, signal);
        for (const r of b.registers) values[r.name] = decodeRegister(r, b, data);
      }
      const ts = this.ctx.now();
      this.okTimes.push(ts);
      if (this.okTimes.length > RATE_WINDOW) this.okTimes.shift();
      const powerW = typeof values.powerW === 'number' ? values.powerW : null;
      const fields: Record<string, FieldValue> = { ...values };
      delete fields.powerW;
      fields.polls = this.polls;
      fields.failures = this.failures;
      this.last = this.tracker.ok({ ts, state: 'running', powerW, fields });
      for (const ch of this.signalChannels) {
        const v = values[ch];
        if (typeof v === 'number') {
          this.lastValues.set(ch, v);
          this.emit({ device: this.id, channel: ch, value: v, ts, fresh: true });
        }
      }
      return true;
    } catch (err) {
      if (signal.aborted) return false;
      this.failures++;
      const e = toRackpilotError(err, { device: this.id });
      const ts = this.ctx.now();
      const wasFresh = this.last?.freshness === 'fresh';
      this.last = this.tracker.failed(e, ts);
      if (wasFresh) this.ctx.logger.warn({ err: e.toJSON() }, 'meter stopped answering; readings are stale');
      else this.ctx.logger.debug({ err: e.toJSON() }, 'meter poll failed');
      if (e.code === 'CONNECTION_CLOSED') await this.link.close();
      for (const [ch, v] of this.lastValues) this.emit({ device: this.id, channel: ch, value: v, ts, fresh: false });
      return false;
    }
  }

  private emit(s: SignalSample): void {
    for (const l of this.listeners) {
      try {
        l(s);
      } catch (err) {
        this.ctx.logger.error({ err: String(err), channel: s.channel }, 'signal listener threw');
      }
    }
  }
}
