/**
 * The agent as the signal-to-dispatch benchmark (engine-bench.ts) drives it:
 * an interface of what a trial needs (inject the signal, wait for every
 * device's acknowledgement, reset) and its implementation over the agent of
 * agent/agent.ts, in the bench's own process.
 */
import { join } from 'node:path';
import { pino } from 'pino';
import { Agent } from '../../agent/agent.js';
import { validateConfig } from '../../agent/config.js';
import type { ActivationRecord } from '../../agent/engine/evidence.js';
import type { DeviceDriver } from '../../drivers/contract.js';
import { softGpio, type SoftLine } from '../../drivers/gpio/soft.js';
import type { DeviceBlock } from '../sim/catalog.js';
import { hrNow } from './stats.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One trial's times per device id (bench clock). */
export interface AgentTrial {
  /** When each device acknowledged its curtail. */
  acks: Map<string, number>;
  /** When the engine called each device's driver (its activation record's dispatchAt). */
  dispatched: Map<string, number>;
}

/** The drivers-only baseline: the same drivers' curtail() called in a plain loop, no engine. */
export interface DriversTrial {
  /** When the loop started. */
  t0: number;
  /** When each device's curtail() was called. */
  called: Map<string, number>;
  /** When each device acknowledged (call time + the driver's ackMs). */
  acks: Map<string, number>;
  /** Devices whose curtail failed, with why. */
  failed: Map<string, string>;
}

/** What the benchmark needs of the agent; all times on the bench's clock (stats.hrNow). */
export interface AgentUnderTest {
  start(): Promise<void>;
  /** Injects the signal; returns when it was injected. */
  trigger(): number;
  /** Once every device acknowledged (or failed): when each acknowledged and when the engine called its driver. */
  waitAcked(): Promise<AgentTrial>;
  /**
   * Optional baseline: every device's driver curtail() called at once in a
   * plain loop, nothing of the engine on the way; resolves once every one
   * answered. Followed by restoreAll() like the floor.
   */
  curtailDriversOnly?(): Promise<DriversTrial>;
  /** Back to normal after the agent's trial (untimed): signal cleared, load restored by the agent, simulators reset. */
  reset(): Promise<void>;
  /** Every device back to running through the agent's drivers, whatever the agent believes (after the floor curtailed the rack behind its back). */
  restoreAll(): Promise<void>;
  stop(): Promise<void>;
  /**
   * Optional, around the untimed capture trial only: pause background work
   * (telemetry polling) so that nothing but the dispatch goes over the wire.
   */
  quiesce?(on: boolean): Promise<void>;
}

const TRIP_ID = 'bench-trip';
const TRIP_OFFSET = 7;
/** Each device's deadline to confirm a curtail or restore in the trials. */
const ACTION_DEADLINE_MS = 5_000;

export interface CurrentAgentOptions {
  devices: readonly DeviceBlock[];
  brokerUrl: string;
  pollMs: number;
  /** Devices read at once by a poll cycle (default: the config's default, as an operator gets it). */
  pollConcurrency?: number;
  /** Engine state and evidence log go here. */
  stateDir: string;
  simReset: () => Promise<void>;
}

/**
 * The agent (agent/agent.ts) behind AgentUnderTest: built from a config
 * object, a soft GPIO input with a signal condition on it (debounce 0, no
 * hold-off, restore in one step), acknowledgement times from the engine's
 * activation records.
 */
export class CurrentAgent implements AgentUnderTest {
  private agent: Agent | undefined;
  private readonly line: SoftLine;
  private readonly chip = `rackpilot-bench-${Math.random().toString(36).slice(2, 8)}`;
  private waiting: { resolve: (r: ActivationRecord) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;
  private record: Promise<ActivationRecord> | undefined;

  constructor(private readonly o: CurrentAgentOptions) {
    this.line = softGpio.chip(this.chip).line(TRIP_OFFSET);
  }

  private get a(): Agent {
    if (!this.agent) throw new Error('agent not started');
    return this.agent;
  }

  async start(): Promise<void> {
    const res = validateConfig({
      site: 'bench',
      rack: `curtail${this.o.devices.length}`,
      mqtt: { url: this.o.brokerUrl, protocolVersion: 4 },
      poll: { intervalMs: this.o.pollMs, deadlineMs: 3000, ...(this.o.pollConcurrency !== undefined ? { concurrency: this.o.pollConcurrency } : {}) },
      actions: { deadlineMs: ACTION_DEADLINE_MS },
      log: { level: 'silent' },
      stateDir: this.o.stateDir,
      health: { port: 0 },
      evidence: { dir: join(this.o.stateDir, 'evidence') },
      engine: { restore: { stepDevices: 4096, stepIntervalMs: 0 } },
      devices: [...this.o.devices, { id: TRIP_ID, driver: 'gpio', name: 'bench trip contact', backend: 'soft', chip: this.chip, offset: TRIP_OFFSET, direction: 'in', debounceMs: 0 }],
      signals: [{ id: TRIP_ID, source: TRIP_ID, channel: 'input', above: 0.5, forMs: 0, demand: 'shed', holdOffMs: 0 }],
    });
    if (!res.ok) throw new Error(`bench agent config: ${res.errors.join('; ')}`);
    const agent = new Agent(res.config, pino({ level: 'silent' }), {
      onActivation: (rec) => {
        if (rec.trigger.signal === TRIP_ID) this.onRecord(rec);
      },
    });
    this.agent = agent;
    await agent.start();
    // ready once every device has been read fresh and the rack reads as running
    const until = Date.now() + 120_000;
    while (agent.rackState !== 'running') {
      if (Date.now() > until) throw new Error(`the rack did not read as running within 120 s (state ${agent.rackState})`);
      await sleep(50);
    }
  }

  private onRecord(rec: ActivationRecord): void {
    const w = this.waiting;
    if (!w) return;
    this.waiting = undefined;
    clearTimeout(w.timer);
    w.resolve(rec);
  }

  trigger(): number {
    if (this.waiting) throw new Error('trigger() while the previous trial is still waiting');
    this.record = new Promise<ActivationRecord>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`no activation record within ${ACTION_DEADLINE_MS * 4} ms of the signal`));
      }, ACTION_DEADLINE_MS * 4);
      this.waiting = { resolve, reject, timer };
    });
    const at = hrNow();
    // the GPIO edge: signal monitor -> engine -> drivers, all on the agent's own path
    this.line.set(1);
    return at;
  }

  async waitAcked(): Promise<AgentTrial> {
    const pending = this.record;
    if (!pending) throw new Error('waitAcked() before trigger()');
    this.record = undefined;
    const rec = await pending;
    const acks = new Map<string, number>();
    const dispatched = new Map<string, number>();
    for (const d of rec.devices) {
      dispatched.set(d.id, d.dispatchAt);
      if (d.ok && d.ackAt !== undefined) acks.set(d.id, d.ackAt);
    }
    // ackAt: when the device's answer arrived (an armed curtail), or when the driver's send resolved (a plain one).
    // Not the first read-back: a wave's read-backs wait for all its acknowledgements (WaveAcks).
    return { acks, dispatched };
  }

  async curtailDriversOnly(): Promise<DriversTrial> {
    const ids = new Set(this.o.devices.map((d) => d.id));
    const drivers = this.a.devices.filter((d) => ids.has(d.id) && d.capabilities.curtail);
    const called = new Map<string, number>();
    const acks = new Map<string, number>();
    const failed = new Map<string, string>();
    const all: Promise<void>[] = [];
    const t0 = hrNow();
    for (const d of drivers) {
      const at = hrNow();
      called.set(d.id, at);
      all.push(
        (d.curtail as NonNullable<DeviceDriver['curtail']>).call(d, { deadlineMs: ACTION_DEADLINE_MS }).then(
          (r) => {
            acks.set(d.id, Math.min(at + r.ackMs, hrNow()));
          },
          (err: unknown) => {
            failed.set(d.id, err instanceof Error ? err.message : String(err));
          },
        ),
      );
    }
    await Promise.all(all);
    return { t0, called, acks, failed };
  }

  async reset(): Promise<void> {
    this.line.set(0);
    // the signal's demand clears; no hold-off, the restore ramp runs in one step
    const out = await this.a.engine.restore(null);
    if (!out.ok) {
      const bad = out.devices.filter((d) => !d.ok);
      throw new Error(`restore between trials failed on ${bad.length} device(s): ${bad.slice(0, 3).map((d) => `${d.id} ${d.error?.message ?? ''}`).join('; ')}`);
    }
    await this.o.simReset();
  }

  async restoreAll(): Promise<void> {
    const failed: string[] = [];
    await Promise.all(
      this.a.devices.map(async (d) => {
        if (!d.capabilities.restore || !d.restore) return;
        try {
          await d.restore({ deadlineMs: ACTION_DEADLINE_MS });
        } catch (err) {
          failed.push(`${d.id}: ${err instanceof Error ? err.message : String(err)}`);
        }
      }),
    );
    if (failed.length > 0) throw new Error(`restore after the floor failed on ${failed.length} device(s): ${failed.slice(0, 3).join('; ')}`);
    await this.o.simReset();
  }

  async quiesce(on: boolean): Promise<void> {
    const a = this.a;
    if (on) {
      await a.poller.stop();
      return;
    }
    const before = a.poller.lastCycle?.startedAt;
    a.poller.start();
    // let the cycle that start() runs at once finish before the next timed trial
    const until = Date.now() + 60_000;
    while (a.poller.lastCycle?.startedAt === before && Date.now() < until) await sleep(20);
  }

  async stop(): Promise<void> {
    const a = this.agent;
    this.agent = undefined;
    await a?.stop();
  }
}
