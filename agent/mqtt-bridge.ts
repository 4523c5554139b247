/**
 * The MQTT side of the agent: connects with a Will (status offline,
 * retained), reconnects with exponential backoff and jitter (MQTT.js only
 * has a fixed period), bounds everything it buffers, puts a deadline on every
 * publish, and hands commands to the intake without awaiting them.
 */
import mqtt, { type IClientOptions, type IClientPublishOptions, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { sleep, withDeadline } from '../drivers/lib/deadline.js';
import { toRackpilotError } from '../drivers/lib/errors.js';
import type { RackTopics } from '../protocol/topics.js';
import type { CommandMeta } from './commands.js';
import type { MqttConfig } from './config.js';
import { Reconnect } from './reconnect.js';
import type { RecordClass, Spool } from './spool.js';
import { loadTlsFiles } from './tls-files.js';
import { baseClientOptions } from './mqtt-options.js';

/** Results, events, status and state wait here until sent, in order (oldest dropped first past this). */
export const MAX_PENDING = 500;
/** A connection must stay up this long before the reconnect backoff starts over. */
/** After a failed publish on a live connection, the queue is retried after this. */
const RETRY_FLUSH_MS = 1_000;

/** The broker URL without credentials, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      u.username = u.username ? '***' : '';
      u.password = u.password ? '***' : '';
    }
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

export interface BridgeCallbacks {
  onCommand(payload: Buffer, meta: CommandMeta): void;
  /** Called after each (re)connect and subscription; republish retained state here. */
  onConnected(): void;
  /** The Will payload, rebuilt before each connect attempt. */
  willPayload(): string;
  /** Called when an established connection is lost (not on a clean stop). */
  onDisconnected?(): void;
}

interface Pending {
  topic: string;
  payload: string;
  opts: IClientPublishOptions;
}

const REPLAY_BATCH = 10;
const REPLAY_BATCH_BYTES = 1024 * 1024;

/** A replayed JSON object payload, marked: `{"historical":true,"spoolSeq":N,...}`. */
export function historical(payload: Buffer, seq: number): string {
  const text = payload.toString('utf8');
  if (!text.startsWith('{')) return text;
  const rest = text.slice(1).trimStart();
  return `{"historical":true,"spoolSeq":${seq}${rest.startsWith('}') ? '' : ','}${rest}`;
}

export class MqttBridge {
  private client: MqttClient | undefined;
  private version: 4 | 5;
  private stopping = false;
  private readonly reconnect: Reconnect;
  private retryTimer: NodeJS.Timeout | undefined;
  private pending: Pending[] = [];
  private flushing = false;
  connected = false;
  /** When `connected` last changed (epoch ms); construction time before the first connect. */
  connectedChangedAt = Date.now();
  /** Counters for health and tests. */
  readonly stats = { connects: 0, dropped: 0, publishFailures: 0, spooled: 0, spoolRefused: 0, replayed: 0 };
  /** The store-and-forward buffer for telemetry and events while the broker is unreachable (agent/spool.ts). */
  private spool: Spool | undefined;
  private replaying = false;

  /** Messages waiting to be sent. */
  get queued(): number {
    return this.pending.length;
  }

  constructor(
    private readonly cfg: MqttConfig,
    private readonly topics: RackTopics,
    private readonly clientId: string,
    private readonly cb: BridgeCallbacks,
    private readonly log: Logger,
  ) {
    this.version = cfg.protocolVersion === 4 ? 4 : 5;
    this.reconnect = new Reconnect(cfg.reconnect.minMs, cfg.reconnect.maxMs, () => this.connect(), (delay, attempt) => this.log.debug({ delay, attempt }, 'reconnecting'));
  }

  /** Telemetry and events published while disconnected go to `spool` and are replayed after each connect. */
  attachSpool(spool: Spool): void {
    this.spool = spool;
  }

  get protocolVersion(): 4 | 5 {
    return this.version;
  }

  /** Throws CONFIG_INVALID when a TLS file named in config is unreadable, unsafe or invalid (agent/tls-files.ts). */
  start(): void {
    this.loadTls();
    this.stopping = false;
    this.reconnect.resume();
    this.connect();
  }

  private tlsFiles: Pick<IClientOptions, 'ca' | 'cert' | 'key'> | undefined;

  /** Reads and checks the TLS files (once); the agent calls it before touching any device, so a bad file fails fast. */
  loadTls(): void {
    this.tlsFiles ??= this.readTlsFiles();
  }

  private readTlsFiles(): Pick<IClientOptions, 'ca' | 'cert' | 'key'> {
    const { files, warnings } = loadTlsFiles(this.cfg.tls);
    for (const w of warnings) this.log.warn({ key: `mqtt.tls.${w.key}`, file: w.file }, w.message);
    return files;
  }

  private options(): IClientOptions {
    return {
      ...baseClientOptions(this.cfg, { clientId: this.clientId, tlsFiles: this.tlsFiles }),
      protocolVersion: this.version,
      will: { topic: this.topics.status, payload: Buffer.from(this.cb.willPayload()), qos: 1, retain: true },
    };
  }

  private connect(): void {
    if (this.stopping) return;
    let client: MqttClient;
    try {
      client = mqtt.connect(this.cfg.url, this.options());
    } catch (err) {
      this.log.error({ err: toRackpilotError(err).toJSON() }, 'cannot create MQTT client');
      this.reconnect.schedule();
      return;
    }
    this.client = client;
    client.on('connect', () => {
      this.connected = true;
      this.connectedChangedAt = Date.now();
      this.reconnect.up();
      this.stats.connects++;
      this.log.info({ url: redactUrl(this.cfg.url), protocolVersion: this.version }, 'connected to broker');
      void this.afterConnect(client);
    });
    client.on('message', (topic, payload, packet) => {
      if (topic !== this.topics.cmd) return;
      this.cb.onCommand(payload, {
        retain: packet.retain,
        responseTopic: packet.properties?.responseTopic,
        correlationData: packet.properties?.correlationData,
      });
    });
    client.on('error', (err: Error & { code?: number | string }) => {
      // CONNACK "unacceptable protocol version" (3.1.1 code 1, MQTT 5 code 132): fall back once.
      if (this.cfg.protocolVersion === 'auto' && this.version === 5 && Reconnect.refusesV5(err)) {
        this.log.warn('broker refused MQTT 5; falling back to MQTT 3.1.1');
        this.version = 4;
        this.reconnect.reset();
      } else {
        this.log.warn({ error: err.message, code: err.code }, 'MQTT error');
      }
    });
    client.on('close', () => {
      const was = this.connected;
      this.connected = false;
      if (was) this.connectedChangedAt = Date.now();
      if (was && !this.stopping) {
        this.log.warn('disconnected from broker');
        this.cb.onDisconnected?.();
      }
      const current = this.client === client;
      if (current) this.client = undefined;
      this.reconnect.closed(client, was, current);
    });
  }

  private async afterConnect(client: MqttClient): Promise<void> {
    // Under MQTT 5, retain-as-published keeps the retain flag on live deliveries, so a
    // retained command is refused at once; under 3.1.1 only when (re)subscribing.
    try {
      await withDeadline('subscribe', this.cfg.publishTimeoutMs, () => client.subscribeAsync(this.topics.cmd, { qos: 1, ...(this.version === 5 ? { rap: true } : {}) }));
    } catch (err) {
      this.log.error({ err: toRackpilotError(err).toJSON() }, 'cannot subscribe to the command topic');
      client.end(true);
      return;
    }
    this.cb.onConnected();
    await this.flush();
    await this.replay(client);
  }

  /**
   * Replays the spool after a connect: oldest first, marked historical, QoS 1,
   * at most `replayPerS` a second so live messages (sent directly, alongside)
   * are never starved; acknowledges what the broker took; on a failure the
   * spool is rewound to the last acknowledged record.
   */
  private async replay(client: MqttClient): Promise<void> {
    const spool = this.spool;
    if (!spool || this.replaying) return;
    this.replaying = true;
    const gapMs = 1000 / this.cfg.replayPerS;
    try {
      // what was queued in memory (results, state, events from before the outage was noticed) goes first
      while (this.pending.length > 0 && this.connected && this.client === client) await sleep(20);
      while (this.connected && this.client === client && !this.stopping) {
        const recs = await spool.take(REPLAY_BATCH, REPLAY_BATCH_BYTES);
        if (recs.length === 0) break;
        let acked = 0;
        for (const r of recs) {
          if (!(await this.send({ topic: r.topic, payload: historical(r.payload, r.seq), opts: { qos: 1, retain: false } }))) break;
          acked = r.seq;
          this.stats.replayed++;
          await sleep(gapMs);
        }
        if (acked > 0) await spool.ack(acked);
        if (acked !== recs.at(-1)?.seq) {
          await spool.rewind();
          break;
        }
      }
    } catch (err) {
      this.log.error({ err: toRackpilotError(err).toJSON() }, 'spool replay failed');
      await spool.rewind().catch(() => undefined);
    } finally {
      this.replaying = false;
    }
  }

  /** Into the spool; a refusal (full of events, too large) is counted and logged, never thrown. */
  private toSpool(cls: RecordClass, topic: string, payload: string): void {
    const spool = this.spool;
    if (!spool) return;
    this.stats.spooled++;
    void spool.append(cls, topic, payload).then((r) => {
      // spooled while connected (a live send failed): replay it now rather than at the next connect
      if (r.ok && this.connected && this.client) void this.replay(this.client);
      if (r.ok) return;
      this.stats.spoolRefused++;
      this.log.warn({ topic, reason: r.reason }, 'the spool refused a message');
    });
  }

  /**
   * The one sender of the queue: sends in order, removes a message only once
   * the broker took it, stops at the first failure (retried later or on the
   * next connection).
   */
  private async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.connected && this.pending.length > 0) {
        const p = this.pending[0] as Pending;
        if (!(await this.send(p))) {
          if (this.connected && !this.retryTimer) {
            this.retryTimer = setTimeout(() => {
              this.retryTimer = undefined;
              void this.flush();
            }, RETRY_FLUSH_MS);
          }
          return;
        }
        if (this.pending[0] === p) this.pending.shift();
      }
    } finally {
      this.flushing = false;
    }
  }

  private async send(p: Pending): Promise<boolean> {
    const client = this.client;
    if (!client || !this.connected) return false;
    try {
      await withDeadline(`publish ${p.topic}`, this.cfg.publishTimeoutMs, () => client.publishAsync(p.topic, p.payload, p.opts));
      return true;
    } catch (err) {
      this.stats.publishFailures++;
      // an MQTT 5 PUBACK reason code >= 0x80 (e.g. 0x87: not authorized by the broker's ACL) is final:
      // retrying it would block everything queued behind it
      const rc = (err as { code?: unknown }).code;
      if (typeof rc === 'number' && rc >= 0x80) {
        this.stats.dropped++;
        this.log.error({ topic: p.topic, reasonCode: rc }, 'the broker refused the message; dropped');
        return true;
      }
      this.log.warn({ topic: p.topic, error: toRackpilotError(err).message }, 'publish failed');
      return false;
    }
  }

  /**
   * `keep` messages (results, events, status, state) go through the ordered
   * queue and survive disconnections (bounded, oldest dropped). Others
   * (telemetry) are sent only when connected, else dropped and counted.
   */
  async publish(topic: string, payload: string, opts: IClientPublishOptions, keep = false, spoolAs?: RecordClass): Promise<boolean> {
    const p = { topic, payload, opts };
    if (spoolAs && this.spool && !this.connected) {
      this.toSpool(spoolAs, topic, payload);
      return false;
    }
    if (!keep) {
      if (this.connected && (await this.send(p))) return true;
      if (spoolAs && this.spool) this.toSpool(spoolAs, topic, payload);
      else this.stats.dropped++;
      return false;
    }
    this.pending.push(p);
    if (this.pending.length > MAX_PENDING) {
      // never the head while it is being sent: flush() removes that one itself
      this.pending.splice(this.flushing ? 1 : 0, 1);
      this.stats.dropped++;
    }
    await this.flush();
    return !this.pending.includes(p);
  }

  /** Publishes to an MQTT 5 response topic with the request's correlation data. */
  async reply(responseTopic: string, correlationData: Buffer | undefined, payload: string): Promise<boolean> {
    if (this.version !== 5 || responseTopic.length === 0 || /[#+]/.test(responseTopic) || responseTopic.includes('\0')) {
      this.log.warn({ responseTopic }, 'ignoring an invalid response topic');
      return false;
    }
    const properties = correlationData ? { correlationData } : {};
    return this.publish(responseTopic, payload, { qos: 1, retain: false, properties }, true);
  }

  /** Publishes the given offline status (clean shutdown), then disconnects. */
  async stop(offlinePayload: string): Promise<void> {
    this.stopping = true;
    this.reconnect.stop();
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const client = this.client;
    if (!client) return;
    if (this.connected) await this.send({ topic: this.topics.status, payload: offlinePayload, opts: { qos: 1, retain: true } });
    this.client = undefined;
    await withDeadline('disconnect', this.cfg.publishTimeoutMs, () => client.endAsync()).catch(() => client.end(true));
  }
}
