/**
 * Intake of commands from central control: size cap, retained check, JSON,
 * envelope and per-command params schemas, expiry, duplicate ids; then
 * `accepted` and exactly one final result. Intake is synchronous so a slow
 * command never blocks the MQTT client's message loop.
 */
import type { Logger } from 'pino';
import { z } from 'zod';
import { toRackpilotError } from '../drivers/lib/errors.js';
import {
  COMMAND_NAMES,
  commandEnvelopeSchema,
  commandParamsSchemas,
  type CommandName,
  type CommandResult,
  type DeviceOutcome,
  type CommandStatus,
} from '../protocol/messages.js';
import { formatPath } from './config.js';
import { hrNow } from './engine/clock.js';
import type { Engine, WaveOutcome } from './engine/engine.js';
import type { ShedOutcome } from './engine/executor.js';
import type { Demand } from './engine/types.js';

export const MAX_COMMAND_BYTES = 64 * 1024;
const RECENT_IDS = 1000;

export interface CommandMeta {
  retain: boolean;
  /** MQTT 5 response topic and correlation data, when the request carried them. */
  responseTopic?: string | undefined;
  correlationData?: Buffer | undefined;
}

export type ResultSink = (result: CommandResult, meta: CommandMeta) => void;

function zodFirst(err: z.ZodError, prefix: string): string {
  return err.issues
    .map((i) => `${formatPath([prefix, ...i.path].filter((p) => p !== ''))}: ${i.message.replace(/^Invalid input: /, '')}`)
    .join('; ');
}

export class CommandHandler {
  private readonly recent = new Map<string, CommandStatus>();

  constructor(
    private readonly engine: Engine,
    /** Device ids of this rack: a command naming another is refused. */
    private readonly deviceIds: ReadonlySet<string>,
    /** Hold-off after a command's demand clears (config engine.commandHoldOffMs). */
    private readonly holdOffMs: number,
    private readonly sink: ResultSink,
    private readonly agentVersion: string,
    private readonly log: Logger,
    private readonly now: () => number = hrNow,
  ) {}

  private send(
    meta: CommandMeta,
    id: string | null,
    command: string | null,
    status: CommandStatus,
    extra: Pick<CommandResult, 'error' | 'result'> = {},
  ): void {
    // only commands that got past intake are remembered: a rejected one may be fixed and resent with its id
    if (id !== null && status !== 'rejected' && status !== 'expired') this.remember(id, status);
    this.sink({ id, command, status, ...extra, ts: new Date(this.now()).toISOString() }, meta);
  }

  private remember(id: string, status: CommandStatus): void {
    this.recent.delete(id);
    this.recent.set(id, status);
    if (this.recent.size > RECENT_IDS) {
      const oldest = this.recent.keys().next().value;
      if (oldest !== undefined) this.recent.delete(oldest);
    }
  }

  handle(payload: Buffer, meta: CommandMeta): void {
    const receivedAt = this.now();
    if (payload.length === 0) {
      // an empty (retained) message is how a retained command is cleared: nothing to answer
      this.log.debug('ignoring empty command payload');
      return;
    }
    const reject = (id: string | null, command: string | null, code: string, message: string): void => {
      this.log.debug({ id, code }, 'command rejected');
      this.send(meta, id, command, 'rejected', { error: { code, message } });
    };
    if (payload.length > MAX_COMMAND_BYTES) {
      reject(null, null, 'PAYLOAD_TOO_LARGE', `command payload is ${payload.length} bytes; the limit is ${MAX_COMMAND_BYTES}`);
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(payload.toString('utf8'));
    } catch (err) {
      reject(null, null, 'INVALID_JSON', `command payload is not JSON: ${(err as Error).message}`);
      return;
    }
    const rawId = json && typeof json === 'object' ? (json as { id?: unknown }).id : undefined;
    const id = typeof rawId === 'string' && rawId.length > 0 && rawId.length <= 128 ? rawId : null;
    const rawCmd = json && typeof json === 'object' ? (json as { command?: unknown }).command : undefined;
    const cmdName = typeof rawCmd === 'string' ? rawCmd : null;
    if (meta.retain) {
      reject(id, cmdName, 'RETAINED_COMMAND', 'commands must not be published with the retain flag: clear it (publish an empty retained message to this topic) and publish the command again without retain');
      return;
    }
    const env = commandEnvelopeSchema.safeParse(json);
    if (!env.success) {
      reject(id, cmdName, 'INVALID_COMMAND', zodFirst(env.error, ''));
      return;
    }
    const cmd = env.data;
    if (!(COMMAND_NAMES as readonly string[]).includes(cmd.command)) {
      reject(cmd.id, cmd.command, 'UNKNOWN_COMMAND', `command: unknown command "${cmd.command}" (known: ${COMMAND_NAMES.join(', ')})`);
      return;
    }
    const name = cmd.command as CommandName;
    const params = commandParamsSchemas[name].safeParse(cmd.params ?? {});
    if (!params.success) {
      reject(cmd.id, name, 'INVALID_PARAMS', zodFirst(params.error, 'params'));
      return;
    }
    const unknown = ((params.data as { devices?: string[] }).devices ?? []).filter((d) => !this.deviceIds.has(d));
    if (unknown.length > 0) {
      reject(cmd.id, name, 'INVALID_PARAMS', `params.devices: no device ${unknown.slice(0, 10).map((d) => `"${d}"`).join(', ')} in this rack`);
      return;
    }
    const previous = this.recent.get(cmd.id);
    if (previous !== undefined) {
      reject(cmd.id, name, 'DUPLICATE_ID', `command id "${cmd.id}" was already handled (last status: ${previous}); use a new id`);
      return;
    }
    if (cmd.expiresAt !== undefined) {
      const exp = typeof cmd.expiresAt === 'number' ? cmd.expiresAt : Date.parse(cmd.expiresAt);
      if (exp <= receivedAt) {
        this.send(meta, cmd.id, name, 'expired', {
          error: { code: 'EXPIRED', message: `command expired at ${new Date(exp).toISOString()}, received ${new Date(receivedAt).toISOString()}` },
        });
        return;
      }
    }
    this.send(meta, cmd.id, name, 'accepted');
    void this.execute(name, params.data, cmd.id, receivedAt, meta);
  }

  private async execute(name: CommandName, params: Params, id: string, receivedAt: number, meta: CommandMeta): Promise<void> {
    try {
      switch (name) {
        case 'ping':
          this.send(meta, id, name, 'succeeded', { result: { pong: true, agentVersion: this.agentVersion, durationMs: this.now() - receivedAt } });
          return;
        case 'curtail':
        case 'set-budget': {
          const p = params as { maxW?: number; devices?: string[]; durationMs?: number; startsAt?: string | number; timeoutMs?: number; budgetId?: string };
          const startsAt = p.startsAt === undefined ? undefined : typeof p.startsAt === 'number' ? p.startsAt : Date.parse(p.startsAt);
          const from = Math.max(startsAt ?? receivedAt, receivedAt);
          const demand: Demand = {
            key: name === 'set-budget' ? `budget:${p.budgetId ?? 'central'}` : `command:${id}`,
            source: startsAt !== undefined && startsAt > receivedAt ? 'schedule' : 'command',
            kind: p.maxW !== undefined ? 'budget' : 'shed',
            ...(p.maxW !== undefined ? { maxW: p.maxW } : {}),
            ...(p.devices ? { devices: [...new Set(p.devices)].sort() } : {}),
            since: receivedAt,
            ...(startsAt !== undefined && startsAt > receivedAt ? { startsAt } : {}),
            ...(p.durationMs !== undefined ? { until: from + p.durationMs } : {}),
            holdOffMs: this.holdOffMs,
            commandId: id,
          };
          const wave = this.engine.raise(demand, p.timeoutMs);
          if (demand.startsAt !== undefined) {
            this.send(meta, id, name, 'succeeded', { result: { scheduled: new Date(demand.startsAt).toISOString(), activation: null, holding: this.holding() } });
            return;
          }
          if (!wave) {
            this.send(meta, id, name, 'succeeded', { result: { activation: null, devices: [], durationMs: this.now() - receivedAt, holding: this.holding() } });
            return;
          }
          this.final(meta, id, name, await wave.done, receivedAt);
          return;
        }
        case 'restore':
          this.final(meta, id, name, await this.engine.restore(id, (params as { timeoutMs?: number }).timeoutMs), receivedAt);
          return;
        case 'clear-budget': {
          const cleared = this.engine.clearBudget((params as { budgetId?: string }).budgetId);
          this.send(meta, id, name, 'succeeded', { result: { cleared, holding: this.holding(), durationMs: this.now() - receivedAt } });
          return;
        }
      }
    } catch (err) {
      const e = toRackpilotError(err);
      this.send(meta, id, name, 'failed', { error: e.toJSON(), result: { holding: this.holding() } });
    }
  }

  private holding(): string[] {
    return this.engine.demandViews().map((d) => d.key);
  }

  /** The final result, once the engine state it reflects is on disk (persisted before reported). */
  private final(meta: CommandMeta, id: string, name: CommandName, out: WaveOutcome, receivedAt: number): void {
    this.engine.whenPersisted(() => this.finalNow(meta, id, name, out, receivedAt));
  }

  private finalNow(meta: CommandMeta, id: string, name: CommandName, out: WaveOutcome, receivedAt: number): void {
    const result = { activation: out.activation, devices: out.devices.map((d) => outcome(d, receivedAt)), durationMs: Math.round(this.now() - receivedAt) };
    if (out.ok) {
      this.send(meta, id, name, 'succeeded', { result });
      return;
    }
    const bad = out.devices.filter((d) => !d.ok);
    const error = out.preempted
      ? { code: 'PREEMPTED', message: `${name} was stopped by a new demand (${this.holding().join(', ')})` }
      : { code: 'NOT_CONFIRMED', message: `${bad.length} of ${out.devices.length} device(s) did not confirm ${name}: ${bad.map((d) => `${d.id}: ${d.error?.code ?? 'FAILED'}`).join(', ')}` };
    this.send(meta, id, name, 'failed', { result, error });
  }
}

type Params = Record<string, unknown>;

const r3 = (x: number): number => Math.max(0, Math.round(x * 1000) / 1000);

/** A device's timings relative to the command's receipt (sub-millisecond). */
function outcome(d: ShedOutcome, receivedAt: number): DeviceOutcome {
  return {
    id: d.id,
    ok: d.ok,
    dispatchMs: r3(d.dispatchAt - receivedAt),
    ...(d.ackAt !== undefined ? { ackMs: r3(d.ackAt - receivedAt) } : {}),
    ...(d.confirmAt !== undefined ? { tookMs: r3(d.confirmAt - receivedAt) } : {}),
    ...(d.via ? { via: d.via } : {}),
    steps: d.steps.map((s) => ({ step: s.step, ok: s.ok, atMs: r3(s.at - receivedAt), ...(s.error ? { error: s.error } : {}) })),
    ...(d.error ? { error: d.error } : {}),
  };
}
