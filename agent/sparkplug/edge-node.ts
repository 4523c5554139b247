/**
 * The rack as a Sparkplug B 3.0 edge node, on its own MQTT connection:
 *
 *  - CONNECT with clean session and the NDEATH as Will (QoS 1, not retained)
 *    carrying bdSeq (persisted, +1 per CONNECT, 255 -> 0); reconnects with
 *    our backoff (agent/concurrency.ts), never MQTT.js's fixed period.
 *  - Subscribes NCMD, DCMD (QoS 1) and, with `primaryHostId`, the host's
 *    STATE; births wait for that host to be online, and its going offline
 *    ends the session (NDEATH, disconnect, connect again with backoff).
 *  - NBIRTH (seq 0, bdSeq, `Node Control/Rebirth` false, rack metrics), then
 *    a DBIRTH per reachable device; afterwards NDATA/DDATA by exception each
 *    time `update()` is called (every telemetry cycle and engine change),
 *    DDEATH when a device becomes unreachable and DBIRTH when it is back.
 *  - seq +1 per message (255 -> 0), assigned in the order the messages are
 *    handed to the client (MQTT.js writes them in that order).
 *  - Every publish and subscribe has a deadline.
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { DeviceDriver, Reading } from '../../drivers/contract.js';
import { withDeadline } from '../../drivers/lib/deadline.js';
import { toRackpilotError } from '../../drivers/lib/errors.js';
import type { RackState } from '../../protocol/messages.js';
import { Reconnect } from '../reconnect.js';
import type { MqttConfig } from '../config.js';
import type { Engine } from '../engine/engine.js';
import { redactUrl } from '../mqtt-bridge.js';
import { loadTlsFiles } from '../tls-files.js';
import { BdSeqStore } from './bdseq.js';
import { decodeCommand, encode, type MetricValue, type OutMetric } from './codec.js';
import type { SparkplugConfig } from './config.js';
import { deviceMetrics, LastSent, nodeValues, NODE_METRICS, REBIRTH, type DeviceMetric, type MetricDef, type NodeKey } from './metrics.js';
import { NAMESPACE, sparkplugTopics, type SparkplugTopics } from './topics.js';
import { SparkplugWrites } from './writes.js';
import { baseClientOptions } from '../mqtt-options.js';

/** A connection must stay up this long before the reconnect backoff starts over. */

export interface EdgeNodeOptions {
  config: SparkplugConfig;
  /** The agent's MQTT block: broker, credentials, TLS and timeouts unless `sparkplug` overrides them. */
  mqtt: MqttConfig;
  site: string;
  rack: string;
  stateDir: string;
  agentVersion: string;
  devices: readonly DeviceDriver[];
  /** The latest reading of each device (the poller's map). */
  latest: ReadonlyMap<string, Reading>;
  engine: Engine;
  /** The rack state the agent reports (engine, or inferred from readings). */
  rackState: () => RackState;
  /** config engine.commandHoldOffMs */
  holdOffMs: number;
  /** config security.requireSigned: Sparkplug writes are unsigned, so they are refused. */
  requireSigned: boolean;
  log: Logger;
}

interface Dev {
  d: DeviceDriver;
  metrics: DeviceMetric[];
  byAlias: Map<number, string>;
}

export class SparkplugEdgeNode {
  readonly groupId: string;
  readonly edgeNodeId: string;
  readonly topics: SparkplugTopics;
  private readonly cfg: SparkplugConfig;
  private readonly url: string;
  private readonly clientId: string;
  private readonly bdSeqStore: BdSeqStore;
  private readonly writes: SparkplugWrites;
  private readonly devs: Dev[];
  private readonly nodeByAlias = new Map<number, string>(Object.values(NODE_METRICS).map((m) => [m.alias, m.name]));
  private readonly rbe = new LastSent();
  /** Devices with a DBIRTH in this Sparkplug session. */
  private readonly alive = new Set<string>();
  private client: MqttClient | undefined;
  private version: 4 | 5;
  private tls: Pick<IClientOptions, 'ca' | 'cert' | 'key'> | undefined;
  private stopping = false;
  private reconnect: Reconnect | undefined;
  private rebirthTimer: NodeJS.Timeout | undefined;
  connected = false;
  /** NBIRTH sent in this session (DATA may flow). */
  born = false;
  /** bdSeq of the current (or last) CONNECT. */
  bdSeq = -1;
  private seq = 0;
  private lastRebirthAt = -Infinity;
  /** The primary host's latest STATE (timestamp orders them). */
  private host: { online: boolean; timestamp: number } | undefined;
  /** Counters for health and tests. */
  readonly stats = { connects: 0, births: 0, rebirths: 0, published: 0, publishFailures: 0, hostOffline: 0 };

  constructor(private readonly o: EdgeNodeOptions) {
    this.cfg = o.config;
    this.groupId = o.config.groupId ?? o.site;
    this.edgeNodeId = o.config.edgeNodeId ?? `${o.site}-${o.rack}`;
    this.topics = sparkplugTopics(this.groupId, this.edgeNodeId);
    this.url = o.config.url ?? o.mqtt.url;
    this.clientId = o.config.clientId ?? `rackpilot-sp-${o.site}-${o.rack}`;
    this.version = o.config.protocolVersion === 4 ? 4 : 5;
    this.bdSeqStore = new BdSeqStore(join(o.stateDir, 'sparkplug-bdseq.json'), o.log);
    const refusal = o.requireSigned
      ? 'security.requireSigned is on and Sparkplug commands cannot be signed: use the signed rackpilot command topic'
      : !o.config.acceptWrites
        ? 'sparkplug.acceptWrites is false'
        : null;
    this.writes = new SparkplugWrites({ engine: o.engine, holdOffMs: o.holdOffMs, deviceIds: new Set(o.devices.map((d) => d.id)), refusal, log: o.log });
    this.devs = o.devices.map((d, i) => {
      const metrics = deviceMetrics(d, i);
      return { d, metrics, byAlias: new Map(metrics.map((m) => [m.alias, m.name])) };
    });
    if (refusal !== null && o.config.acceptWrites) o.log.warn({ reason: refusal }, 'sparkplug: writes from SCADA will be refused');
  }

  get writesAccepted(): boolean {
    return !this.o.requireSigned && this.cfg.acceptWrites;
  }

  /** Throws CONFIG_INVALID when a TLS file is unreadable or unsafe (agent/tls-files.ts). */
  start(): void {
    if (!this.tls) {
      const { files, warnings } = loadTlsFiles(this.o.mqtt.tls);
      for (const w of warnings) this.o.log.warn({ key: `mqtt.tls.${w.key}`, file: w.file }, w.message);
      this.tls = files;
    }
    this.stopping = false;
    this.reconnect ??= new Reconnect(this.o.mqtt.reconnect.minMs, this.o.mqtt.reconnect.maxMs, () => this.connect());
    this.reconnect.resume();
    this.connect();
  }

  /** A clean stop: the NDEATH is delivered (MQTT 5: DISCONNECT "with Will Message"; 3.1.1: published first). */
  async stop(): Promise<void> {
    this.stopping = true;
    this.reconnect?.stop();
    clearTimeout(this.rebirthTimer);
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    await this.endSession(client).catch(() => client.end(true));
  }

  private async endSession(client: MqttClient): Promise<void> {
    const ms = this.o.mqtt.publishTimeoutMs;
    if (this.connected && this.version === 4) {
      await withDeadline('publish NDEATH', ms, () => client.publishAsync(this.topics.node('NDEATH'), this.deathPayload(), { qos: 1, retain: false })).catch(() => undefined);
    }
    this.born = false;
    // 0x04: the broker publishes the Will (our NDEATH) although the disconnect is clean
    await withDeadline('disconnect', ms, () => client.endAsync(false, this.version === 5 ? { reasonCode: 4 } : {}));
  }

  private deathPayload(): Buffer {
    return encode({ timestamp: Date.now(), metrics: [{ name: 'bdSeq', type: 'Int64', value: this.bdSeq }] });
  }

  // ---------------------------------------------------------------- connection

  private options(): IClientOptions {
    return {
      ...baseClientOptions(this.o.mqtt, { clientId: this.clientId, tlsFiles: this.tls, username: this.cfg.username, password: this.cfg.password }),
      protocolVersion: this.version,
      ...(this.version === 5 ? { properties: { sessionExpiryInterval: 0 } } : {}),
      will: { topic: this.topics.node('NDEATH'), payload: this.deathPayload(), qos: 1, retain: false },
    };
  }

  private connect(): void {
    if (this.stopping) return;
    this.bdSeq = this.bdSeqStore.take();
    let client: MqttClient;
    try {
      client = mqtt.connect(this.url, this.options());
    } catch (err) {
      this.o.log.error({ err: toRackpilotError(err).toJSON() }, 'sparkplug: cannot create MQTT client');
      this.reconnect?.schedule();
      return;
    }
    this.client = client;
    client.on('connect', () => {
      this.connected = true;
      this.reconnect?.up();
      this.stats.connects++;
      this.o.log.info({ url: redactUrl(this.url), protocolVersion: this.version, bdSeq: this.bdSeq, edgeNode: `${this.groupId}/${this.edgeNodeId}` }, 'sparkplug: connected');
      void this.afterConnect(client);
    });
    client.on('message', (topic, payload, packet) => this.onMessage(topic, payload, packet.retain));
    client.on('error', (err: Error & { code?: number | string }) => {
      if (this.cfg.protocolVersion === 'auto' && this.version === 5 && Reconnect.refusesV5(err)) {
        this.o.log.warn('sparkplug: broker refused MQTT 5; falling back to MQTT 3.1.1');
        this.version = 4;
        this.reconnect?.reset();
      } else {
        this.o.log.warn({ error: err.message, code: err.code }, 'sparkplug: MQTT error');
      }
    });
    client.on('close', () => {
      const was = this.connected;
      this.connected = false;
      this.born = false;
      if (was && !this.stopping) this.o.log.warn('sparkplug: disconnected from broker');
      const current = this.client === client;
      if (current) this.client = undefined;
      this.reconnect?.closed(client, was, current);
    });
  }

  private async afterConnect(client: MqttClient): Promise<void> {
    const subs = [this.topics.node('NCMD'), `${NAMESPACE}/${this.groupId}/DCMD/${this.edgeNodeId}/+`];
    if (this.cfg.primaryHostId !== undefined) subs.push(this.topics.state(this.cfg.primaryHostId));
    try {
      await withDeadline('sparkplug subscribe', this.o.mqtt.publishTimeoutMs, () => client.subscribeAsync(subs, { qos: 1 }));
    } catch (err) {
      this.o.log.error({ err: toRackpilotError(err).toJSON() }, 'sparkplug: cannot subscribe');
      client.end(true);
      return;
    }
    // without a primary host, births right away; with one, when its STATE says online (retained: it comes at once)
    if (this.cfg.primaryHostId === undefined || this.host?.online === true) this.births();
  }

  // ---------------------------------------------------------------- publishing

  /** Hands one message to the client with the next seq; never awaited by callers (order is the call order). */
  private send(topic: string, metrics: OutMetric[], seq: number): void {
    const client = this.client;
    if (!client || !this.connected) return;
    const payload = encode({ timestamp: Date.now(), seq, metrics });
    this.stats.published++;
    withDeadline(`publish ${topic}`, this.o.mqtt.publishTimeoutMs, () => client.publishAsync(topic, payload, { qos: 0, retain: false })).catch((err: unknown) => {
      this.stats.publishFailures++;
      this.o.log.debug({ topic, error: toRackpilotError(err).message }, 'sparkplug: publish failed');
    });
  }

  private nextSeq(): number {
    const s = this.seq;
    this.seq = (s + 1) % 256;
    return s;
  }

  /** NBIRTH (seq 0) and a DBIRTH per reachable device: a new Sparkplug session, or a rebirth with the same bdSeq. */
  private births(): void {
    if (!this.connected) return;
    clearTimeout(this.rebirthTimer);
    this.rebirthTimer = undefined;
    this.lastRebirthAt = Date.now();
    this.rbe.clear();
    this.alive.clear();
    this.seq = 0;
    const now = Date.now();
    const values = this.nodeValues();
    const metrics: OutMetric[] = [{ name: 'bdSeq', type: 'Int64', value: this.bdSeq, timestamp: now }, ...this.rbe.birth(this.nodeMetrics(values, now))];
    this.send(this.topics.node('NBIRTH'), metrics, this.nextSeq());
    this.stats.births++;
    this.born = true;
    for (const dev of this.devs) {
      const r = this.o.latest.get(dev.d.id);
      if (r && reachable(r)) this.deviceBirth(dev, r);
    }
  }

  private deviceBirth(dev: Dev, r: Reading): void {
    this.alive.add(dev.d.id);
    this.send(this.topics.device('DBIRTH', dev.d.id), this.rbe.birth(this.deviceValues(dev, r)), this.nextSeq());
  }

  /**
   * Report by exception: NDATA for changed rack metrics; per device DDATA
   * for changed metrics, DDEATH when it became unreachable, DBIRTH when it is
   * back. Call every telemetry cycle and after engine changes.
   */
  update(): void {
    if (!this.born || !this.connected) return;
    const now = Date.now();
    const nd = this.rbe.changed(this.nodeMetrics(this.nodeValues(), now));
    if (nd.length > 0) this.send(this.topics.node('NDATA'), nd, this.nextSeq());
    for (const dev of this.devs) {
      const id = dev.d.id;
      const r = this.o.latest.get(id);
      const up = r !== undefined && reachable(r);
      if (up && !this.alive.has(id)) this.deviceBirth(dev, r);
      else if (!up && this.alive.has(id)) {
        this.alive.delete(id);
        this.rbe.forget(dev.metrics.map((m) => m.alias));
        this.send(this.topics.device('DDEATH', id), [], this.nextSeq());
      } else if (up) {
        const dd = this.rbe.changed(this.deviceValues(dev, r));
        if (dd.length > 0) this.send(this.topics.device('DDATA', id), dd, this.nextSeq());
      }
    }
  }

  private nodeValues(): Record<NodeKey, MetricValue> {
    const e = this.o.engine;
    return nodeValues(
      { state: this.o.rackState(), demands: e.demands.size, curtailHeld: this.writes.curtailHeld, budgetW: this.writes.budgetW, writesAccepted: this.writesAccepted, version: this.o.agentVersion },
      this.o.devices,
      this.o.latest,
    );
  }

  private nodeMetrics(v: Record<NodeKey, MetricValue>, now: number): { def: MetricDef; value: MetricValue; timestamp: number }[] {
    return (Object.keys(NODE_METRICS) as NodeKey[]).map((k) => ({ def: NODE_METRICS[k], value: v[k], timestamp: now }));
  }

  private deviceValues(dev: Dev, r: Reading): { def: MetricDef; value: MetricValue; timestamp: number }[] {
    const held = this.writes.deviceHeld(dev.d.id);
    return dev.metrics.map((m) => ({ def: m, value: m.value(r, held), timestamp: r.ts }));
  }

  // ---------------------------------------------------------------- intake

  private onMessage(topic: string, payload: Buffer, retain: boolean): void {
    try {
      if (this.cfg.primaryHostId !== undefined && topic === this.topics.state(this.cfg.primaryHostId)) {
        this.onHostState(payload);
        return;
      }
      if (retain) {
        // Sparkplug commands are never retained: a retained one is stale by definition
        this.o.log.warn({ topic }, 'sparkplug: ignoring a retained command');
        return;
      }
      if (topic === this.topics.node('NCMD')) this.onCommand(payload, undefined);
      else {
        const device = this.topics.dcmdDevice(topic);
        if (device !== undefined) this.onCommand(payload, device);
      }
    } catch (err) {
      this.o.log.warn({ topic, error: toRackpilotError(err).message }, 'sparkplug: message dropped');
    }
  }

  private onCommand(payload: Buffer, device: string | undefined): void {
    const cmd = decodeCommand(payload);
    const dev = device === undefined ? undefined : this.devs.find((x) => x.d.id === device);
    let rebirth = false;
    for (const m of cmd.metrics) {
      const name = m.name ?? (m.alias === undefined ? undefined : (dev ? dev.byAlias : this.nodeByAlias).get(m.alias));
      if (name === undefined) continue;
      if (device === undefined && name === REBIRTH) rebirth ||= m.value === true;
      else if (device === undefined) this.writes.node(name, m.value);
      else this.writes.device(device, name, m.value);
    }
    if (rebirth) this.requestRebirth();
    // the new values (e.g. Rack Control/Curtail) once the engine has taken the demand
    setImmediate(() => this.update());
  }

  /** `Node Control/Rebirth`: DATA stops at once; births follow, at most one per rebirthDebounceMs. */
  private requestRebirth(): void {
    this.stats.rebirths++;
    this.born = false;
    const wait = this.lastRebirthAt + this.cfg.rebirthDebounceMs - Date.now();
    if (wait <= 0) {
      this.births();
      return;
    }
    this.rebirthTimer ??= setTimeout(() => {
      this.rebirthTimer = undefined;
      this.births();
    }, wait);
  }

  /** The primary host's STATE `{online, timestamp}`; an older timestamp than the last one seen is ignored. */
  private onHostState(payload: Buffer): void {
    let s: unknown;
    try {
      s = JSON.parse(payload.toString('utf8'));
    } catch {
      this.o.log.warn('sparkplug: primary host STATE is not JSON; ignored');
      return;
    }
    const { online, timestamp } = (s ?? {}) as { online?: unknown; timestamp?: unknown };
    if (typeof online !== 'boolean' || typeof timestamp !== 'number') {
      this.o.log.warn('sparkplug: primary host STATE lacks online/timestamp; ignored');
      return;
    }
    if (this.host && timestamp < this.host.timestamp) return;
    this.host = { online, timestamp };
    if (online) {
      if (!this.born && this.connected && !this.rebirthTimer) this.births();
      return;
    }
    if (!this.born) return; // still waiting for it: stay connected
    this.stats.hostOffline++;
    this.o.log.warn({ host: this.cfg.primaryHostId }, 'sparkplug: primary host offline: ending the session and connecting again');
    const client = this.client;
    if (!client) return;
    void this.endSession(client).catch(() => client.end(true));
  }
}

/** A device with a DBIRTH: it answered its last read. */
function reachable(r: Reading): boolean {
  return r.online && r.state !== 'unreachable';
}
