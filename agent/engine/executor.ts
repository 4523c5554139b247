/**
 * Acts on one device for the engine, recording every step with hr-clock
 * times. Shedding climbs an escalation ladder until something confirms:
 * the driver's curtail (confirmed by read-back, then by the outlet's
 * measured power where a PDU outlet covers the device), `retries` more
 * curtails, the driver's alternative (lowest power target, else the
 * lowest-power profile), cutting its PDU outlet(s) when config allows a hard
 * cut for it, and finally an alarm. Restoring re-energizes a cut outlet first.
 */
import type { ActionOptions, ActionResult, ArmedAction, DeviceDriver, FiredAction, Reading } from '../../drivers/contract.js';
import { sleep, withDeadline } from '../../drivers/lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../../drivers/lib/errors.js';
import { BatchAnswers, sendBatch } from '../../drivers/lib/send-batch.js';
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
  /** Its curtail made ready ahead of a signal (kept current by the engine); taken when fired. */
  armed?: ArmedAction | undefined;
}

/** A device whose armed curtail is already on the wire: its first attempt waits for that one. */
export interface Fired {
  action: FiredAction;
  /** hrNow() when it was fired. */
  at: number;
  /**
   * hrNow() right after fire() returned: no earlier than the send, which the
   * action's ackMs counts from, so acknowledgement times taken from it are
   * never early (late by at most the fire's few microseconds).
   */
  sentBy: number;
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
  /** The wave's acknowledgement hold (curtail waves): the first curtail attempt of each device reports to it. */
  acks?: WaveAcks;
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

function bounded(
  what: string,
  deadlineMs: number,
  signal: AbortSignal,
  fn: (o: ActionOptions) => Promise<ActionResult>,
  hold?: AckHold,
): Promise<ActionResult> {
  // the driver enforces deadlineMs itself; this outer bound only guards against a driver bug
  return withDeadline(what, deadlineMs + DRIVER_GRACE_MS, (s) => fn(hold ? { deadlineMs, signal: s, confirmAfter: hold.all, onAck: hold.ack } : { deadlineMs, signal: s }), signal);
}

/** One device's part in a wave's acknowledgement hold (WaveAcks.member). */
export interface AckHold {
  /** Settles when the wave's read-backs may start. */
  all: Promise<void>;
  /** The device acknowledged (or its send failed for good); calls after the first count nothing. */
  ack: () => void;
}

/**
 * How long a wave's read-backs wait at most for the rest of the wave to
 * acknowledge: well past a whole wave's acknowledgements (256 devices: about
 * 170 ms, under the low-memory profile 230 ms, p99 300-450 ms), since a hold
 * that ends before them lets every read-back start while the last devices
 * are still answering their curtail (at 250 ms this stretched the slowest
 * waves' last acknowledgement from about 300 ms to 450 ms); short beside a
 * miner's seconds of winding down and the shed deadline.
 */
export const ACK_HOLD_MAX_MS = 1_000;

/**
 * Acknowledgements before confirmations: a wave's read-backs start once
 * every device of the wave acknowledged its curtail (or failed to), or
 * ACK_HOLD_MAX_MS after the wave began, whichever is first. Mining load is
 * shed by the commands; reading telemetry back sheds nothing, and its
 * (large) answers would otherwise queue ahead of later devices' answers, in
 * the devices' network and in this process. Real miners take seconds to
 * wind down, so the first read-back loses nothing by waiting.
 */
export class WaveAcks {
  readonly all: Promise<void>;
  private left: number;
  private release!: () => void;
  private readonly timer: NodeJS.Timeout;

  constructor(devices: number, maxMs = ACK_HOLD_MAX_MS) {
    this.left = devices;
    this.all = new Promise((r) => (this.release = r));
    this.timer = setTimeout(() => this.release(), maxMs);
    this.timer.unref();
    if (devices === 0) this.done();
  }

  /** One device's part in the hold. */
  member(): AckHold {
    let called = false;
    const ack = (): void => {
      if (called) return;
      called = true;
      if (--this.left <= 0) this.done();
    };
    return { all: this.all, ack };
  }

  private done(): void {
    clearTimeout(this.timer);
    this.release();
  }
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
async function curtailOnce(
  h: DeviceHandle,
  o: ExecOptions,
  reads: PduReads,
  t: ShedOutcome,
  step: StepName,
  fired?: Fired,
  hold?: AckHold,
): Promise<void> {
  const d = h.driver;
  if (!d.curtail) throw new RackpilotError('UNSUPPORTED', `${h.id}: no curtail`, { device: h.id });
  const started = Date.now();
  // the driver's ackMs counts from its call, or for a fired action from its send
  const calledAt = fired ? fired.sentBy : hrNow();
  const res = await bounded(`${h.id} curtail`, o.deadlineMs, o.signal, fired ? (x) => fired.action.complete(x) : d.curtail.bind(d), hold);
  t.ackAt ??= ackAt(calledAt, res.ackMs);
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
 * signal edge reaches the wire with nothing in between. `fired`: its armed
 * curtail is already on the wire; the first attempt finishes that one.
 */
export async function shedDevice(h: DeviceHandle, opts: ExecOptions, reads: PduReads, signal?: AbortSignal, fired?: Fired): Promise<ShedOutcome> {
  // a signal of its own (agent/abort-group.ts): no listener list shared by every device
  const o = signal ? { ...opts, signal } : opts;
  const t: ShedOutcome = { id: h.id, action: 'curtail', ok: false, dispatchAt: fired?.at ?? hrNow(), steps: [] };
  const record = (step: StepName, at: number, err?: unknown): void => {
    const e = err === undefined ? undefined : toRackpilotError(err, { device: h.id }).toJSON();
    const s = { step, at, ok: e === undefined, ...(e ? { error: e } : {}) };
    t.steps.push(s);
    if (e) t.error = e;
    o.onStep(h.id, s);
  };
  // a driver that does not report its acknowledgement is counted when its first attempt ends
  const hold = o.acks?.member();
  const attempts: StepName[] = ['curtail'];
  for (let i = 0; i < o.retries; i++) attempts.push('retry');
  for (const [i, step] of attempts.entries()) {
    if (o.signal.aborted) break;
    try {
      await curtailOnce(h, o, reads, t, step, i === 0 ? fired : undefined, i === 0 ? hold : undefined);
      record(step, hrNow());
      return finish(t, 'curtail');
    } catch (err) {
      record(step, hrNow(), err);
    } finally {
      hold?.ack();
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
const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));
/** Resolves when `p` settles (either way) or after `ms`, whichever is first. */
export function settledOrAfter(p: Promise<void>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    const done = (): void => {
      clearTimeout(timer);
      resolve();
    };
    p.then(done, done);
  });
}
/** Fired devices finished between two turns of the event loop (answers are read in between). */
const FINISH_SLICE = 16;
/**
 * How long the finishing of fired devices waits at most for the wave's
 * answers (FiredWave.answered): a device that does not answer holds up the
 * others' confirmation by this much, never their sends or acknowledgements.
 */
export const FINISH_WAIT_MAX_MS = 250;

/** The devices of a wave (those of its plan not shed or in flight yet) and the armed sends fired for them. */
export interface FiredWave {
  todo: DeviceHandle[];
  /** Index for index with `todo`: the armed action fired for it, if it had one. */
  fired: (Fired | undefined)[];
  /**
   * Settles once every exchange the fired sends started has ended (answered
   * or failed): their answers are read (and their times taken) by the
   * transports whether or not anyone waits for them yet.
   */
  answered: Promise<void>;
}

/**
 * Phase one of a wave: picks the plan's devices not already shed or in
 * flight and fires each one's armed curtail in the same synchronous loop, so
 * the first send leaves as soon as the first device is picked (the decision
 * time does not grow with the rack) and the sends reach the OS one right
 * after the other with nothing in between. Each armed action is used once
 * (the engine arms again later).
 */
export function fireArmed(plan: readonly DeviceHandle[], shed: ReadonlyMap<string, unknown>, pending: ReadonlyMap<string, unknown>): FiredWave {
  const todo: DeviceHandle[] = [];
  const fired: (Fired | undefined)[] = [];
  const answers = new BatchAnswers();
  // the transports attach what reads each answer once every send is out (drivers/lib/send-batch.ts)
  sendBatch(() => {
    for (let i = 0; i < plan.length; i++) {
      const h = plan[i] as DeviceHandle;
      if (shed.has(h.id) || pending.has(h.id)) continue;
      todo.push(h);
      const armed = h.armed;
      if (armed === undefined) {
        fired.push(undefined);
        continue;
      }
      h.armed = undefined;
      const at = hrNow();
      let f: Fired | undefined;
      try {
        const action = armed.fire();
        if (action !== undefined) f = { action, at, sentBy: hrNow() };
      } catch {
        // a driver bug must not cost the other devices their sends: this one gets its plain curtail
      }
      fired.push(f);
    }
  }, answers);
  return { todo, fired, answered: answers.all };
}

/**
 * Phase two: the devices not fired yet start their plain curtail first (they
 * have sent nothing), yielding to the tick queue between devices so that each
 * one's send reaches the OS as soon as its own driver has built it (drivers
 * finish a send in microtasks and ticks) instead of every send waiting for
 * all the drivers' synchronous parts. Then every fired device's action is
 * finished (deadlines, answer, read-back), once `answersIn` settles (the
 * engine's: the fired sends' answers all in, FiredWave.answered, or
 * FINISH_WAIT_MAX_MS passed; see settledOrAfter): finishing 256 devices
 * is ~10 ms of timers, signals and promises that would otherwise hold up the
 * reading of the answers still coming in. The answers are read and timed by
 * the transports meanwhile; nothing waits on them yet. Results are in `todo`
 * order.
 */
export async function fanOut(
  todo: readonly DeviceHandle[],
  fired: readonly (Fired | undefined)[],
  start: (h: DeviceHandle, fired?: Fired) => Promise<ShedOutcome>,
  answersIn?: Promise<void>,
): Promise<ShedOutcome[]> {
  const jobs = new Array<Promise<ShedOutcome>>(todo.length);
  let plain = 0;
  for (let i = 0; i < todo.length; i++) {
    if (fired[i] !== undefined) continue;
    if (plain++ > 0) await nextTick();
    jobs[i] = start(todo[i] as DeviceHandle);
  }
  if (answersIn) await answersIn;
  let n = 0;
  for (let i = 0; i < todo.length; i++) {
    const f = fired[i];
    if (f === undefined) continue;
    // the answers are coming in meanwhile: let the event loop take them every few devices
    if (++n % FINISH_SLICE === 0) await nextTurn();
    jobs[i] = start(todo[i] as DeviceHandle, f);
  }
  return Promise.all(jobs);
}
