/**
 * Sparkplug through the whole Agent (config `sparkplug.enabled`), against a
 * real Mosquitto: NBIRTH and a DBIRTH per device on start-up, a DCMD write
 * that sheds a simulated miner over its real protocol, and an NDEATH on a
 * clean stop. The edge node itself is covered in depth by sparkplug.test.ts.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { Agent } from '../agent/agent.js';
import { validateConfig } from '../agent/config.js';
import { sleep } from '../drivers/lib/deadline.js';
import { Mosquitto } from '../hil/testing/mosquitto.js';
import { startSimRack } from '../hil/testing/rack-fixture.js';
import { requireTool } from '../hil/testing/tools.js';
import { encode } from '../agent/sparkplug/codec.js';

const tool = requireTool('mosquitto', 'mosquitto');

if ('skip' in tool) {
  test(`sparkplug through the agent (${tool.skip})`, { skip: tool.skip }, () => undefined);
} else {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  test('the agent with sparkplug enabled: births on start, a DCMD curtail sheds the miner, NDEATH on stop', async () => {
    const broker = new Mosquitto(tool.path);
    await broker.start();
    cleanups.push(() => broker.dispose());
    const rack = await startSimRack(2, { sleepDelayMs: 50, wakeRampMs: 50 });
    cleanups.push(() => rack.close());
    const watch = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0 });
    cleanups.push(() => watch.endAsync());
    const seen: string[] = [];
    watch.on('message', (topic) => seen.push(topic));
    await watch.subscribeAsync('spBv1.0/#', { qos: 1 });
    const res = validateConfig({ ...rack.raw(broker.url, 'spa', 'r1'), sparkplug: { enabled: true, groupId: 'hall', edgeNodeId: 'r1' } });
    assert.ok(res.ok, res.ok ? '' : res.errors.join('\n'));
    const agent = new Agent(res.config, pino({ level: 'silent' }));
    await agent.start();
    let stopped = false;
    cleanups.push(async () => {
      if (!stopped) await agent.stop();
    });
    const until = async (what: string, cond: () => boolean): Promise<void> => {
      const end = Date.now() + 20_000;
      while (!cond()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}; seen ${seen.join(', ')}`);
        await sleep(50);
      }
    };
    await until('NBIRTH', () => seen.includes('spBv1.0/hall/NBIRTH/r1'));
    await until('DBIRTH m1 and m2', () => seen.includes('spBv1.0/hall/DBIRTH/r1/m1') && seen.includes('spBv1.0/hall/DBIRTH/r1/m2'));
    // a SCADA write: Control/Curtail true on m1 (by name; the edge node maps it through the engine)
    const body = encode({ timestamp: Date.now(), metrics: [{ name: 'Control/Curtail', type: 'Boolean', value: true }] });
    await watch.publishAsync('spBv1.0/hall/DCMD/r1/m1', body, { qos: 0 });
    await until('m1 asleep', () => rack.sims[0]?.sleeping === true);
    assert.equal(rack.sims[1]?.sleeping, false, 'only the device written to is shed');
    await until('DDATA for m1', () => seen.includes('spBv1.0/hall/DDATA/r1/m1'));
    stopped = true;
    await agent.stop();
    await until('NDEATH', () => seen.includes('spBv1.0/hall/NDEATH/r1'));
  });
}
