import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { backoffDelay } from '../agent/concurrency.js';
import { validateConfig } from '../agent/config.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../agent/embedded-broker.js';
import { MAX_PENDING, MqttBridge, redactUrl } from '../agent/mqtt-bridge.js';
import { rackTopics } from '../protocol/topics.js';
import { MqttWatch } from '../hil/testing/mqtt-watch.js';
import { freePort } from '../hil/testing/ports.js';

function mqttConfig(url: string) {
  const res = validateConfig({ site: 's', rack: 'r', mqtt: { url, protocolVersion: 4, reconnect: { minMs: 50, maxMs: 200 }, publishTimeoutMs: 2000 } });
  assert.ok(res.ok);
  return res.config.mqtt;
}

describe('backoff', () => {
  test('grows exponentially to the cap, with full jitter', () => {
    assert.equal(backoffDelay(0, 500, 30_000, () => 0), 500);
    assert.equal(backoffDelay(3, 500, 30_000, () => 1), 4000);
    assert.equal(backoffDelay(20, 500, 30_000, () => 1), 30_000);
    assert.equal(backoffDelay(3, 500, 30_000, () => 0.5), 2250);
  });
});

test('credentials never reach the logs through the broker URL', () => {
  assert.equal(redactUrl('mqtt://rack:s3cret@broker:1883'), 'mqtt://***:***@broker:1883');
  assert.equal(redactUrl('mqtt://broker:1883'), 'mqtt://broker:1883');
});

describe('MQTT bridge delivery', () => {
  const topics = rackTopics('s', 'r');
  let broker: EmbeddedBroker | undefined;
  let port = 0;
  let bridge: MqttBridge | undefined;
  after(async () => {
    await bridge?.stop('{}');
    await broker?.close();
  });

  test('results queued while the broker is down arrive in order after reconnecting; the queue is bounded', async () => {
    port = await freePort();
    broker = await startEmbeddedBroker('127.0.0.1', port);
    const url = `mqtt://127.0.0.1:${port}`;
    let connects = 0;
    bridge = new MqttBridge(
      mqttConfig(url),
      topics,
      'bridge-test',
      { onCommand: () => undefined, onConnected: () => connects++, willPayload: () => '{"online":false}' },
      pino({ level: 'silent' }),
    );
    bridge.start();
    for (let i = 0; i < 100 && !bridge.connected; i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(bridge.connected);
    await broker.close();
    for (let i = 0; i < 100 && bridge.connected; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(bridge.connected, false);

    const total = MAX_PENDING + 20;
    for (let i = 0; i < total; i++) void bridge.publish(topics.cmdResult, JSON.stringify({ n: i }), { qos: 1 }, true);
    void bridge.publish(topics.telemetry, '{"t":1}', { qos: 0 });
    assert.equal(bridge.queued, MAX_PENDING);
    assert.equal(bridge.stats.dropped, 21, '20 oldest results and the telemetry message are dropped, and counted');

    broker = await startEmbeddedBroker('127.0.0.1', port);
    const w = await MqttWatch.connect(url, topics.cmdResult);
    try {
      const last = await w.waitFor((m) => (m.json as { n: number }).n === total - 1, 20_000, 'last queued result');
      assert.ok(last);
      const ns = w.messages.map((m) => (m.json as { n: number }).n);
      assert.deepEqual(ns, Array.from({ length: MAX_PENDING }, (_, i) => i + 20), 'every kept result, once, in order');
      assert.equal(bridge.queued, 0);
      assert.equal(connects, 2);
    } finally {
      await w.close();
    }
  });
});
