/**
 * Writes from a Sparkplug host (NCMD/DCMD metrics) mapped to the same engine
 * actions as our own commands (agent/commands.ts):
 *
 *   NCMD `Rack Control/Curtail` true   -> shed the rack   (like `curtail`)
 *   NCMD `Rack Control/Curtail` false  -> engine.restore  (like `restore`: ends every command curtailment)
 *   NCMD `Rack Control/Budget W` N > 0 -> budget demand `budget:sparkplug` (like `set-budget`)
 *   NCMD `Rack Control/Budget W` 0     -> engine.clearBudget('sparkplug') (like `clear-budget`)
 *   DCMD `Control/Curtail` true        -> shed that device (a device-subset `curtail`)
 *   DCMD `Control/Curtail` false       -> ends that device's Sparkplug demand (load returns after the hold-off)
 *
 * Sparkplug commands are unsigned (the protocol has no signature): with
 * `security.requireSigned` every write is refused and logged; only
 * `Node Control/Rebirth` (no action on the rack) is honoured.
 */
import type { Logger } from 'pino';
import { toRackpilotError } from '../../drivers/lib/errors.js';
import type { Engine, Wave } from '../engine/engine.js';
import type { Demand } from '../engine/types.js';
import { DEVICE_CURTAIL, RACK_BUDGET, RACK_CURTAIL } from './metrics.js';

const KEY_PREFIX = 'command:sparkplug-';
export const BUDGET_ID = 'sparkplug';
const MAX_BUDGET_W = 2_147_483_647;

export interface WritesOptions {
  engine: Engine;
  /** config engine.commandHoldOffMs */
  holdOffMs: number;
  deviceIds: ReadonlySet<string>;
  /** Null when writes are accepted, else why not. */
  refusal: string | null;
  log: Logger;
}

export type WriteOutcome = 'done' | 'refused' | 'invalid';

export class SparkplugWrites {
  private n = 0;
  private rackKey: string | undefined;
  private readonly deviceKeys = new Map<string, string>();
  private refused = 0;
  /** Counters for health and tests. */
  readonly stats = { applied: 0, refused: 0, invalid: 0 };

  constructor(private readonly o: WritesOptions) {
    // demands raised before a restart (persisted by the engine) are ours again
    for (const d of o.engine.demands.list()) {
      if (!d.key.startsWith(KEY_PREFIX)) continue;
      if (d.devices?.length === 1 && d.devices[0] !== undefined) this.deviceKeys.set(d.devices[0], d.key);
      else if (!d.devices) this.rackKey = d.key;
    }
  }

  get curtailHeld(): boolean {
    return this.rackKey !== undefined && this.o.engine.demands.has(this.rackKey);
  }

  deviceHeld(id: string): boolean {
    const k = this.deviceKeys.get(id);
    return k !== undefined && this.o.engine.demands.has(k);
  }

  get budgetW(): number {
    return this.o.engine.demands.get(`budget:${BUDGET_ID}`)?.maxW ?? 0;
  }

  /** An NCMD metric other than the rebirth request. */
  node(name: string, value: unknown): WriteOutcome {
    if (name === RACK_CURTAIL) {
      if (typeof value !== 'boolean') return this.invalid(name, value, 'expected a Boolean');
      if (this.refuse(name)) return 'refused';
      if (value) {
        if (!this.curtailHeld) this.rackKey = this.raise({ kind: 'shed' }, name);
      } else {
        const id = this.nextId();
        this.o.engine.restore(id).then(
          (out) => this.o.log.info({ commandId: id, ok: out.ok, activation: out.activation }, 'sparkplug: restore done'),
          (err) => this.o.log.warn({ commandId: id, error: toRackpilotError(err).toJSON() }, 'sparkplug: restore did not bring load back'),
        );
      }
      return this.applied();
    }
    if (name === RACK_BUDGET) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_BUDGET_W) return this.invalid(name, value, 'expected an integer number of watts, 0 to clear');
      if (this.refuse(name)) return 'refused';
      if (value === 0) this.o.engine.clearBudget(BUDGET_ID);
      else this.raise({ kind: 'budget', maxW: value }, name, `budget:${BUDGET_ID}`);
      return this.applied();
    }
    return this.invalid(name, value, 'not a writable node metric');
  }

  /** A DCMD metric of device `id`. */
  device(id: string, name: string, value: unknown): WriteOutcome {
    if (!this.o.deviceIds.has(id)) return this.invalid(name, value, `no device "${id}" in this rack`);
    if (name !== DEVICE_CURTAIL) return this.invalid(name, value, 'not a writable device metric');
    if (typeof value !== 'boolean') return this.invalid(name, value, 'expected a Boolean');
    if (this.refuse(name)) return 'refused';
    if (value) {
      if (!this.deviceHeld(id)) this.deviceKeys.set(id, this.raise({ kind: 'shed', devices: [id] }, `${id}: ${name}`));
    } else {
      const k = this.deviceKeys.get(id);
      if (k !== undefined) this.o.engine.clear(k, `sparkplug DCMD ${id} ${DEVICE_CURTAIL} false`);
      this.deviceKeys.delete(id);
    }
    return this.applied();
  }

  private nextId(): string {
    let id: string;
    do id = `sparkplug-${++this.n}`;
    while (this.o.engine.demands.has(`command:${id}`));
    return id;
  }

  /** Raises a demand like a command would; returns its key. */
  private raise(what: Pick<Demand, 'kind' | 'maxW' | 'devices'>, label: string, key?: string): string {
    const id = this.nextId();
    const demand: Demand = { key: key ?? `command:${id}`, source: 'command', ...what, since: Date.now(), holdOffMs: this.o.holdOffMs, commandId: id };
    const wave: Wave | null = this.o.engine.raise(demand);
    wave?.done.then(
      (out) => this.o.log.info({ commandId: id, write: label, ok: out.ok, activation: out.activation }, 'sparkplug: write applied'),
      (err) => this.o.log.warn({ commandId: id, write: label, error: toRackpilotError(err).toJSON() }, 'sparkplug: write failed'),
    );
    return demand.key;
  }

  private refuse(name: string): boolean {
    if (this.o.refusal === null) return false;
    this.stats.refused++;
    // at most one warning per 100 refusals after the first: a chatty host cannot flood the log
    if (this.refused++ % 100 === 0) this.o.log.warn({ metric: name, refused: this.refused, reason: this.o.refusal }, 'sparkplug: write refused');
    return true;
  }

  private applied(): WriteOutcome {
    this.stats.applied++;
    return 'done';
  }

  private invalid(name: string, value: unknown, why: string): WriteOutcome {
    this.stats.invalid++;
    this.o.log.warn({ metric: name, value: typeof value === 'string' ? value.slice(0, 64) : String(value), why }, 'sparkplug: write ignored');
    return 'invalid';
  }
}
