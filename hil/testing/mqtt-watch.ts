/** A test-side MQTT client that records messages and waits for the ones it needs. */
import mqtt, { type IClientOptions, type MqttClient, type IPublishPacket } from 'mqtt';

export interface Received {
  topic: string;
  text: string;
  json: unknown;
  retain: boolean;
  packet: IPublishPacket;
}

export class MqttWatch {
  readonly messages: Received[] = [];
  private waiters: { pred: (m: Received) => boolean; resolve: (m: Received) => void }[] = [];

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      const text = payload.toString('utf8');
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      const m = { topic, text, json, retain: packet.retain, packet };
      this.messages.push(m);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(m)) return true;
        w.resolve(m);
        return false;
      });
    });
  }

  static async connect(url: string, filter: string, opts: IClientOptions = {}): Promise<MqttWatch> {
    const client = await mqtt.connectAsync(url, { reconnectPeriod: 200, connectTimeout: 5000, ...opts });
    const w = new MqttWatch(client);
    await client.subscribeAsync(filter, { qos: 1 });
    return w;
  }

  /** The first message (already received or future) matching `pred`. */
  waitFor(pred: (m: Received) => boolean, timeoutMs = 15_000, what = 'message'): Promise<Received> {
    const seen = this.messages.find(pred);
    if (seen) return Promise.resolve(seen);
    return this.next(pred, timeoutMs, what);
  }

  /** The next future message matching `pred`. */
  next(pred: (m: Received) => boolean, timeoutMs = 15_000, what = 'message'): Promise<Received> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last topics: ${this.messages.slice(-5).map((m) => m.topic).join(', ')}`));
      }, timeoutMs);
      const done = (m: Received): void => {
        clearTimeout(t);
        resolve(m);
      };
      this.waiters.push({ pred, resolve: done });
    });
  }

  async publish(topic: string, payload: string, opts: mqtt.IClientPublishOptions = {}): Promise<void> {
    await this.client.publishAsync(topic, payload, { qos: 1, ...opts });
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
