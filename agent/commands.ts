/**
 * Intake of commands from central control: size cap, retained check, JSON,
 * envelope schema, signature and replay checks (protocol/signing.ts, config
 * `security`), per-command params schemas, recently seen ids (the earlier
 * result is re-sent, nothing runs twice), expiry; then `accepted` and
 * exactly one final result. Intake is synchronous so a slow command never
 * blocks the MQTT client's message loop.
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
import { canonicalJson, CommandVerifier, parsePublicKey, type JsonObject, type VerifyRejectCode } from '../protocol/signing.js';
import { formatPath, type SecurityConfig } from './config.js';
import { hrNow } from './engine/clock.js';
import type { Engine, WaveOutcome } from './engine/engine.js';
import type { ShedOutcome } from './engine/executor.js';
import type { Demand } from './engine/types.js';

export const MAX_COMMAND_BYTES = 64 * 1024;
/** Ids remembered with their last result (a duplicate gets it re-sent)... */
export const RECENT_IDS = 1000;
/** ...within this many bytes of results in all; commands still running are never forgotten. */
export const RECENT_BYTES = 16 * 1024 * 1024;
/** At most one warning per this period about refused signatures (with the count): an attacker cannot flood the log. */
const SECURITY_WARN_MS = 60_000;

export interface CommandMeta {
  retain: boolean;
  /** MQTT 5 response topic and correlation data, when the request carried them. */
  responseTopic?: string | undefined;
  correlationData?: Buffer | undefined;
}

export type ResultSink = (result: CommandResult, meta: CommandMeta) => void;

export interface CommandHandlerOptions {
  /** Epoch ms from the monotonic clock, for durations (default hrNow). */
  now?: () => number;
  /** The wall clock, for `expiresAt` and `issuedAt` (default Date.now). */
  wallNow?: () => number;
  /** Config `security`: with commandKeys, commands must be signed (protocol/signing.ts). Absent: unsigned commands are accepted, signatures ignored. */
  security?: SecurityConfig | undefined;
  /** "<site>/<rack>" of this agent: a command whose `target` differs is refused (WRONG_TARGET). */
  target?: string | undefined;
}

/** A command id seen recently: what it asked for, and the last result sent for it. */
interface Recent {
  fingerprint: string;
  last: CommandResult;
  running: boolean;
  bytes: number;
}

function zodFirst(err: z.ZodError, prefix: string): string {
  return err.issues
    .map((i) => `${formatPath([prefix, ...i.path].filter((p) => p !== ''))}: ${i.message.replace(/^Invalid input: /, '')}`)
    .join('; ');
}

export class CommandHandler {
  private readonly recent = new Map<string, Recent>();
  private recentBytes = 0;
  private readonly verifier: CommandVerifier;
  private readonly now: () => number;
  private readonly wallNow: () => number;
  private refused = { count: 0, warnedAt: -Infinity };

  constructor(
    private readonly engine: Engine,
    /** Device ids of this rack: a command naming another is refused. */
    private readonly deviceIds: ReadonlySet<string>,
    /** Hold-off after a command's demand clears (config engine.commandHoldOffMs). */
    private readonly holdOffMs: number,
    private readonly sink: ResultSink,
    private readonly agentVersion: string,
    private readonly log: Logger,
    o: CommandHandlerOptions = {},
  ) {
    this.now = o.now ?? hrNow;
    this.wallNow = o.wallNow ?? Date.now;
    const sec = o.security;
    const keys = new Map((sec?.commandKeys ?? []).map((k) => [k.id, parsePublicKey(k.publicKey)]));
    this.verifier = new CommandVerifier({
      keys,
      requireSigned: sec?.requireSigned ?? false,
      maxClockSkewMs: sec?.maxClockSkewMs ?? 30_000,
      replayWindowMs: sec?.replayWindowMs ?? 300_000,
      target: o.target,
      startedAt: this.wallNow(),
    });
    if (keys.size > 0) log.info({ keys: [...keys.keys()], requireSigned: sec?.requireSigned }, 'signed commands: verifying');
  }

  private send(
    meta: CommandMeta,
    id: string | null,
    command: string | null,
    status: CommandStatus,
    extra: Pick<CommandResult, 'error' | 'result'> = {},
  ): void {
    const result: CommandResult = { id, command, status, ...extra, ts: new Date(this.now()).toISOString() };
    // only accepted commands are remembered (accept() adds them): a rejected or expired one may be fixed and resent with its id
    if (id !== null && (status === 'succeeded' || status === 'failed')) this.settle(id, result);
    this.sink(result, meta);
  }

  /** Remembers an accepted command under its id, then answers `accepted`. */
  private accept(meta: CommandMeta, id: string, name: CommandName, fingerprint: string): void {
    const accepted: CommandResult = { id, command: name, status: 'accepted', ts: new Date(this.now()).toISOString() };
    this.forget(id);
    this.recent.set(id, { fingerprint, last: accepted, running: true, bytes: 128 });
    this.recentBytes += 128;
    this.evict();
    this.sink(accepted, meta);
  }

  /** The final result replaces `accepted` as the one a duplicate gets. */
  private settle(id: string, result: CommandResult): void {
    const e = this.recent.get(id);
    if (!e) return;
    this.forget(id);
    const bytes = JSON.stringify(result).length;
    this.recent.set(id, { ...e, last: result, running: false, bytes });
    this.recentBytes += bytes;
    this.evict();
  }

  private forget(id: string): void {
    const e = this.recent.get(id);
    if (!e) return;
    this.recent.delete(id);
    this.recentBytes -= e.bytes;
  }

  /** Oldest first, never one still running (its duplicate must not run it again). */
  private evict(): void {
    for (const [id, e] of this.recent) {
      if (this.recent.size <= RECENT_IDS && this.recentBytes <= RECENT_BYTES) return;
      if (!e.running) this.forget(id);
    }
  }

  /**
   * Takes over the recently seen command ids (with the results sent for them)
   * and the signature checks' nonces of the handler of an agent this one
   * replaces on a config reload, so a redelivered command is answered from
   * memory rather than run again. Call it once the previous agent stopped
   * (its commands have their final results).
   */
  adopt(previous: CommandHandler): void {
    for (const [id, e] of previous.recent) {
      if (e.running || this.recent.has(id)) continue;
      this.recent.set(id, e);
      this.recentBytes += e.bytes;
    }
    this.evict();
    this.verifier.adopt(previous.verifier);
  }

  /** A refused signature, replay or stale command: debug each, warn at most once a minute with the count. */
  private refusedSecurity(id: string | null, code: VerifyRejectCode): void {
    this.refused.count++;
    const t = this.now();
    if (t - this.refused.warnedAt < SECURITY_WARN_MS) return;
    this.log.warn({ id, code, refused: this.refused.count }, 'command refused by the signature checks (count since the last warning)');
    this.refused = { count: 0, warnedAt: t };
  }

  /** Never throws: every payload gets a result, or (an empty one) a debug log line. */
  handle(payload: Buffer, meta: CommandMeta): void {
    try {
      this.intake(payload, meta);
    } catch (err) {
      // a bug, not a bad command: still answered
      this.log.error({ err }, 'command intake failed');
      this.sink({ id: null, command: null, status: 'rejected', error: { code: 'INTERNAL', message: `command intake failed: ${(err as Error).message}` }, ts: new Date(this.now()).toISOString() }, meta);
    }
  }

  private intake(payload: Buffer, meta: CommandMeta): void {
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
    const wall = this.wallNow();
    const verdict = this.verifier.check(json as JsonObject, wall);
    if (!verdict.ok) {
      this.refusedSecurity(cmd.id, verdict.code);
      reject(cmd.id, cmd.command, verdict.code, verdict.message);
      return;
    }
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
    const fingerprint = fingerprintOf(name, params.data);
    const previous = this.recent.get(cmd.id);
    if (previous !== undefined) {
      if (previous.fingerprint !== fingerprint) {
        reject(cmd.id, name, 'DUPLICATE_ID', `command id "${cmd.id}" was already used for a different command (last status: ${previous.last.status}); use a new id`);
        return;
      }
      // a redelivery or a retry: nothing runs again, the last result sent for it is sent again (its own ts)
      this.log.debug({ id: cmd.id, status: previous.last.status }, 'duplicate command id: earlier result re-sent');
      this.sink(previous.last, meta);
      return;
    }
    if (cmd.expiresAt !== undefined) {
      const exp = typeof cmd.expiresAt === 'number' ? cmd.expiresAt : Date.parse(cmd.expiresAt);
      if (exp <= wall) {
        this.send(meta, cmd.id, name, 'expired', {
          error: { code: 'EXPIRED', message: `command expired at ${new Date(exp).toISOString()}, received ${new Date(wall).toISOString()}` },
        });
        return;
      }
    }
    this.accept(meta, cmd.id, name, fingerprint);
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

/** What a command asks for (name and validated params, defaults filled in): a retry with the same id must ask the same. */
function fingerprintOf(name: CommandName, params: unknown): string {
  try {
    return canonicalJson({ command: name, params });
  } catch {
    return JSON.stringify({ command: name, params });
  }
}

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
