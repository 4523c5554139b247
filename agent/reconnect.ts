/**
 * The reconnect policy every MQTT session of the agent shares (the bridge,
 * the Sparkplug edge node): exponential backoff with full jitter
 * (MQTT.js alone retries at a fixed period), an attempt counter that resets
 * only after a connection stayed up long enough (a broker that accepts and
 * then drops us, e.g. a duplicate client id or an ACL, must not get a
 * reconnect storm), and the MQTT 5 -> 3.1.1 fallback when a broker refuses 5.
 */
import type { MqttClient } from 'mqtt';
import { backoffDelay } from './concurrency.js';

const STABLE_CONNECTION_MS = 10_000;

export class Reconnect {
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private connectedAt = 0;
  private stopped = false;

  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
    /** Opens a new connection. */
    private readonly connect: () => void,
    private readonly onDelay: (delayMs: number, attempt: number) => void = () => undefined,
  ) {}

  /** The connection is up. */
  up(): void {
    this.connectedAt = Date.now();
  }

  /**
   * The connection `client` closed (`wasUp`: it had connected). Unless
   * stopped, the client is discarded and a new connection scheduled.
   */
  closed(client: MqttClient, wasUp: boolean, isCurrent: boolean): void {
    if (wasUp && Date.now() - this.connectedAt >= STABLE_CONNECTION_MS) this.attempt = 0;
    if (!isCurrent) return;
    client.removeAllListeners();
    client.on('error', () => undefined);
    client.end(true);
    this.schedule();
  }

  /** CONNACK "unacceptable protocol version" (3.1.1 code 1, MQTT 5 code 132) on an MQTT 5 attempt. */
  static refusesV5(err: { code?: number | string }): boolean {
    return err.code === 1 || err.code === 132;
  }

  /** After a protocol fallback: the next attempt is the first again. */
  reset(): void {
    this.attempt = 0;
  }

  schedule(): void {
    if (this.stopped || this.timer) return;
    const delay = backoffDelay(this.attempt++, this.minMs, this.maxMs);
    this.onDelay(delay, this.attempt);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.connect();
    }, delay);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Allowed to reconnect again (a session started anew after stop). */
  resume(): void {
    this.stopped = false;
  }
}
