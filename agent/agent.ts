/**
 * Composition root: drivers from config, the telemetry poller, the
 * dispatcher, command intake and the MQTT bridge. Data flows one way:
 * poller -> messages -> bridge; commands -> dispatcher -> drivers -> results.
 */
import os from 'node:os';
import type { Logger } from 'pino';
import type { DeviceDriver, DeviceState, DriverContext, Reading } from '../drivers/contract.js';
import { withDeadline } from '../drivers/lib/deadline.js';
import { toRackpilotError } from '../drivers/lib/errors.js';
import { findDriver } from '../drivers/registry.js';
import type { CommandResult, EventMessage } from '../protocol/messages.js';
import { rackTopics, type RackTopics } from '../protocol/topics.js';
import { AutoDevice } from './auto.js';
import { CommandHandler, type CommandMeta } from './commands.js';
import type { AgentConfig } from './config.js';
import { Dispatcher, type DispatchEvent } from './dispatcher.js';
import { stateMessage, statusMessage, telemetryMessage } from './messages.js';
import { MqttBridge } from './mqtt-bridge.js';
import { Poller } from './poller.js';
import { SignalMonitor, type SignalChange } from './signals.js';
import { AGENT_VERSION } from './version.js';

const STOP_DEADLINE_MS = 5_000;

export class Agent {
  readonly topics: RackTopics;
  readonly devices: DeviceDriver[];
  readonly poller: Poller;
  readonly dispatcher: Dispatcher;
  readonly bridge: MqttBridge;
  readonly signals: SignalMonitor;
  private readonly commands: CommandHandler;
  private seq = 0;
  private lastDeviceStates = '';

  constructor(
    readonly config: AgentConfig,
    private readonly log: Logger,
  ) {
    const id = { site: config.site, rack: config.rack };
    this.topics = rackTopics(config.site, config.rack);
    this.devices = config.devices.map((dc) => {
      const ctx: DriverContext = { logger: log.child({ device: dc.id, driver: dc.driver }), now: Date.now };
      if (dc.driver === 'auto') return new AutoDevice(dc, ctx);
      const def = findDriver(dc.driver);
      if (!def) throw new Error(`no driver "${dc.driver}" (config was validated against the registry)`);
      return def.create(dc, ctx);
    });
    this.poller = new Poller(this.devices, config.poll, (readings) => this.onCycle(readings), log.child({ component: 'poller' }));
    this.dispatcher = new Dispatcher({
      devices: this.devices,
      deadlineMs: config.actions.deadlineMs,
      log: log.child({ component: 'dispatch' }),
      onEvent: (e) => this.onEvent(e),
      onState: () => this.publishState(),
      onReading: (deviceId, reading, requestedAt) => this.poller.offer(deviceId, reading, requestedAt),
    });
    this.signals = new SignalMonitor(config.signals, this.devices, (ch) => this.onSignalChange(ch), log.child({ component: 'signals' }));
    this.commands = new CommandHandler(this.dispatcher, (r, m) => this.onResult(r, m), AGENT_VERSION, log.child({ component: 'commands' }));
    const clientId = config.mqtt.clientId ?? `rackpilot-${config.site}-${config.rack}`;
    this.bridge = new MqttBridge(
      config.mqtt,
      this.topics,
      clientId,
      {
        onCommand: (payload, meta) => this.commands.handle(payload, meta),
        onConnected: () => this.onConnected(),
        willPayload: () => JSON.stringify(statusMessage(id, false, 'connection-lost', AGENT_VERSION)),
      },
      log.child({ component: 'mqtt' }),
    );
    log.info({ host: os.hostname(), devices: this.devices.length, root: this.topics.root }, 'agent configured');
  }

  private get id() {
    return { site: this.config.site, rack: this.config.rack };
  }

  async start(): Promise<void> {
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
    this.signals.start();
    this.bridge.start();
    this.poller.start();
  }

  async stop(): Promise<void> {
    this.signals.stop();
    await this.poller.stop();
    await this.bridge.stop(JSON.stringify(statusMessage(this.id, false, 'shutdown', AGENT_VERSION)));
    await Promise.all(
      this.devices.map((d) => withDeadline(`${d.id} stop`, STOP_DEADLINE_MS, () => d.stop()).catch(() => undefined)),
    );
  }

  private onConnected(): void {
    const reason = this.bridge.stats.connects > 1 ? 'reconnected' : 'started';
    void this.bridge.publish(this.topics.status, JSON.stringify(statusMessage(this.id, true, reason, AGENT_VERSION)), { qos: 1, retain: true }, true);
    this.publishState();
  }

  private onCycle(readings: ReadonlyMap<string, Reading>): void {
    this.dispatcher.reconcile(readings);
    this.signals.observeReadings(readings);
    const msg = telemetryMessage(this.id, this.devices, readings, this.seq++, this.config.poll.intervalMs);
    void this.bridge.publish(this.topics.telemetry, JSON.stringify(msg), { qos: 0, retain: false });
    const states = this.devices.map((d) => readings.get(d.id)?.state ?? ('unknown' satisfies DeviceState)).join(',');
    if (states !== this.lastDeviceStates) this.publishState();
  }

  private publishState(): void {
    const d = this.dispatcher;
    const msg = stateMessage(this.id, d.state, d.since, d.commandId, this.devices, this.poller.latest, this.signals.status());
    this.lastDeviceStates = msg.devices.map((x) => x.state).join(',');
    void this.bridge.publish(this.topics.state, JSON.stringify(msg), { qos: 1, retain: true }, true);
  }

  private onEvent(e: DispatchEvent): void {
    const msg: EventMessage = { ts: new Date().toISOString(), site: this.config.site, rack: this.config.rack, ...e };
    // rack-level events at info; per-device ones at debug (one per device per command)
    if (e.device === undefined) this.log.info({ event: e.type, commandId: e.commandId, durationMs: e.durationMs }, 'curtailment event');
    else this.log.debug({ event: e.type, device: e.device, durationMs: e.durationMs }, 'device event');
    void this.bridge.publish(this.topics.events, JSON.stringify(msg), { qos: 1, retain: false }, true);
  }

  /** A signal condition changed: logged, published on `events`, and reflected in the retained state. */
  private onSignalChange(ch: SignalChange): void {
    const now = Date.now();
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
    void this.bridge.publish(this.topics.events, JSON.stringify(msg), { qos: 1, retain: false }, true);
    this.publishState();
  }

  private onResult(r: CommandResult, meta: CommandMeta): void {
    const payload = JSON.stringify(r);
    void this.bridge.publish(this.topics.cmdResult, payload, { qos: 1, retain: false }, true);
    if (meta.responseTopic) void this.bridge.reply(meta.responseTopic, meta.correlationData, payload);
  }
}
