/**
 * The curtailment engine's vocabulary: signal sources and commands produce
 * demands; the active demands combine (the most restrictive wins) into one
 * target; the planner turns the target into a plan (which device gets which
 * action); the executor dispatches it with escalation; the restore ramp
 * brings load back once every demand has cleared.
 */
import type { Capabilities, DeviceKind, Reading } from '../../drivers/contract.js';

import { DEMAND_SOURCES } from '../../protocol/messages.js';

export { DEMAND_SOURCES };
export type DemandSource = (typeof DEMAND_SOURCES)[number];

/** One reason to hold load down. */
export interface Demand {
  /** Unique among active demands: `signal:<id>`, `command:<commandId>`, `budget:<id>`, `central-lost`, `fail-safe`. */
  key: string;
  source: DemandSource;
  /** `shed`: everything sheddable (or `devices`); `budget`: rack power at most `maxW`. */
  kind: 'shed' | 'budget';
  /** budget: the rack power ceiling in watts. */
  maxW?: number;
  /** shed: only these device ids (a command's subset); absent: the whole rack. */
  devices?: string[];
  /** When the demand arose (signal: when the deciding sample was measured), epoch ms. */
  since: number;
  /** A scheduled window: the demand is active only from here (epoch ms). */
  startsAt?: number;
  /** The demand ends by itself at this time (a command's duration or window end), epoch ms. */
  until?: number;
  /** After this demand clears, load may come back only this much later. */
  holdOffMs: number;
  /** The command that created it, if any. */
  commandId?: string | null;
  /** signal: the deciding value (for the evidence log). */
  value?: number | null;
}

/** The combined target of every active demand. */
export interface Target {
  /** Shed every sheddable device. */
  shedAll: boolean;
  /** Devices to shed besides (subset demands), sorted. */
  shed: readonly string[];
  /** The lowest budget among active demands, watts; null when none. */
  maxW: number | null;
}

export const NO_TARGET: Target = { shedAll: false, shed: [], maxW: null };

/** What the planner knows about a device. */
export interface PlanDevice {
  id: string;
  kind: DeviceKind;
  capabilities: Capabilities;
  /** Latest reading (poll or confirming read-back), if any. */
  reading: Reading | undefined;
  /** Never touched by the engine (config `engine.protected`). */
  protected: boolean;
  /** Lower sheds earlier within its class (config `engine.priority`); default 0. */
  priority: number;
}

export type PlanAction = 'curtail';

export interface PlanStep {
  device: string;
  /** `curtail`: an ASIC goes to sleep; a GPU node is capped to its floor (never cut). */
  action: PlanAction;
  /** Expected saving in watts (from telemetry), used for budgets and the restore ramp. */
  savingW: number;
  /** Why it is in the plan, e.g. "shed-all", "budget: 41.2 J/TH". */
  reason: string;
}

export interface Plan {
  /** In dispatch order: least efficient mining first, GPUs last. */
  steps: PlanStep[];
  /** Rack power the plan started from (metered, else the loads' sum); null when unknown. */
  powerW: number | null;
  /** Expected rack power once applied; null when unknown. */
  expectedW: number | null;
  /** False when the budget cannot be met by shedding everything allowed. */
  sufficient: boolean;
}
