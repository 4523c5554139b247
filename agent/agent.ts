/**
 * Composition root: drivers from config, the telemetry poller, the signal
 * monitor, the curtailment engine, command intake and the MQTT bridge. Data
 * flows one way: signals/commands -> engine -> drivers -> events/results ->
 * bridge; poller -> engine (plans) and messages -> bridge.
 */
import os from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { DeviceDriver, DeviceState, Reading } from '../drivers/contract.js';
import { withDeadline } from '../drivers/lib/deadline.js';
import { toRackpilotError } from '../drivers/lib/errors.js';
import type { CommandResult, EventMessage, RackState } from '../protocol/messages.js';
import { rackTopics, type RackTopics } from '../protocol/topics.js';
import { createDevice } from './devices.js';
import { CommandHandler, type CommandMeta } from './commands.js';
import type { AgentConfig } from './config.js';
import { hrNow } from './engine/clock.js';
import { Engine, type EngineEvent } from './engine/engine.js';
import { EvidenceLog, type ActivationRecord } from './engine/evidence.js';
import { EngineStateStore } from './engine/state-store.js';
import { HealthEndpoint } from './health/endpoint.js';
import { stateMessage, statusMessage, telemetryMessage } from './messages.js';
import { MqttBridge } from './mqtt-bridge.js';
import { Spool } from './spool.js';
import type { SparkplugEdgeNode } from './sparkplug/edge-node.js';
import { Poller } from './poller.js';
import { keepCompiledCode } from './runtime.js';
import { SignalMonitor, type SignalChange } from './signals.js';
import { AGENT_VERSION } from './version.js';

const STOP_DEADLINE_MS = 5_000;

export class Agent {
  readonly topics: RackTopics;
  readonly devices: DeviceDriver[];
  readonly poller: Poller;
  readonly engine: Engine;
  readonly evidence: EvidenceLog;
  readonly evidenceDir: string;
  readonly spool: Spool;
  readonly bridge: MqttBridge;
  readonly signals: SignalMonitor;
  /**
   * Sparkplug B edge node (config `sparkplug.enabled`), on its own MQTT
   * connection; created at start(), and its module (with the Sparkplug
   * protobuf codec) only loaded then, so an agent without it does not carry it.
   */
  sparkplug: SparkplugEdgeNode | undefined;
  /** Local /healthz and /metrics (config `health`); `health.address()` is the bound port. */
  readonly health: HealthEndpoint;
  private readonly commands: CommandHandler;
  private seq = 0;
  private readonly reloaded: boolean;
  private lastDeviceStates = '';
  /** Before the engine acts, the rack state is inferred from readings (the rack may already be asleep). */
  private inferred: { state: RackState; since: number } = { state: 'unknown', since: Date.now() };
  /** The latest power of each meter streaming `powerW`, for the evidence log's 100 ms series. */
  private readonly meterW = new Map<string, number>();

  constructor(
    readonly config: AgentConfig,
    private readonly log: Logger,
    /** Activation records as each completes (benchmarks, tests). */
    hooks: {
      onActivation?: (r: ActivationRecord) => void;
      /** This agent replaces one stopped for a config reload: its first `status` says `reloaded`. */
      reloaded?: boolean;
    } = {},
  ) {
    const id = { site: config.site, rack: config.rack };
    this.reloaded = hooks.reloaded === true;
    this.topics = rackTopics(config.site, config.rack);
    this.devices = config.devices.map((dc) => createDevice(dc, log));
    this.poller = new Poller(
      this.devices,
      config.poll,
      (readings, stats) => {
        this.onCycle(readings);
        this.health.observeCycle(stats);
      },
      log.child({ component: 'poller' }),
    );
    const evidenceDir = config.evidence.dir ?? join(config.stateDir, 'evidence');
    this.evidenceDir = evidenceDir;
    this.evidence = new EvidenceLog({ ...config.evidence, dir: evidenceDir }, log.child({ component: 'evidence' }));
    const feeds = new Map(config.devices.map((dc) => [dc.id, (dc as { feed?: { pdu: string; outlet: string }[] }).feed ?? []]));
    this.engine = new Engine({
      devices: this.devices,
      feeds,
      config: config.engine,
      signals: config.signals,
      deadlineMs: config.actions.deadlineMs,
      store: new EngineStateStore(join(config.stateDir, 'engine-state.json')),
      evidence: this.evidence,
      log: log.child({ component: 'engine' }),
      latest: this.poller.latest,
      emit: (e) => this.onEvent(e),
      onState: () => this.publishState(),
      onReading: (deviceId, reading, requestedAt) => this.poller.offer(deviceId, reading, requestedAt),
      // telemetry waits while a wave's devices acknowledge their curtail
      onWave: (acked) => this.poller.holdUntil(acked),
      ...(hooks.onActivation ? { onActivation: hooks.onActivation } : {}),
    });
    this.signals = new SignalMonitor(config.signals, this.devices, (ch) => this.onSignalChange(ch), log.child({ component: 'signals' }));
    this.commands = new CommandHandler(
      this.engine,
      new Set(this.devices.map((d) => d.id)),
      config.engine.commandHoldOffMs,
      (r, m) => this.onResult(r, m),
      AGENT_VERSION,
      log.child({ component: 'commands' }),
      { security: config.security, target: `${config.site}/${config.rack}` },
    );
    const clientId = config.mqtt.clientId ?? `rackpilot-${config.site}-${config.rack}`;
    this.bridge = new MqttBridge(
      config.mqtt,
      this.topics,
      clientId,
      {
        onCommand: (payload, meta) => this.commands.handle(payload, meta),
        onConnected: () => this.onConnected(),
        onDisconnected: () => this.engine.onCentral(false),
        willPayload: () => JSON.stringify(statusMessage(id, false, 'connection-lost', AGENT_VERSION)),
      },
      log.child({ component: 'mqtt' }),
    );
    this.spool = new Spool({ ...config.spool, dir: config.spool.dir ?? join(config.stateDir, 'spool') }, log.child({ component: 'spool' }));
    this.health = new HealthEndpoint(
      config.health,
      {
        site: config.site,
        rack: config.rack,
        version: AGENT_VERSION,
        devices: this.devices,
        latest: this.poller.latest,
        readMs: this.poller.readMs,
        poll: config.poll,
        engine: this.engine,
        rackState: () => this.rackState,
        bridge: this.bridge,
        spool: this.spool,
        spoolOpen: () => this.spool.isOpen,
      },
      log.child({ component: 'health' }),
    );
    log.info({ host: os.hostname(), devices: this.devices.length, root: this.topics.root }, 'agent configured');
  }

  private get id() {
    return { site: this.config.site, rack: this.config.rack };
  }

  /** The Sparkplug B edge node when configured (fed from onCycle() and publishState(); started/stopped with the bridge). */
  private async createSparkplug(): Promise<SparkplugEdgeNode | undefined> {
    const { config, log } = this;
    if (!config.sparkplug.enabled) return undefined;
    const { SparkplugEdgeNode } = await import('./sparkplug/edge-node.js');
    return new SparkplugEdgeNode({
      config: config.sparkplug,
      mqtt: config.mqtt,
      site: config.site,
      rack: config.rack,
      stateDir: config.stateDir,
      agentVersion: AGENT_VERSION,
      devices: this.devices,
      latest: this.poller.latest,
      engine: this.engine,
      rackState: () => this.rackState,
      holdOffMs: config.engine.commandHoldOffMs,
      requireSigned: config.security.requireSigned,
      log: log.child({ component: 'sparkplug' }),
    });
  }

  async start(): Promise<void> {
    // the curtailment path runs rarely: once start-up code is dropped, compiled code is kept while it waits
    void keepCompiledCode();
    // a TLS file that is unreadable or unsafe is a config error: refused before any device is touched
    this.bridge.loadTls();
    this.sparkplug = await this.createSparkplug();
    // /healthz answers from here on: 503 with ready:false until the agent has started
    await this.health.start();
    await Promise.all(
      this.devices.map(async (d) => {
        try {
          await withDeadline(`${d.id} start`, this.config.poll.deadlineMs, () => d.start());
        } catch (err) {
          // a device that is down at start-up is polled (and reported unreachable) like any other
          this.log.warn({ device: d.id, error: toRackpilotError(err).message }, 'device start failed');
        }
      }),
    );
    this.evidence.start();
    this.watchMeters();
    // a curtailment in force before a restart is re-asserted before anything else
    await this.engine.start();
    this.signals.start();
    await this.openSpool();
    this.engine.onCentral(false); // until the first connect: counts towards the central-lost fallback
    this.bridge.start();
    this.sparkplug?.start(); // Sparkplug B (optional)
    this.poller.start();
    this.health.setReady(true);
  }

  /** Meters streaming `powerW` feed the evidence log's 100 ms rack power series. */
  private watchMeters(): void {
    for (const d of this.devices) {
      if (d.kind !== 'meter' || !d.onSignal || !d.signalChannels?.includes('powerW')) continue;
      this.unwatch.push(
        d.onSignal((s) => {
          if (s.channel !== 'powerW') return;
          if (s.fresh && Number.isFinite(s.value)) this.meterW.set(d.id, s.value);
          else this.meterW.delete(d.id);
          let sum = 0;
          for (const w of this.meterW.values()) sum += w;
          this.evidence.samplePower(this.meterW.size > 0 ? sum : null, hrNow());
        }),
      );
    }
  }

  private readonly unwatch: (() => void)[] = [];

  /** Opens the store-and-forward spool; an unusable one is logged and the agent runs without it (messages are dropped while offline). */
  private async openSpool(): Promise<void> {
    try {
      const r = await this.spool.open();
      if (r.corrupt.length > 0 || r.ackFileCorrupt) this.log.warn({ corrupt: r.corrupt, ackFileCorrupt: r.ackFileCorrupt }, 'spool: damaged records skipped');
      if (r.pending.telemetry + r.pending.events > 0) this.log.info({ pending: r.pending }, 'spool: messages from before the restart will be replayed');
      this.bridge.attachSpool(this.spool);
    } catch (err) {
      this.log.error({ error: toRackpilotError(err).toJSON() }, 'spool unusable: telemetry and events published while offline will be dropped');
    }
  }

  /** Takes over what `previous` (stopped, replaced on a config reload) remembers of commands: ids, results, nonces. */
  carryOver(previous: Agent): void {
    this.commands.adopt(previous.commands);
  }

  /** Stops everything; devices are left as they are. `reloading`: the process goes on with a new config (status reason). */
  async stop(reason: 'shutdown' | 'reloading' = 'shutdown'): Promise<void> {
    this.health.setReady(false);
    this.signals.stop();
    for (const off of this.unwatch.splice(0)) off();
    await this.poller.stop();
    await this.engine.stop();
    await this.evidence.stop();
    await this.bridge.stop(JSON.stringify(statusMessage(this.id, false, reason, AGENT_VERSION)));
    await this.sparkplug?.stop(); // Sparkplug B (optional): NDEATH
    await this.spool.close().catch(() => undefined);
    await Promise.all(
      this.devices.map((d) => withDeadline(`${d.id} stop`, STOP_DEADLINE_MS, () => d.stop()).catch(() => undefined)),
    );
    await this.health.close();
  }

  private onConnected(): void {
    this.engine.onCentral(true);
    const reason = this.bridge.stats.connects > 1 ? 'reconnected' : this.reloaded ? 'reloaded' : 'started';
    void this.bridge.publish(this.topics.status, JSON.stringify(statusMessage(this.id, true, reason, AGENT_VERSION)), { qos: 1, retain: true }, true);
    this.publishState();
  }

  private onCycle(readings: ReadonlyMap<string, Reading>): void {
    this.signals.observeReadings(readings);
    this.engine.onTelemetry(readings, this.signals.status());
    this.infer(readings);
    if (this.meterW.size === 0) {
      // no meter streams power: the evidence series falls back to the loads' telemetry sum (poll resolution)
      let sum = 0;
      let any = false;
      for (const d of this.devices) {
        const r = readings.get(d.id);
        if ((d.kind === 'asic' || d.kind === 'gpu') && r?.freshness === 'fresh' && r.powerW !== null) {
          sum += r.powerW;
          any = true;
        }
      }
      this.evidence.samplePower(any ? sum : null, hrNow());
    }
    const msg = telemetryMessage(this.id, this.devices, readings, this.seq++, this.config.poll.intervalMs);
    void this.bridge.publish(this.topics.telemetry, JSON.stringify(msg), { qos: 0, retain: false }, false, 'telemetry');
    const states = this.devices.map((d) => readings.get(d.id)?.state ?? ('unknown' satisfies DeviceState)).join(',');
    if (states !== this.lastDeviceStates) this.publishState();
    this.sparkplug?.update(); // Sparkplug B (optional): DDATA/NDATA by exception, DBIRTH/DDEATH
  }

  /**
   * Before the engine has acted or holds anything (e.g. just after start-up),
   * the rack state follows fresh readings of the curtail-capable devices:
   * all curtailed, some (partial), none (running); unknown until all were read.
   */
  private infer(readings: ReadonlyMap<string, Reading>): void {
    if (this.engine.engaged) return;
    const states = this.devices.filter((d) => d.capabilities.curtail).map((d) => readings.get(d.id));
    if (states.some((r) => r === undefined || r.freshness !== 'fresh')) return;
    const curtailed = states.filter((r) => r?.state === 'curtailed').length;
    const state: RackState = curtailed === 0 ? 'running' : curtailed === states.length ? 'curtailed' : 'partial';
    if (state !== this.inferred.state) {
      this.inferred = { state, since: Date.now() };
      this.publishState();
    }
  }

  get rackState(): RackState {
    return this.engine.engaged ? this.engine.state : this.inferred.state;
  }

  private publishState(): void {
    const e = this.engine;
    const engaged = e.engaged;
    const msg = stateMessage(
      this.id,
      this.rackState,
      engaged ? e.since : this.inferred.since,
      engaged ? e.commandId : null,
      this.devices,
      this.poller.latest,
      this.signals.status(),
      Date.now(),
      { demands: e.demandViews(), holdOffUntil: e.holdOffUntil, shed: [...e.shed.keys()] },
    );
    this.lastDeviceStates = msg.devices.map((x) => x.state).join(',');
    void this.bridge.publish(this.topics.state, JSON.stringify(msg), { qos: 1, retain: true }, true);
    this.sparkplug?.update(); // Sparkplug B (optional): rack state and demands
  }

  private onEvent(e: EngineEvent): void {
    const msg: EventMessage = { ts: new Date().toISOString(), site: this.config.site, rack: this.config.rack, ...e };
    // rack-level events at info; per-device ones at debug (one per device per command)
    if (e.device === undefined) this.log.info({ event: e.type, commandId: e.commandId, durationMs: e.durationMs }, 'curtailment event');
    else this.log.debug({ event: e.type, device: e.device, durationMs: e.durationMs }, 'device event');
    void this.bridge.publish(this.topics.events, JSON.stringify(msg), { qos: 1, retain: false }, true, 'event');
  }

  /** A signal condition changed: logged, published on `events`, and reflected in the retained state. */
  private onSignalChange(ch: SignalChange): void {
    // the hot path first: the engine dispatches before anything is logged or published
    this.engine.onSignal(ch.type, ch.signal, ch.measuredAt, ch.value);
    const now = Date.now();
    // A wave that went out (this signal's or one before) is read first: the event and the state message
    // (256 devices) wait for its answers, and still go out before its curtail.started, which waits for
    // the state file as well.
    const wave = this.engine.answersPending;
    if (wave) void wave.then(() => this.publishSignal(ch, now));
    else setImmediate(() => this.publishSignal(ch, now));
  }

  /** `now`: when the agent saw the change (its latency is counted to then). */
  private publishSignal(ch: SignalChange, now: number): void {
    const msg: EventMessage = {
      ts: new Date(now).toISOString(),
      site: this.config.site,
      rack: this.config.rack,
      type: ch.type,
      commandId: null,
      device: ch.source,
      signal: ch.signal,
      channel: ch.channel,
      value: ch.value,
      reason: ch.reason,
      measuredAt: new Date(ch.measuredAt).toISOString(),
      latencyMs: Math.max(0, now - ch.measuredAt),
    };
    this.log.info({ event: ch.type, signal: ch.signal, source: ch.source, value: ch.value, reason: ch.reason }, 'signal');
    void this.bridge.publish(this.topics.events, JSON.stringify(msg), { qos: 1, retain: false }, true, 'event');
    this.publishState();
  }

  private onResult(r: CommandResult, meta: CommandMeta): void {
    this.health.onResult(r);
    const payload = JSON.stringify(r);
    // like events: spooled to disk while the broker is unreachable, so a result survives a restart too
    void this.bridge.publish(this.topics.cmdResult, payload, { qos: 1, retain: false }, true, 'event');
    if (meta.responseTopic) void this.bridge.reply(meta.responseTopic, meta.correlationData, payload);
  }
}
