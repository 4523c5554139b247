/**
 * Sends curtail/restore to every capable device in parallel, each with its
 * own deadline and read-back confirmation, and keeps the rack's curtailment
 * state. A curtail preempts a restore in progress (shedding load wins); a
 * restore while a curtail runs is refused.
 */
import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import type { ActionName, ActionOptions, ActionResult, DeviceDriver } from '../drivers/contract.js';
import { RackpilotError, toRackpilotError } from '../drivers/lib/errors.js';
import type { EventType, RackState } from '../protocol/messages.js';

export interface DeviceOutcome {
  id: string;
  ok: boolean;
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

export class Dispatcher {
  state: RackState = 'running';
  since = Date.now();
  commandId: string | null = null;
  private inFlight: { action: ActionName; ctl: AbortController; done: Promise<ActionOutcome> } | undefined;
  private readonly targets: Record<ActionName, { id: string; act: (o: ActionOptions) => Promise<ActionResult> }[]>;

  constructor(
    devices: readonly DeviceDriver[],
    private readonly defaultDeadlineMs: number,
    private readonly emit: (e: DispatchEvent) => void,
    private readonly onState: () => void,
    private readonly log: Logger,
  ) {
    // precomputed once: the hot path does not filter devices
    const targets = (action: ActionName) =>
      devices.flatMap((d) => {
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

  private setState(state: RackState, commandId: string | null): void {
    this.state = state;
    this.commandId = commandId;
    this.since = Date.now();
    this.onState();
  }

  private async run(action: ActionName, req: DispatchRequest): Promise<ActionOutcome> {
    const current = this.inFlight;
    if (current) {
      if (current.action === 'restore' && action === 'curtail') {
        current.ctl.abort();
        await current.done.catch(() => undefined);
      } else {
        throw new RackpilotError('BUSY', `a ${current.action} is in progress (command ${this.commandId ?? 'local'}); retry when it ends`);
      }
    }
    const ctl = new AbortController();
    // every device's action listens on this one signal
    setMaxListeners(this.targets[action].length + 16, ctl.signal);
    const done = this.execute(action, req, ctl.signal);
    this.inFlight = { action, ctl, done };
    try {
      return await done;
    } finally {
      if (this.inFlight?.done === done) this.inFlight = undefined;
    }
  }

  private async execute(action: ActionName, req: DispatchRequest, signal: AbortSignal): Promise<ActionOutcome> {
    const deadlineMs = req.deadlineMs ?? this.defaultDeadlineMs;
    const { commandId, receivedAt } = req;
    this.setState(action === 'curtail' ? 'curtailing' : 'restoring', commandId);
    this.emit({ type: `${action}.started`, commandId, durationMs: Date.now() - receivedAt });
    const devices = await Promise.all(
      this.targets[action].map(async (d): Promise<DeviceOutcome> => {
        try {
          await d.act({ deadlineMs, signal });
          const tookMs = Date.now() - receivedAt;
          this.emit({ type: 'device.confirmed', commandId, device: d.id, durationMs: tookMs });
          return { id: d.id, ok: true, tookMs };
        } catch (err) {
          const e = toRackpilotError(err, { device: d.id }).toJSON();
          this.emit({ type: 'device.failed', commandId, device: d.id, durationMs: Date.now() - receivedAt, error: e });
          this.log.warn({ device: d.id, action, error: e }, 'device did not confirm');
          return { id: d.id, ok: false, error: e };
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
    this.emit({
      type: ok ? `${action}.completed` : `${action}.failed`,
      commandId,
      durationMs,
      ...(ok ? {} : { error: { code: 'NOT_CONFIRMED', message: `${failed} of ${devices.length} device(s) did not confirm ${action}` } }),
    });
    return { ok, durationMs, devices };
  }
}
