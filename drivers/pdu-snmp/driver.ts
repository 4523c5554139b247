/**
 * SNMP PDU driver: one get (split into PDUs of `maxOidsPerRequest` varbinds)
 * reads total, phase and outlet power and every outlet's state; an outlet is
 * switched by the profile's write and confirmed by reading its state back.
 * Switch-ons on one PDU are spaced by `switchOnDelayMs` (inrush).
 */
import type { ActionOptions, ActionResult, Capabilities, DeviceDriver, DriverContext, FieldValue, Reading } from '../contract.js';
import { actAndConfirm } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { parseOutlet, SwitchOnSequencer } from '../lib/outlets.js';
import { ReadingTracker } from '../lib/reading.js';
import { LazyTransport } from '../lib/lazy.js';
import type { SnmpClient, SnmpValue } from './client.js';
import { decodeOutletState, fillOid, PROFILES, type OidParams, type PowerPoint, type SnmpPduProfile } from './profiles.js';
import type { PduSnmpConfig } from './schema.js';

interface Point {
  field: string;
  oid: string;
  /** Power points: W per raw unit before decimal digits. */
  scale: number;
  /** Index into the digits OIDs, Raritan only. */
  digits?: number;
  /** Outlet-state points: the outlet number. */
  outlet?: number;
}

export class PduSnmpDriver implements DeviceDriver {
  readonly kind = 'pdu' as const;
  readonly driverId = 'pdu-snmp';
  readonly capabilities: Capabilities = { curtail: false, restore: false, powerTarget: null, profiles: false, switchOutlet: true };
  readonly id: string;
  private readonly profile: SnmpPduProfile;
  /** net-snmp is loaded by start(), not with the registry. */
  private readonly transport: LazyTransport<SnmpClient>;
  private readonly tracker = new ReadingTracker();
  private readonly sequencer: SwitchOnSequencer;
  /** Precomputed: every OID of a read, in order, and what each one means. */
  private readonly points: Point[] = [];
  private readonly oids: string[];
  private readonly digitOids: string[] = [];
  private digits: number[] | undefined;
  private readonly params: OidParams;
  private lastFields: Record<string, FieldValue> = {};
  private lastPowerW: number | null = null;

  constructor(
    private readonly cfg: PduSnmpConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    this.profile = PROFILES[cfg.profile];
    this.params = { unit: cfg.unit ?? this.profile.defaults.unit, cord: cfg.cord ?? this.profile.defaults.cord };
    const target = { deviceId: cfg.id, host: cfg.host, port: cfg.port, requestMs: cfg.timeouts.readMs, maxOidsPerRequest: cfg.maxOidsPerRequest, snmp: cfg.snmp };
    this.transport = new LazyTransport('SNMP client (net-snmp)', async () => new (await import('./client.js')).SnmpClient(target));
    this.sequencer = new SwitchOnSequencer(cfg.switchOnDelayMs, ctx.now);
    this.addPower('powerW', this.profile.totalPower, this.params);
    if (this.profile.phasePower) {
      for (let p = 1; p <= cfg.phases; p++) this.addPower(`phase${p}PowerW`, this.profile.phasePower, { ...this.params, phase: p });
    }
    for (let o = 1; o <= cfg.outlets; o++) {
      if (this.profile.outletPower) this.addPower(`outlet${o}PowerW`, this.profile.outletPower, { ...this.params, outlet: o });
      this.points.push({ field: `outlet${o}On`, oid: this.stateOid(o), scale: 1, outlet: o });
    }
    this.oids = this.points.map((p) => p.oid);
  }

  private addPower(field: string, pp: PowerPoint, params: OidParams): void {
    const point: Point = { field, oid: fillOid(pp.oid, params), scale: pp.scale };
    if (pp.digitsOid) {
      point.digits = this.digitOids.length;
      this.digitOids.push(fillOid(pp.digitsOid, params));
    }
    this.points.push(point);
  }

  private stateOid(outlet: number): string {
    return fillOid(this.profile.outletState.oid, { ...this.params, outlet });
  }

  /** Opens the UDP session; nothing is sent until the first read (a PDU that is down now is simply unreachable). */
  async start(): Promise<void> {
    (await this.transport.get()).open();
  }

  stop(): Promise<void> {
    this.transport.loaded?.close();
    return Promise.resolve();
  }

  /** The SNMP client; NOT_STARTED before start() loaded it. */
  private get client(): SnmpClient {
    const c = this.transport.loaded;
    if (!c) throw new RackpilotError('NOT_STARTED', `${this.id}: SNMP session not open (start() the driver first)`, { device: this.id });
    return c;
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const values = await withDeadline(`${this.id} read`, opts.deadlineMs, (signal) => this.readValues(signal), opts.signal);
      return this.tracker.ok({ ts: this.ctx.now(), state: 'running', powerW: values.powerW, fields: values.fields });
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  private async readValues(signal: AbortSignal): Promise<{ powerW: number | null; fields: Record<string, FieldValue> }> {
    if (!this.digits && this.digitOids.length > 0) {
      // sensor decimal digits (Raritan) rarely change: read once; a missing one counts as 0
      this.digits = (await this.client.get(this.digitOids, signal)).map((d) => d ?? 0);
    }
    const raw = await this.client.get(this.oids, signal);
    const fields: Record<string, FieldValue> = {};
    let powerW: number | null = null;
    let answered = 0;
    for (let i = 0; i < this.points.length; i++) {
      const p = this.points[i] as Point;
      const v: SnmpValue = raw[i] ?? null;
      if (v !== null) answered++;
      if (p.outlet !== undefined) {
        const state = v === null ? null : decodeOutletState(this.profile, v);
        fields[p.field] = state === 'on' ? true : state === 'off' ? false : null;
        fields[`outlet${p.outlet}State`] = state ?? (v === null ? null : `raw ${v}`);
        continue;
      }
      const d = p.digits === undefined ? 0 : (this.digits?.[p.digits] ?? 0);
      const w = v === null ? null : Math.round((v * p.scale) / 10 ** d * 1000) / 1000;
      if (p.field === 'powerW') powerW = w;
      else fields[p.field] = w;
    }
    if (answered === 0) {
      throw new RackpilotError(
        'DEVICE_ERROR',
        `${this.id}: the PDU answered noSuchObject for every OID of profile ${this.profile.id} (${this.profile.mib}): check profile, unit and cord`,
        { device: this.id },
      );
    }
    this.lastFields = fields;
    this.lastPowerW = powerW;
    return { powerW, fields };
  }

  /** Reads one outlet's state: a Reading with the last values and this outlet's state fresh. */
  private async readOutlet(outlet: number, opts: { deadlineMs: number; signal: AbortSignal }): Promise<Reading> {
    try {
      const [v] = await withDeadline(`${this.id} outlet ${outlet} state`, opts.deadlineMs, (s) => this.client.get([this.stateOid(outlet)], s), opts.signal);
      if (v === null || v === undefined) {
        throw new RackpilotError('DEVICE_ERROR', `${this.id}: outlet ${outlet} has no state on this PDU (noSuchObject at ${this.stateOid(outlet)})`, { device: this.id });
      }
      const state = decodeOutletState(this.profile, v);
      const fields = { ...this.lastFields, [`outlet${outlet}On`]: state === 'on' ? true : state === 'off' ? false : null, [`outlet${outlet}State`]: state ?? `raw ${v}` };
      this.lastFields = fields;
      return this.tracker.ok({ ts: this.ctx.now(), state: 'running', powerW: this.lastPowerW, fields });
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  switchOutlet(outlet: string, on: boolean, opts: ActionOptions): Promise<ActionResult> {
    let n: number;
    try {
      n = parseOutlet(this.id, outlet, this.cfg.outlets);
    } catch (err) {
      return Promise.reject(toRackpilotError(err, { device: this.id }));
    }
    const write = on ? this.profile.switchOn : this.profile.switchOff;
    const oid = fillOid(write.oid, { ...this.params, outlet: n });
    const what = `switch outlet ${n} ${on ? 'on' : 'off'}`;
    const send = async (signal: AbortSignal): Promise<void> => {
      try {
        await this.client.setInteger(oid, write.value, signal);
      } catch (err) {
        const e = toRackpilotError(err, { device: this.id });
        if (e.code !== 'DEVICE_ERROR') throw e;
        if (e.context.noSuch === true) {
          throw new RackpilotError('DEVICE_ERROR', `${this.id}: outlet ${n} does not exist on this PDU (noSuchInstance at ${oid}): check outlets, unit and cord`, { device: this.id, outlet: n });
        }
        throw new RackpilotError('DEVICE_ERROR', `${this.id}: the PDU rejected "${what}" (${e.message}); ${this.profile.rejectHint}`, { device: this.id, outlet: n });
      }
    };
    return actAndConfirm(
      {
        deviceId: this.id,
        what,
        want: `outlet ${n} ${on ? 'on' : 'off'}`,
        send: on ? (signal) => this.sequencer.run(signal, () => send(signal)) : send,
        read: (o) => this.readOutlet(n, o),
        confirmed: (r) => r.fields[`outlet${n}On`] === on,
        readDeadlineMs: this.cfg.timeouts.readMs + 100,
        pollMs: this.cfg.confirmPollMs,
        now: this.ctx.now,
      },
      opts,
    );
  }
}
