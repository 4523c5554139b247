/**
 * Modbus TCP PDU driver: the register/coil map comes from config. A read
 * fetches every configured point in as few span requests as fit (one per
 * table when the addresses are close); an outlet is switched by writing its
 * coil or command register and confirmed by reading its state back.
 * Switch-ons on one PDU are spaced by `switchOnDelayMs` (inrush).
 */
import type { ActionOptions, ActionResult, Capabilities, DeviceDriver, DriverContext, FieldValue, Reading } from '../contract.js';
import { actAndConfirm } from '../lib/confirm.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';
import { parseOutlet, SwitchOnSequencer } from '../lib/outlets.js';
import { LazyTransport } from '../lib/lazy.js';
import { ReadingTracker } from '../lib/reading.js';
import type { ModbusPduClient } from './client.js';
import { decodeRegisters, planSpans, registerCount, type Span, type Table } from './registers.js';
import type { PduModbusConfig, RegisterValue } from './schema.js';

type OutletCfg = PduModbusConfig['outlets'][number];

/** Values read in one cycle, by table and address. */
type Snapshot = Record<Table, Map<number, number>>;

function statePlace(o: OutletCfg): { table: Table; address: number } {
  const s = o.state;
  if ('coil' in s) return { table: 'coil', address: s.coil };
  if ('discreteInput' in s) return { table: 'discrete', address: s.discreteInput };
  return { table: s.table, address: s.register };
}

export class PduModbusDriver implements DeviceDriver {
  readonly kind = 'pdu' as const;
  readonly driverId = 'pdu-modbus';
  readonly capabilities: Capabilities = { curtail: false, restore: false, powerTarget: null, profiles: false, switchOutlet: true };
  readonly id: string;
  /** modbus-serial is loaded by start() (or the first request), not with the registry. */
  private readonly transport: LazyTransport<ModbusPduClient>;
  private readonly tracker = new ReadingTracker();
  private readonly sequencer: SwitchOnSequencer;
  private readonly spans: Span[];
  private readonly stateSpans: Span[][];
  private lastFields: Record<string, FieldValue> = {};
  private lastPowerW: number | null = null;

  constructor(
    private readonly cfg: PduModbusConfig,
    private readonly ctx: DriverContext,
  ) {
    this.id = cfg.id;
    const target = { deviceId: cfg.id, host: cfg.host, port: cfg.port, unitId: cfg.unitId, connectMs: cfg.timeouts.connectMs, readMs: cfg.timeouts.readMs };
    this.transport = new LazyTransport('Modbus TCP client (modbus-serial)', async () => new (await import('./client.js')).ModbusPduClient(target));
    this.sequencer = new SwitchOnSequencer(cfg.switchOnDelayMs, ctx.now);
    const reg = (v: RegisterValue) => ({ table: v.table, address: v.address, count: registerCount(v.type) });
    const wanted = [
      ...(cfg.totalPower ? [reg(cfg.totalPower)] : []),
      ...cfg.phasePower.map(reg),
      ...cfg.outlets.flatMap((o) => [{ ...statePlace(o), count: 1 }, ...(o.power ? [reg(o.power)] : [])]),
    ];
    this.spans = planSpans(wanted, cfg.maxReadGap);
    this.stateSpans = cfg.outlets.map((o) => planSpans([{ ...statePlace(o), count: 1 }]));
  }

  /** Nothing to open yet: the connection is made by the first request (a PDU that is down now is simply unreachable). */
  async start(): Promise<void> {
    (await this.transport.get()).open();
  }

  stop(): Promise<void> {
    this.transport.loaded?.close();
    return Promise.resolve();
  }

  private async fetch(spans: readonly Span[], signal: AbortSignal): Promise<Snapshot> {
    const client = await this.transport.get();
    const snap: Snapshot = { holding: new Map(), input: new Map(), coil: new Map(), discrete: new Map() };
    for (const s of spans) {
      const values =
        s.table === 'coil' || s.table === 'discrete'
          ? (await client.readBits(s.table, s.start, s.count, signal)).map((b) => (b ? 1 : 0))
          : await client.readRegisters(s.table, s.start, s.count, signal);
      values.forEach((v, i) => snap[s.table].set(s.start + i, v));
    }
    return snap;
  }

  private value(snap: Snapshot, v: RegisterValue): number | null {
    const m = snap[v.table];
    const regs: number[] = [];
    for (let i = 0; i < registerCount(v.type); i++) {
      const r = m.get(v.address + i);
      if (r === undefined) return null;
      regs.push(r);
    }
    const w = decodeRegisters(regs, 0, v);
    return w === null ? null : Math.round(w * 1000) / 1000;
  }

  /** true/false for on/off, null for a register value that is neither. */
  private outletOn(snap: Snapshot, o: OutletCfg): boolean | null {
    const { table, address } = statePlace(o);
    const raw = snap[table].get(address);
    if (raw === undefined) return null;
    const s = o.state;
    if ('register' in s) return raw === s.on ? true : raw === s.off ? false : null;
    return raw === 1;
  }

  async read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading> {
    try {
      const snap = await withDeadline(`${this.id} read`, opts.deadlineMs, (s) => this.fetch(this.spans, s), opts.signal);
      const fields: Record<string, FieldValue> = {};
      this.cfg.phasePower.forEach((v, i) => (fields[`phase${i + 1}PowerW`] = this.value(snap, v)));
      this.cfg.outlets.forEach((o, i) => {
        if (o.power) fields[`outlet${i + 1}PowerW`] = this.value(snap, o.power);
        fields[`outlet${i + 1}On`] = this.outletOn(snap, o);
      });
      const powerW = this.cfg.totalPower ? this.value(snap, this.cfg.totalPower) : null;
      this.lastFields = fields;
      this.lastPowerW = powerW;
      return this.tracker.ok({ ts: this.ctx.now(), state: 'running', powerW, fields });
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  private async readOutlet(n: number, opts: { deadlineMs: number; signal: AbortSignal }): Promise<Reading> {
    try {
      const o = this.cfg.outlets[n - 1] as OutletCfg;
      const snap = await withDeadline(`${this.id} outlet ${n} state`, opts.deadlineMs, (s) => this.fetch(this.stateSpans[n - 1] ?? [], s), opts.signal);
      const fields = { ...this.lastFields, [`outlet${n}On`]: this.outletOn(snap, o) };
      this.lastFields = fields;
      return this.tracker.ok({ ts: this.ctx.now(), state: 'running', powerW: this.lastPowerW, fields });
    } catch (err) {
      return this.tracker.failed(toRackpilotError(err, { device: this.id }), this.ctx.now());
    }
  }

  switchOutlet(outlet: string, on: boolean, opts: ActionOptions): Promise<ActionResult> {
    let n: number;
    try {
      n = parseOutlet(this.id, outlet, this.cfg.outlets.length);
    } catch (err) {
      return Promise.reject(toRackpilotError(err, { device: this.id }));
    }
    const o = this.cfg.outlets[n - 1] as OutletCfg;
    const cmd = o.command ?? (o.state as Exclude<OutletCfg['state'], { discreteInput: number }>);
    const what = `switch outlet ${n} ${on ? 'on' : 'off'}`;
    const send = async (signal: AbortSignal): Promise<void> => {
      try {
        const client = await this.transport.get();
        if ('coil' in cmd) await client.writeCoil(cmd.coil, on, signal);
        else await client.writeRegister(cmd.register, on ? cmd.on : cmd.off, signal);
      } catch (err) {
        const e = toRackpilotError(err, { device: this.id });
        if (e.code !== 'DEVICE_ERROR') throw e;
        throw new RackpilotError('DEVICE_ERROR', `${this.id}: the PDU rejected "${what}" (${e.message}): check the outlet's command address and that the PDU allows switching over Modbus`, {
          device: this.id,
          outlet: n,
        });
      }
    };
    return actAndConfirm(
      {
        deviceId: this.id,
        what,
        want: `outlet ${n} ${on ? 'on' : 'off'}`,
        send: on ? (signal) => this.sequencer.run(signal, () => send(signal)) : send,
        read: (r) => this.readOutlet(n, r),
        confirmed: (r) => r.fields[`outlet${n}On`] === on,
        readDeadlineMs: this.cfg.timeouts.connectMs + this.cfg.timeouts.readMs + 100,
        pollMs: this.cfg.confirmPollMs,
        now: this.ctx.now,
      },
      opts,
    );
  }
}
