/**
 * Sends curtail/restore to every capable device in parallel, each with its
 * own deadline and read-back confirmation, and keeps the rack's curtailment
 * state. A curtail preempts a restore in progress (shedding load wins); a
 * second request for the action already running joins it; a restore while a
 * curtail runs is refused.
 */
import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import type { ActionName, ActionOptions, ActionResult, DeviceDriver, DeviceState, Reading } from '../drivers/contract.js';
import { withDeadline } from '../drivers/lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../drivers/lib/errors.js';
import type { EventType, RackState } from '../protocol/messages.js';

export interface DeviceOutcome {
  id: string;
  ok: boolean;
  /** From receipt of the request: until the driver was called, until the device acknowledged, until confirmed. */
  dispatchMs?: number;
  ackMs?: number;
  tookMs?: number;
  error?: { code: string; message: string };
}

export interface ActionOutcome {
  ok: boolean;
  durationMs: number;
  devices: DeviceOutcome[];
  /** True when a curtail took over before this action finished. */
  preempted?: boolean;
}

export interface DispatchEvent {
  type: EventType;
  commandId: string | null;
  device?: string;
  durationMs?: number;
  error?: { code: string; message: string };
}

export interface DispatchRequest {
  commandId: string | null;
  /** When the request reached the agent (ms epoch); durations count from here. */
  receivedAt: number;
  deadlineMs?: number;
}

export interface DispatcherOptions {
  devices: readonly DeviceDriver[];
  /** Default time each device has to confirm. */
  deadlineMs: number;
  log: Logger;
  onEvent: (e: DispatchEvent) => void;
  onState: () => void;
  /** The read-back that confirmed a device's action, and when that read-back was requested. */
  onReading: (deviceId: string, reading: Reading, requestedAt: number) => void;
}

type Target = { id: string; act: (o: ActionOptions) => Promise<ActionResult> };

const WANTED: Record<ActionName, DeviceState> = { curtail: 'curtailed', restore: 'running' };
/** Extra time a driver gets past its own action deadline before the dispatcher gives up on it. */
const DRIVER_GRACE_MS = 2_000;

export class Dispatcher {
  /** `unknown` until every curtail-capable device has been read fresh once (or an action ran). */
  state: RackState = 'unknown';
  since = Date.now();
  commandId: string | null = null;
  /** The last action that set the state, if any since start. */
  private lastAction: ActionName | undefined;
  private inFlight: { action: ActionName; commandId: string | null; ctl: AbortController; done: Promise<ActionOutcome> } | undefined;
  private readonly targets: Record<ActionName, Target[]>;

  constructor(private readonly o: DispatcherOptions) {
    // precomputed once: the hot path does not filter devices
    const targets = (action: ActionName): Target[] =>
      o.devices.flatMap((d) => {
        if (!d.capabilities[action]) return [];
        const act = action === 'curtail' ? d.curtail?.bind(d) : d.restore?.bind(d);
        return act ? [{ id: d.id, act }] : [];
      });
    this.targets = { curtail: targets('curtail'), restore: targets('restore') };
  }

  get busyWith(): ActionName | undefined {
    return this.inFlight?.action;
  }

  curtail(req: DispatchRequest): Promise<ActionOutcome> {
    return this.run('curtail', req);
  }

  restore(req: DispatchRequest): Promise<ActionOutcome> {
    return this.run('restore', req);
  }

  /**
   * Aligns the rack state with what the devices report while no action runs:
   * at start-up (`unknown` until then; the rack may already be asleep) and after a `partial`
   * outcome once every device has reached the wanted state.
   */
  reconcile(readings: ReadonlyMap<string, Reading>): void {
    if (this.inFlight) return;
    const last = this.lastAction;
    const states = this.targets[last ?? 'curtail'].map((t) => readings.get(t.id));
    if (states.some((r) => r === undefined || r.freshness !== 'fresh')) return;
    if (last === undefined) {
      const curtailed = states.filter((r) => r?.state === 'curtailed').length;
      const inferred: RackState = curtailed === 0 ? 'running' : curtailed === states.length ? 'curtailed' : 'partial';
      if (inferred !== this.state) this.setState(inferred, null);
      return;
    }
    if (this.state === 'partial' && states.every((r) => r?.state === WANTED[last])) {
      this.setState(last === 'curtail' ? 'curtailed' : 'running', this.commandId);
    }
  }

  private setState(state: RackState, commandId: string | null): void {
    this.state = state;
    this.commandId = commandId;
    this.since = Date.now();
    this.o.onState();
  }

  private async run(action: ActionName, req: DispatchRequest): Promise<ActionOutcome> {
    const current = this.inFlight;
    if (current) {
      if (current.action === action) return current.done;
      if (current.action !== 'restore') {
        throw new RackpilotError('BUSY', `a ${current.action} is in progress (command ${current.commandId ?? 'local'}); retry when it ends`);
      }
      current.ctl.abort();
    }
    const ctl = new AbortController();
    // every device's action listens on this one signal
    setMaxListeners(this.targets[action].length + 16, ctl.signal);
    // registered before any await, so a request arriving meanwhile joins this action
    const done = (async () => {
      if (current) await current.done.catch(() => undefined);
      return this.execute(action, req, ctl.signal);
    })();
    this.inFlight = { action, commandId: req.commandId, ctl, done };
    try {
      return await done;
    } finally {
      if (this.inFlight?.done === done) this.inFlight = undefined;
    }
  }

  private async execute(action: ActionName, req: DispatchRequest, signal: AbortSignal): Promise<ActionOutcome> {
    const deadlineMs = req.deadlineMs ?? this.o.deadlineMs;
    const { commandId, receivedAt } = req;
    const emit = this.o.onEvent;
    this.lastAction = action;
    this.setState(action === 'curtail' ? 'curtailing' : 'restoring', commandId);
    emit({ type: `${action}.started`, commandId, durationMs: Date.now() - receivedAt });
    const devices = await Promise.all(
      this.targets[action].map(async (d): Promise<DeviceOutcome> => {
        const dispatchMs = Date.now() - receivedAt;
        try {
          // the driver enforces deadlineMs itself; this outer bound only guards against a driver bug
          const res = await withDeadline(`${d.id} ${action}`, deadlineMs + DRIVER_GRACE_MS, (s) => d.act({ deadlineMs, signal: s }), signal);
          // the confirming read-back was requested at most one poll interval before it was taken
          this.o.onReading(d.id, res.reading, res.reading.ts);
          const tookMs = Date.now() - receivedAt;
          emit({ type: 'device.confirmed', commandId, device: d.id, durationMs: tookMs });
          return { id: d.id, ok: true, dispatchMs, ackMs: dispatchMs + res.ackMs, tookMs };
        } catch (err) {
          const e = toRackpilotError(err, { device: d.id }).toJSON();
          emit({ type: 'device.failed', commandId, device: d.id, durationMs: Date.now() - receivedAt, error: e });
          this.o.log.warn({ device: d.id, action, error: e }, 'device did not confirm');
          return { id: d.id, ok: false, dispatchMs, error: e };
        }
      }),
    );
    const durationMs = Date.now() - receivedAt;
    const ok = devices.every((o) => o.ok);
    if (signal.aborted) {
      // preempted by a curtail: that one now owns the state
      return { ok: false, durationMs, devices, preempted: true };
    }
    const failed = devices.filter((o) => !o.ok).length;
    this.setState(ok ? (action === 'curtail' ? 'curtailed' : 'running') : 'partial', commandId);
    emit({
      type: ok ? `${action}.completed` : `${action}.failed`,
      commandId,
      durationMs,
      ...(ok ? {} : { error: { code: 'NOT_CONFIRMED', message: `${failed} of ${devices.length} device(s) did not confirm ${action}` } }),
    });
    return { ok, durationMs, devices };
  }
}
