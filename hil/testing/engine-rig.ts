/**
 * In-memory devices and an engine built on them, for the engine's and the
 * command intake's unit tests (the wire protocols are covered by each
 * driver's own simulator tests; end-to-end tests use the simulators).
 */
import { join } from 'node:path';
import { pino } from 'pino';
import type { ActionOptions, ActionResult, Capabilities, DeviceDriver, DeviceKind, DeviceState, Reading } from '../../drivers/contract.js';
import { sleep } from '../../drivers/lib/deadline.js';
import { RackpilotError } from '../../drivers/lib/errors.js';
import { engineConfigSchema, type EngineConfig } from '../../agent/engine/config.js';
import { Engine, type EngineEvent } from '../../agent/engine/engine.js';
import { EvidenceLog, evidenceConfigSchema, type ActivationRecord } from '../../agent/engine/evidence.js';
import { EngineStateStore } from '../../agent/engine/state-store.js';
import type { SignalCondition } from '../../agent/signals.js';
import { signalConditionSchema } from '../../agent/signals.js';
import { tempDir } from './temp-dir.js';

export const inFlight = { now: 0, max: 0 };

/** An in-memory load: acts after `delayMs`; `stubborn` never confirms a curtail. */
export class FakeDevice implements DeviceDriver {
  readonly driverId = 'fake';
  readonly capabilities: Capabilities;
  state: DeviceState = 'running';
  stubborn = false;
  /** Fails every restore. */
  stuck = false;
  calls: string[] = [];
  constructor(
    readonly id: string,
    public delayMs = 20,
    readonly kind: DeviceKind = 'asic',
    public runningW = 3000,
    public hashrateThs = 100,
    caps: Partial<Capabilities> = {},
  ) {
    this.capabilities = { curtail: true, restore: true, powerTarget: null, profiles: false, switchOutlet: false, ...caps };
  }
  start(): Promise<void> {
    return Promise.resolve();
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  get powerW(): number {
    return this.state === 'curtailed' ? (this.kind === 'gpu' ? this.runningW / 2 : 25) : this.runningW;
  }
  reading(): Reading {
    const fields: Record<string, number> = this.kind === 'asic' ? { hashrateThs: this.state === 'curtailed' ? 0 : this.hashrateThs } : {};
    if (this.targetW !== undefined) fields.powerTargetW = this.targetW;
    return { ts: Date.now(), freshness: 'fresh', online: true, state: this.state, powerW: this.powerW, fields };
  }
  read(): Promise<Reading> {
    return Promise.resolve(this.reading());
  }
  private async act(want: DeviceState, o: ActionOptions, label: string): Promise<ActionResult> {
    this.calls.push(label);
    const t0 = Date.now();
    inFlight.max = Math.max(inFlight.max, ++inFlight.now);
    try {
      if ((want === 'curtailed' && this.stubborn) || (want === 'running' && this.stuck)) {
        await sleep(o.deadlineMs, o.signal).catch(() => undefined);
        throw new RackpilotError('NOT_CONFIRMED', `${this.id}: still ${this.state}`, { device: this.id });
      }
      await sleep(this.delayMs, o.signal);
      this.state = want;
      return { confirmed: true, ackMs: 0, tookMs: Date.now() - t0, reading: this.reading() };
    } finally {
      inFlight.now--;
    }
  }
  /** The power target in force (devices with capabilities.powerTarget); the draw follows it. */
  targetW: number | undefined;
  curtail(o: ActionOptions): Promise<ActionResult> {
    return this.act('curtailed', o, 'curtail');
  }
  async setPowerTarget(watts: number): Promise<ActionResult> {
    this.calls.push(`target:${watts}`);
    await sleep(this.delayMs);
    this.targetW = watts;
    this.runningW = watts;
    return { confirmed: true, ackMs: 1, tookMs: this.delayMs, reading: this.reading() };
  }
  restore(o: ActionOptions): Promise<ActionResult> {
    return this.act('running', o, 'restore');
  }
}

/** A PDU whose outlets feed FakeDevices: cutting an outlet takes its device's power away. */
export class FakePdu implements DeviceDriver {
  readonly kind = 'pdu' as const;
  readonly driverId = 'fake-pdu';
  readonly capabilities: Capabilities = { curtail: false, restore: false, powerTarget: null, profiles: false, switchOutlet: true };
  readonly on = new Map<string, boolean>();
  calls: string[] = [];
  constructor(
    readonly id: string,
    private readonly outlets: Record<string, FakeDevice>,
  ) {
    for (const k of Object.keys(outlets)) this.on.set(k, true);
  }
  start(): Promise<void> {
    return Promise.resolve();
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  reading(): Reading {
    const fields: Record<string, number | boolean> = {};
    for (const [k, d] of Object.entries(this.outlets)) {
      fields[`outlet${k}On`] = this.on.get(k) === true;
      fields[`outlet${k}PowerW`] = this.on.get(k) ? d.powerW : 0;
    }
    return { ts: Date.now(), freshness: 'fresh', online: true, state: 'running', powerW: null, fields };
  }
  read(): Promise<Reading> {
    return Promise.resolve(this.reading());
  }
  async switchOutlet(outlet: string, on: boolean): Promise<ActionResult> {
    this.calls.push(`${outlet}:${on ? 'on' : 'off'}`);
    await sleep(5);
    this.on.set(outlet, on);
    const d = this.outlets[outlet];
    if (d && !on) d.state = 'unreachable';
    return { confirmed: true, ackMs: 0, tookMs: 5, reading: this.reading() };
  }
}

export interface EngineRig {
  engine: Engine;
  events: EngineEvent[];
  activations: ActivationRecord[];
  /** Each wave's acknowledgement hold, as the engine handed it to onWave (the agent holds its poller on it). */
  waves: Promise<void>[];
  latest: Map<string, Reading>;
  stateDir: string;
  /** A fresh reading of every device into `latest`, then the engine's telemetry hook. */
  poll(): void;
  types(): string[];
  stop(): Promise<void>;
}

export interface RigOptions {
  engine?: Record<string, unknown>;
  signals?: Record<string, unknown>[];
  feeds?: Record<string, { pdu: string; outlet: string }[]>;
  stateDir?: string;
  deadlineMs?: number;
}

export function engineRig(devices: DeviceDriver[], o: RigOptions = {}): EngineRig {
  const stateDir = o.stateDir ?? tempDir('rp-engine-');
  const config: EngineConfig = engineConfigSchema.parse(o.engine ?? {});
  const signals: SignalCondition[] = (o.signals ?? []).map((s) => signalConditionSchema.parse(s));
  const events: EngineEvent[] = [];
  const activations: ActivationRecord[] = [];
  const waves: Promise<void>[] = [];
  const latest = new Map<string, Reading>();
  const log = pino({ level: 'silent' });
  const evidence = new EvidenceLog({ ...evidenceConfigSchema.parse({ postMs: 1000 }), dir: join(stateDir, 'evidence') }, log);
  evidence.start();
  const engine = new Engine({
    devices,
    feeds: new Map(Object.entries(o.feeds ?? {})),
    config,
    signals,
    deadlineMs: o.deadlineMs ?? 2000,
    store: new EngineStateStore(join(stateDir, 'engine-state.json')),
    evidence,
    log,
    latest,
    emit: (e) => events.push(e),
    onState: () => undefined,
    onReading: (id, r) => latest.set(id, r),
    onActivation: (r) => activations.push(r),
    onWave: (acked) => waves.push(acked),
  });
  const poll = (): void => {
    for (const d of devices) {
      const r = (d as { reading?: () => Reading }).reading?.();
      if (r) latest.set(d.id, r);
    }
    engine.onTelemetry(latest, []);
  };
  return {
    engine,
    events,
    activations,
    waves,
    latest,
    stateDir,
    poll,
    types: () => events.map((e) => e.type),
    stop: async () => {
      await engine.stop();
      await evidence.stop();
    },
  };
}
