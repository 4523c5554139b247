/**
 * Acts on one device for the engine, recording every step with hr-clock
 * times. Shedding climbs an escalation ladder until something confirms:
 * the driver's curtail (confirmed by read-back, then by the outlet's
 * measured power where a PDU outlet covers the device), `retries` more
 * curtails, the driver's alternative (lowest power target, else the
 * lowest-power profile), cutting its PDU outlet(s) when config allows a hard
 * cut for it, and finally an alarm. Restoring re-energizes a cut outlet first.
 */
import type { ActionOptions, ActionResult, DeviceDriver, Reading } from '../../drivers/contract.js';
import { sleep, withDeadline } from '../../drivers/lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../../drivers/lib/errors.js';
import { hrNow } from './clock.js';
import type { DeviceTiming } from './evidence.js';
import type { ShedRecord } from './state-store.js';

export type StepName = DeviceTiming['steps'][number]['step'];

export interface Feed {
  pdu: DeviceDriver;
  outlet: string;
  /** The PDU reading field holding this outlet's power, e.g. `outlet3PowerW`. */
  powerField: string;
}

/** A device as the engine acts on it; built once at start-up. */
export interface DeviceHandle {
  id: string;
  driver: DeviceDriver;
  feeds: Feed[];
  hardCut: boolean;
}

export interface ExecOptions {
  deadlineMs: number;
  retries: number;
  confirmByPower: boolean;
  powerConfirmFraction: number;
  /** Aborts restores (a new demand stops the ramp); curtails are not aborted except at shutdown. */
  signal: AbortSignal;
  /** Every step as it ends (for events and logs). */
  onStep: (device: string, step: DeviceTiming['steps'][number]) => void;
  /** A confirming read-back, to keep the poller's latest reading current. */
  onReading: (device: string, r: Reading, requestedAt: number) => void;
  /** The device's draw before the action (for the power check), if known. */
  powerBeforeW: (device: string) => number | null;
  /** The device's latest reading (its profile or power target before an alternative action). */
  lastReading: (device: string) => Reading | undefined;
}

export interface ShedOutcome extends DeviceTiming {
  /** How the device ended up shed, when it did. */
  via?: ShedRecord['via'];
  cutOutlets?: { pdu: string; outlet: string }[];
  previous?: ShedRecord['previous'];
  error?: { code: string; message: string };
}

/** Extra time a driver gets past its own action deadline before the engine gives up on it. */
const DRIVER_GRACE_MS = 2_000;
const POWER_POLL_MS = 250;
const POWER_FLOOR_W = 100;

/**
 * When the device acknowledged: the call time plus the driver's ackMs, never
 * later than now (a driver that counts whole milliseconds may round up past
 * the moment its result arrives).
 */
function ackAt(calledAt: number, ackMs: number): number {
  return Math.min(calledAt + ackMs, hrNow());
}

/** Coalesces PDU reads: every device waiting on one PDU shares one read in flight. */
export class PduReads {
  private readonly inFlight = new Map<string, Promise<Reading>>();
  read(pdu: DeviceDriver, deadlineMs: number, signal: AbortSignal): Promise<Reading> {
    let p = this.inFlight.get(pdu.id);
    if (!p) {
      p = pdu.read({ deadlineMs, signal }).finally(() => this.inFlight.delete(pdu.id));
      this.inFlight.set(pdu.id, p);
    }
    return p;
  }
}

function bounded(what: string, deadlineMs: number, signal: AbortSignal, fn: (o: ActionOptions) => Promise<ActionResult>): Promise<ActionResult> {
  // the driver enforces deadlineMs itself; this outer bound only guards against a driver bug
  return withDeadline(what, deadlineMs + DRIVER_GRACE_MS, (s) => fn({ deadlineMs, signal: s }), signal);
}

/**
 * Waits until every feed outlet that measures power reads at most the allowed
 * residual, or the deadline passes (POWER_NOT_CONFIRMED). Feeds whose PDU
 * does not report outlet power are not a witness and are skipped.
 */
async function confirmByPower(h: DeviceHandle, before: number | null, o: ExecOptions, reads: PduReads, deadlineAt: number): Promise<number | null> {
  const limit = Math.max(POWER_FLOOR_W, (before ?? 0) * o.powerConfirmFraction);
  for (;;) {
    let total = 0;
    let witnessed = false;
    for (const f of h.feeds) {
      const left = Math.max(50, deadlineAt - Date.now());
      const r = await reads.read(f.pdu, Math.min(left, 2_000), o.signal);
      const v = r.freshness === 'fresh' ? r.fields[f.powerField] : undefined;
      if (typeof v === 'number') {
        witnessed = true;
        total += v;
      }
    }
    if (!witnessed) return null;
    if (total <= limit) return total;
    if (Date.now() + POWER_POLL_MS >= deadlineAt) {
      throw new RackpilotError('POWER_NOT_CONFIRMED', `${h.id}: read-back says curtailed but its outlet still draws ${total} W (limit ${Math.round(limit)} W)`, { device: h.id });
    }
    await sleep(POWER_POLL_MS, o.signal);
  }
}

/** One curtail attempt with read-back (and power) confirmation. */
async function curtailOnce(h: DeviceHandle, o: ExecOptions, reads: PduReads, t: ShedOutcome, step: StepName): Promise<void> {
  const d = h.driver;
  if (!d.curtail) throw new RackpilotError('UNSUPPORTED', `${h.id}: no curtail`, { device: h.id });
  const started = Date.now();
  const res = await bounded(`${h.id} curtail`, o.deadlineMs, o.signal, d.curtail.bind(d));
  t.ackAt ??= ackAt(t.dispatchAt, res.ackMs);
  o.onReading(h.id, res.reading, res.reading.ts);
  if (o.confirmByPower && step !== 'alternative' && h.feeds.length > 0 && d.kind === 'asic') {
    t.measuredW = await confirmByPower(h, o.powerBeforeW(h.id), o, reads, started + o.deadlineMs);
  }
}

/**
 * The driver's alternative to curtail: its lowest power target, else its
 * lowest-power profile. Returns what to set back at restore (the target or
 * profile the last reading showed), or undefined when there is no alternative.
 */
async function alternative(h: DeviceHandle, o: ExecOptions, t: ShedOutcome): Promise<NonNullable<ShedRecord['previous']> | undefined> {
  const d = h.driver;
  const range = d.capabilities.powerTarget;
  const before = o.lastReading(h.id)?.fields;
  const t0 = hrNow();
  if (range && !range.reboots && d.setPowerTarget) {
    const res = await bounded(`${h.id} power target`, o.deadlineMs, o.signal, (x) => d.setPowerTarget!(range.minW, x));
    t.ackAt ??= ackAt(t0, res.ackMs);
    o.onReading(h.id, res.reading, res.reading.ts);
    const prev = before?.powerTargetW;
    return { powerTargetW: typeof prev === 'number' && prev > range.minW ? Math.min(prev, range.maxW) : range.maxW };
  }
  if (d.capabilities.profiles && d.listProfiles && d.setProfile) {
    const profiles = await withDeadline(`${h.id} profiles`, o.deadlineMs, (s) => d.listProfiles!({ deadlineMs: o.deadlineMs, signal: s }), o.signal);
    const lowest = profiles.filter((p) => p.powerW !== undefined).sort((a, b) => (a.powerW ?? 0) - (b.powerW ?? 0))[0];
    if (!lowest) return undefined;
    const t1 = hrNow();
    const res = await bounded(`${h.id} profile`, o.deadlineMs, o.signal, (x) => d.setProfile!(lowest.name, x));
    t.ackAt ??= ackAt(t1, res.ackMs);
    o.onReading(h.id, res.reading, res.reading.ts);
    const prev = before?.profile;
    return typeof prev === 'string' && prev !== lowest.name ? { profile: prev } : {};
  }
  return undefined;
}

async function cutOutlets(h: DeviceHandle, o: ExecOptions, t: ShedOutcome): Promise<{ pdu: string; outlet: string }[]> {
  const t0 = hrNow();
  const done = await Promise.all(
    h.feeds.map(async (f) => {
      const pdu = f.pdu;
      if (!pdu.switchOutlet) throw new RackpilotError('UNSUPPORTED', `${pdu.id} cannot switch outlets`, { device: h.id });
      const res = await bounded(`${pdu.id} outlet ${f.outlet} off`, o.deadlineMs, o.signal, (x) => pdu.switchOutlet!(f.outlet, false, x));
      // the PDU's acknowledgement stands for the device's
      t.ackAt ??= ackAt(t0, res.ackMs);
      return { pdu: pdu.id, outlet: f.outlet };
    }),
  );
  return done;
}

/**
 * Sheds one device, climbing the ladder until a step confirms. The driver is
 * called synchronously from here (no await before the first send), so a
 * signal edge reaches the wire with nothing in between.
 */
export async function shedDevice(h: DeviceHandle, opts: ExecOptions, reads: PduReads, signal?: AbortSignal): Promise<ShedOutcome> {
  // a signal of its own (agent/abort-group.ts): no listener list shared by every device
  const o = signal ? { ...opts, signal } : opts;
  const t: ShedOutcome = { id: h.id, action: 'curtail', ok: false, dispatchAt: hrNow(), steps: [] };
  const record = (step: StepName, at: number, err?: unknown): void => {
    const e = err === undefined ? undefined : toRackpilotError(err, { device: h.id }).toJSON();
    const s = { step, at, ok: e === undefined, ...(e ? { error: e } : {}) };
    t.steps.push(s);
    if (e) t.error = e;
    o.onStep(h.id, s);
  };
  const attempts: StepName[] = ['curtail'];
  for (let i = 0; i < o.retries; i++) attempts.push('retry');
  for (const step of attempts) {
    if (o.signal.aborted) break;
    try {
      await curtailOnce(h, o, reads, t, step);
      record(step, hrNow());
      return finish(t, 'curtail');
    } catch (err) {
      record(step, hrNow(), err);
    }
  }
  if (!o.signal.aborted) {
    try {
      const previous = await alternative(h, o, t);
      if (previous) {
        t.previous = previous;
        record('alternative', hrNow());
        return finish(t, 'alternative');
      }
    } catch (err) {
      record('alternative', hrNow(), err);
    }
  }
  if (!o.signal.aborted && h.hardCut && h.feeds.length > 0) {
    try {
      t.cutOutlets = await cutOutlets(h, o, t);
      record('cut', hrNow());
      return finish(t, 'cut');
    } catch (err) {
      record('cut', hrNow(), err);
    }
  }
  const last = t.error;
  record('alarm', hrNow(), new RackpilotError('NOT_CONFIRMED', `${h.id}: not shed after ${t.steps.length} step(s); last: ${last?.message ?? 'no step possible'}`, { device: h.id }));
  return t;
}

function finish(t: ShedOutcome, via: ShedRecord['via']): ShedOutcome {
  t.ok = true;
  t.via = via;
  t.confirmAt = hrNow();
  delete t.error;
  return t;
}

/**
 * Brings one device back: its cut outlets first (each PDU spaces its own
 * switch-ons), then the driver's restore. A device whose outlet was cut gets
 * the whole deadline again after power returns (it boots).
 */
export async function restoreDevice(h: DeviceHandle, shed: ShedRecord | undefined, opts: ExecOptions, signal?: AbortSignal): Promise<ShedOutcome> {
  const o = signal ? { ...opts, signal } : opts;
  const t: ShedOutcome = { id: h.id, action: 'restore', ok: false, dispatchAt: hrNow(), steps: [] };
  const fail = (err: unknown): ShedOutcome => {
    const e = toRackpilotError(err, { device: h.id }).toJSON();
    const s = { step: 'restore' as const, at: hrNow(), ok: false, error: e };
    t.steps.push(s);
    t.error = e;
    o.onStep(h.id, s);
    return t;
  };
  try {
    if (shed?.via === 'cut') {
      for (const c of shed.outlets ?? []) {
        const f = h.feeds.find((x) => x.pdu.id === c.pdu && x.outlet === c.outlet);
        if (!f?.pdu.switchOutlet) throw new RackpilotError('CONFIG_INVALID', `${h.id}: outlet ${c.pdu}/${c.outlet} is no longer in its feed`, { device: h.id });
        await bounded(`${c.pdu} outlet ${c.outlet} on`, o.deadlineMs, o.signal, (x) => f.pdu.switchOutlet!(c.outlet, true, x));
      }
    }
    const d = h.driver;
    // an alternative action is undone first: the power target or profile in force before it
    const prev = shed?.via === 'alternative' ? shed.previous : undefined;
    if (prev?.powerTargetW !== undefined && d.setPowerTarget) {
      const w = prev.powerTargetW;
      await bounded(`${h.id} power target`, o.deadlineMs, o.signal, (x) => d.setPowerTarget!(w, x));
    } else if (prev?.profile !== undefined && d.setProfile) {
      const name = prev.profile;
      await bounded(`${h.id} profile`, o.deadlineMs, o.signal, (x) => d.setProfile!(name, x));
    }
    if (!d.restore) throw new RackpilotError('UNSUPPORTED', `${h.id}: no restore`, { device: h.id });
    const res = await bounded(`${h.id} restore`, o.deadlineMs, o.signal, d.restore.bind(d));
    t.ackAt = ackAt(t.dispatchAt, res.ackMs);
    o.onReading(h.id, res.reading, res.reading.ts);
  } catch (err) {
    return fail(err);
  }
  const s = { step: 'restore' as const, at: hrNow(), ok: true };
  t.steps.push(s);
  o.onStep(h.id, s);
  t.ok = true;
  t.confirmAt = s.at;
  return t;
}

const nextTick = (): Promise<void> => new Promise((r) => process.nextTick(r));

/**
 * Starts the action of every device after the first (already started), and
 * yields to the tick queue between devices: each device's send reaches the
 * OS as soon as its own driver has built it (drivers finish a send in
 * microtasks and ticks), instead of every send waiting for all the drivers'
 * synchronous parts. Same total work; the first and early sends go out at once.
 */
export async function fanOut(first: Promise<ShedOutcome>, todo: readonly DeviceHandle[], start: (h: DeviceHandle) => Promise<ShedOutcome>): Promise<ShedOutcome[]> {
  const jobs: Promise<ShedOutcome>[] = [first];
  for (let i = 1; i < todo.length; i++) {
    await nextTick();
    jobs.push(start(todo[i] as DeviceHandle));
  }
  return Promise.all(jobs);
}
