/**
 * Sparkplug B edge node against a real Mosquitto: births, death (the broker
 * publishes the Will), rebirth, seq order with the 255 -> 0 wrap, report by
 * exception, DDEATH/DBIRTH, a DCMD shedding a device through the engine,
 * refused writes under requireSigned, and the primary-host STATE rule.
 * Every payload is decoded with an independent decoder: protobufjs loading
 * hil/testing/sparkplug_b.proto (not sparkplug-payload, which the node encodes with).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import { pino } from 'pino';
import protobuf from 'protobufjs';
import { mqttConfigSchema } from '../agent/config.js';
import { sparkplugConfigSchema } from '../agent/sparkplug/config.js';
import { SparkplugEdgeNode } from '../agent/sparkplug/edge-node.js';
import { engineRig, FakeDevice, type EngineRig } from '../hil/testing/engine-rig.js';
import { Mosquitto } from '../hil/testing/mosquitto.js';
import { freePort } from '../hil/testing/ports.js';
import { repoRoot } from '../hil/testing/root.js';
import { requireTool } from '../hil/testing/tools.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const tool = requireTool('mosquitto', 'mosquitto');
const Payload = protobuf.loadSync(join(repoRoot(), 'hil/testing/sparkplug_b.proto')).lookupType('org.eclipse.tahu.protobuf.Payload');

interface Metric {
  name?: string;
  alias?: number;
  timestamp?: number;
  datatype?: number;
  isNull?: boolean;
  intValue?: number;
  longValue?: number;
  doubleValue?: number;
  booleanValue?: boolean;
  stringValue?: string;
}
interface Decoded {
  timestamp?: number;
  seq?: number;
  metrics: Metric[];
}
interface Msg {
  topic: string;
  qos: number;
  retain: boolean;
  p: Decoded;
}

const DT = { Int32: 3, Int64: 4, Double: 10, Boolean: 11, String: 12 } as const;

function decode(buf: Buffer): Decoded {
  const o = Payload.toObject(Payload.decode(buf), { longs: Number, defaults: false, arrays: true }) as Decoded;
  return { ...o, metrics: o.metrics ?? [] };
}

/** A host-side command payload, encoded with the independent schema. */
function command(metrics: Metric[]): Buffer {
  return Buffer.from(Payload.encode(Payload.fromObject({ timestamp: Date.now(), metrics })).finish());
}

const byName = (p: Decoded, name: string): Metric | undefined => p.metrics.find((m) => m.name === name);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => T | undefined, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** A TCP proxy in front of the broker: `cut()` kills every connection as a network failure would. */
async function proxy(target: number): Promise<{ port: number; cut(): void; close(): Promise<void> }> {
  const socks = new Set<net.Socket>();
  const srv = net.createServer((c) => {
    const up = net.connect(target, '127.0.0.1');
    socks.add(c).add(up);
    c.pipe(up).pipe(c);
    const drop = () => {
      c.destroy();
      up.destroy();
      socks.delete(c);
      socks.delete(up);
    };
    c.on('error', drop).on('close', drop);
    up.on('error', drop).on('close', drop);
  });
  const port = await freePort();
  await new Promise<void>((r) => srv.listen(port, '127.0.0.1', () => r()));
  return {
    port,
    cut: () => {
      for (const s of socks) s.resetAndDestroy();
      socks.clear();
    },
    close: () => new Promise<void>((r) => srv.close(() => r())),
  };
}

if ('skip' in tool) {
  test('sparkplug against mosquitto', { skip: tool.skip }, () => undefined);
} else {
  describe('sparkplug B edge node (mosquitto)', () => {
    const broker = new Mosquitto(tool.path);
    let watch: MqttClient;
    const msgs: Msg[] = [];
    const log = pino({ level: 'silent' });

    before(async () => {
      await broker.start();
      watch = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'sp-watch' });
      watch.on('message', (topic, payload, packet) => {
        // what the edge node publishes (not the host's STATE and commands)
        if (topic.startsWith('spBv1.0/STATE/') || /\/(NCMD|DCMD)\//.test(topic)) return;
        msgs.push({ topic, qos: packet.qos, retain: packet.retain, p: decode(payload) });
      });
      await watch.subscribeAsync('spBv1.0/#', { qos: 1, rap: true });
    });
    after(async () => {
      await watch.endAsync();
      await broker.dispose();
    });

    function rack(ids = ['m1', 'm2']): { devices: FakeDevice[]; rig: EngineRig } {
      const devices = ids.map((id, i) => new FakeDevice(id, 5, 'asic', 3000 + i));
      const rig = engineRig(devices);
      rig.poll();
      return { devices, rig };
    }

    function node(rig: EngineRig, devices: FakeDevice[], url: string, sp: Record<string, unknown>, o: { requireSigned?: boolean; stateDir?: string } = {}): SparkplugEdgeNode {
      return new SparkplugEdgeNode({
        config: sparkplugConfigSchema.parse({ enabled: true, rebirthDebounceMs: 0, ...sp }),
        mqtt: mqttConfigSchema.parse({ url, reconnect: { minMs: 50, maxMs: 200 }, publishTimeoutMs: 2000, connectTimeoutMs: 2000 }),
        site: 's1',
        rack: 'r1',
        stateDir: o.stateDir ?? tempDir('rp-sp-'),
        agentVersion: 'test',
        devices,
        latest: rig.latest,
        engine: rig.engine,
        rackState: () => rig.engine.state,
        holdOffMs: 0,
        requireSigned: o.requireSigned ?? false,
        log,
      });
    }

    const of = (group: string) => msgs.filter((m) => m.topic.startsWith(`spBv1.0/${group}/`));
    /** seq of every message after NBIRTH i (inclusive) must count up by one, 255 -> 0. */
    function assertSeq(list: Msg[]): void {
      for (let i = 1; i < list.length; i++) {
        const prev = list[i - 1]!.p.seq!;
        assert.equal(list[i]!.p.seq, (prev + 1) % 256, `seq after ${prev} (${list[i]!.topic})`);
      }
    }

    test('births, report by exception, DDEATH/DBIRTH, seq wrap 255 -> 0, rebirth, death by connection loss, bdSeq persisted', async () => {
      const { devices, rig } = rack();
      const px = await proxy(broker.port);
      const stateDir = tempDir('rp-sp-');
      const n = node(rig, devices, `mqtt://127.0.0.1:${px.port}`, { groupId: 'G1' }, { stateDir });
      n.start();
      try {
        await until('DBIRTH m2', () => of('G1').some((m) => m.topic === 'spBv1.0/G1/DBIRTH/s1-r1/m2'));
        const [nb, db1, db2] = of('G1');
        assert.equal(nb!.topic, 'spBv1.0/G1/NBIRTH/s1-r1');
        assert.equal(nb!.qos, 0);
        assert.equal(nb!.retain, false);
        assert.equal(nb!.p.seq, 0);
        assert.ok(typeof nb!.p.timestamp === 'number' && Math.abs(nb!.p.timestamp - Date.now()) < 10_000);
        const bd = byName(nb!.p, 'bdSeq');
        assert.equal(bd?.datatype, DT.Int64);
        assert.equal(bd?.longValue ?? 0, 0, 'bdSeq starts at 0');
        const rb = byName(nb!.p, 'Node Control/Rebirth');
        assert.equal(rb?.datatype, DT.Boolean);
        assert.equal(rb?.booleanValue, false);
        assert.equal(byName(nb!.p, 'Rack/State')?.stringValue, 'running');
        assert.equal(byName(nb!.p, 'Rack/Power W')?.doubleValue, 3000 + 3001);
        assert.equal(byName(nb!.p, 'Rack/Active Demands')?.datatype, DT.Int32);
        assert.equal(byName(nb!.p, 'Rack Control/Curtail')?.booleanValue, false);
        assert.equal(byName(nb!.p, 'Rack Control/Budget W')?.datatype, DT.Int32);
        assert.equal(byName(nb!.p, 'Properties/Writes Accepted')?.booleanValue, true);
        for (const m of nb!.p.metrics) assert.ok(m.name && m.datatype !== undefined && typeof m.timestamp === 'number', `NBIRTH metric ${m.name} has name, datatype, timestamp`);
        assert.deepEqual([db1!.topic, db1!.p.seq, db2!.p.seq], ['spBv1.0/G1/DBIRTH/s1-r1/m1', 1, 2]);
        assert.equal(db1!.qos, 0);
        assert.equal(byName(db1!.p, 'Power W')?.doubleValue, 3000);
        assert.equal(byName(db1!.p, 'Power W')?.datatype, DT.Double);
        assert.equal(byName(db1!.p, 'State')?.stringValue, 'running');
        assert.equal(byName(db1!.p, 'Hashrate TH/s')?.doubleValue, 100);
        assert.equal(byName(db1!.p, 'Temperature C')?.isNull, true);
        assert.equal(byName(db1!.p, 'Control/Curtail')?.booleanValue, false);
        const aliases = [...nb!.p.metrics, ...db1!.p.metrics, ...db2!.p.metrics].flatMap((m) => (m.alias === undefined ? [] : [m.alias]));
        assert.equal(new Set(aliases).size, aliases.length, 'aliases unique within the edge node');

        // report by exception: nothing changed, nothing sent; one power change, one DDATA with that metric alone (alias, no name)
        n.update();
        await sleep(100);
        assert.equal(of('G1').length, 3);
        devices[0]!.runningW = 2500;
        rig.poll();
        n.update();
        const dd = await until('DDATA', () => of('G1').find((m) => m.topic === 'spBv1.0/G1/DDATA/s1-r1/m1'));
        // rack power changed too: NDATA (seq 3) first, then the device's DDATA
        assert.equal(dd.p.seq, 4);
        assert.equal(dd.p.metrics.length, 1);
        assert.equal(dd.p.metrics[0]!.name, undefined);
        assert.equal(dd.p.metrics[0]!.alias, byName(db1!.p, 'Power W')!.alias);
        assert.equal(dd.p.metrics[0]!.doubleValue, 2500);
        const nd = await until('NDATA', () => of('G1').find((m) => m.topic === 'spBv1.0/G1/NDATA/s1-r1'));
        assert.equal(nd.p.seq, 3);
        assert.equal(nd.p.metrics.length, 1);
        assert.equal(nd.p.metrics[0]!.alias, byName(nb!.p, 'Rack/Power W')!.alias);

        // a device that stops answering: DDEATH; back: DBIRTH
        rig.latest.set('m2', { ...devices[1]!.reading(), online: false, state: 'unreachable', freshness: 'stale' });
        n.update();
        await until('DDEATH', () => of('G1').some((m) => m.topic === 'spBv1.0/G1/DDEATH/s1-r1/m2'));
        rig.poll();
        n.update();
        await until('DBIRTH again', () => of('G1').filter((m) => m.topic === 'spBv1.0/G1/DBIRTH/s1-r1/m2').length === 2);

        // > 256 messages: seq wraps 255 -> 0 with no gap
        for (let i = 0; i < 300; i++) {
          devices[0]!.runningW = 2000 + i;
          rig.poll();
          n.update();
          if (i % 50 === 0) await sleep(5);
        }
        await until('300 DDATA', () => of('G1').filter((m) => m.topic === 'spBv1.0/G1/DDATA/s1-r1/m1').length === 301);
        const session = of('G1');
        assertSeq(session);
        assert.ok(session.some((m, i) => i > 0 && m.p.seq === 0 && session[i - 1]!.p.seq === 255), 'wrapped 255 -> 0');

        // rebirth: NCMD Node Control/Rebirth -> NBIRTH (seq 0, same bdSeq) and every DBIRTH
        const before = of('G1').length;
        await watch.publishAsync('spBv1.0/G1/NCMD/s1-r1', command([{ name: 'Node Control/Rebirth', datatype: DT.Boolean, booleanValue: true }]));
        await until('rebirth DBIRTHs', () => of('G1').slice(before).filter((m) => m.topic.includes('/DBIRTH/')).length === 2);
        const re = of('G1').slice(before);
        assert.equal(re[0]!.topic, 'spBv1.0/G1/NBIRTH/s1-r1');
        assert.equal(re[0]!.p.seq, 0);
        assert.equal(byName(re[0]!.p, 'bdSeq')?.longValue ?? 0, 0, 'a rebirth keeps the bdSeq');
        assert.deepEqual(re.slice(1, 3).map((m) => m.p.seq), [1, 2]);

        // death: the connection is cut; the broker publishes the Will: NDEATH, QoS 1, not retained, bdSeq only, no seq
        const deaths = () => of('G1').filter((m) => m.topic === 'spBv1.0/G1/NDEATH/s1-r1');
        px.cut();
        const death = await until('NDEATH', () => deaths()[0]);
        assert.equal(death.qos, 1);
        assert.equal(death.retain, false);
        assert.equal(death.p.seq, undefined);
        assert.deepEqual(death.p.metrics.map((m) => [m.name, m.datatype, m.longValue ?? 0]), [['bdSeq', DT.Int64, 0]]);
        // reconnect (backoff) with the next bdSeq, then births again
        const births = () => of('G1').filter((m) => m.topic === 'spBv1.0/G1/NBIRTH/s1-r1');
        await until('NBIRTH after reconnect', () => births().length === 3);
        assert.equal(byName(births()[2]!.p, 'bdSeq')?.longValue, 1);
        assert.equal(births()[2]!.p.seq, 0);
      } finally {
        await n.stop();
      }
      // clean stop (MQTT 5 DISCONNECT "with Will Message"): NDEATH with the last bdSeq
      const last = await until('NDEATH at stop', () => of('G1').filter((m) => m.topic === 'spBv1.0/G1/NDEATH/s1-r1')[1]);
      assert.equal(byName(last.p, 'bdSeq')?.longValue, 1);
      // the bdSeq survives a restart: a new node on the same stateDir continues at 2
      const again = node(rig, devices, `mqtt://127.0.0.1:${px.port}`, { groupId: 'G1' }, { stateDir });
      again.start();
      try {
        await until('NBIRTH after restart', () => of('G1').filter((m) => m.topic === 'spBv1.0/G1/NBIRTH/s1-r1').length === 4);
        assert.equal(byName(of('G1').filter((m) => m.topic === 'spBv1.0/G1/NBIRTH/s1-r1')[3]!.p, 'bdSeq')?.longValue, 2);
      } finally {
        await again.stop();
        await px.close();
        await rig.stop();
      }
    });

    test('DCMD Control/Curtail sheds that device through the engine; NCMD budget; false ends it', async () => {
      const { devices, rig } = rack();
      const n = node(rig, devices, broker.url, { groupId: 'G2' });
      n.start();
      try {
        const birth = await until('DBIRTH m1', () => of('G2').find((m) => m.topic === 'spBv1.0/G2/DBIRTH/s1-r1/m1'));
        const alias = byName(birth.p, 'Control/Curtail')!.alias!;
        // by alias, as hosts do after the birth
        await watch.publishAsync('spBv1.0/G2/DCMD/s1-r1/m1', command([{ alias, datatype: DT.Boolean, booleanValue: true }]));
        await until('m1 curtailed', () => devices[0]!.state === 'curtailed');
        assert.equal(devices[1]!.state, 'running', 'only the device named by the DCMD');
        const d = rig.engine.demandViews().find((x) => x.key.startsWith('command:sparkplug-'));
        assert.ok(d, 'a command demand from sparkplug');
        rig.poll();
        n.update();
        await until('DDATA Control/Curtail true', () => of('G2').some((m) => m.topic === 'spBv1.0/G2/DDATA/s1-r1/m1' && m.p.metrics.some((x) => x.alias === alias && x.booleanValue === true)));
        await until('DDATA State curtailed', () => of('G2').some((m) => m.topic === 'spBv1.0/G2/DDATA/s1-r1/m1' && m.p.metrics.some((x) => x.stringValue === 'curtailed')));
        await watch.publishAsync('spBv1.0/G2/NCMD/s1-r1', command([{ name: 'Rack Control/Budget W', datatype: DT.Int32, intValue: 4000 }]));
        await until('budget demand', () => rig.engine.demands.get('budget:sparkplug')?.maxW === 4000);
        await watch.publishAsync('spBv1.0/G2/NCMD/s1-r1', command([{ name: 'Rack Control/Budget W', datatype: DT.Int32, intValue: 0 }]));
        await until('budget cleared', () => !rig.engine.demands.has('budget:sparkplug'));
        await watch.publishAsync('spBv1.0/G2/DCMD/s1-r1/m1', command([{ name: 'Control/Curtail', datatype: DT.Boolean, booleanValue: false }]));
        await until('m1 restored', () => devices[0]!.state === 'running', 10_000);
        assert.equal(rig.engine.demands.size, 0);
      } finally {
        await n.stop();
        await rig.stop();
      }
    });

    test('with security.requireSigned, Sparkplug writes are refused (they cannot be signed); rebirth still works', async () => {
      const { devices, rig } = rack();
      const n = node(rig, devices, broker.url, { groupId: 'G3' }, { requireSigned: true });
      n.start();
      try {
        const nb = await until('NBIRTH', () => of('G3').find((m) => m.topic === 'spBv1.0/G3/NBIRTH/s1-r1'));
        assert.equal(byName(nb.p, 'Properties/Writes Accepted')?.booleanValue, false);
        await watch.publishAsync('spBv1.0/G3/NCMD/s1-r1', command([{ name: 'Rack Control/Curtail', datatype: DT.Boolean, booleanValue: true }]));
        await watch.publishAsync('spBv1.0/G3/DCMD/s1-r1/m1', command([{ name: 'Control/Curtail', datatype: DT.Boolean, booleanValue: true }]));
        await watch.publishAsync('spBv1.0/G3/NCMD/s1-r1', command([{ name: 'Node Control/Rebirth', datatype: DT.Boolean, booleanValue: true }]));
        await until('rebirth', () => of('G3').filter((m) => m.topic === 'spBv1.0/G3/NBIRTH/s1-r1').length === 2);
        assert.equal(rig.engine.demands.size, 0);
        assert.deepEqual(devices.map((d) => d.calls.length), [0, 0]);
      } finally {
        await n.stop();
        await rig.stop();
      }
    });

    test('primary host STATE: births wait for online; an older STATE is ignored; offline ends the session, which starts over', async () => {
      const { devices, rig } = rack(['m1']);
      const host = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'sp-host' });
      const state = (online: boolean, timestamp: number) => host.publishAsync('spBv1.0/STATE/scada', JSON.stringify({ online, timestamp }), { qos: 1, retain: true });
      const t0 = Date.now();
      await state(false, t0);
      const n = node(rig, devices, broker.url, { groupId: 'G4', primaryHostId: 'scada' });
      n.start();
      const births = () => of('G4').filter((m) => m.topic === 'spBv1.0/G4/NBIRTH/s1-r1');
      const deaths = () => of('G4').filter((m) => m.topic === 'spBv1.0/G4/NDEATH/s1-r1');
      try {
        await until('connected', () => n.connected);
        await sleep(300);
        assert.equal(births().length, 0, 'no birth while the primary host is offline');
        await state(true, t0 + 1);
        await until('NBIRTH', () => births().length === 1);
        await state(false, t0 - 10); // older than the last STATE: ignored
        await sleep(300);
        assert.equal(deaths().length, 0);
        assert.equal(n.connected, true);
        await state(false, t0 + 2);
        const death = await until('NDEATH', () => deaths()[0]);
        assert.equal(byName(death.p, 'bdSeq')?.longValue ?? 0, byName(births()[0]!.p, 'bdSeq')?.longValue ?? 0);
        await until('reconnected', () => n.stats.connects === 2 && n.connected);
        await sleep(300);
        assert.equal(births().length, 1, 'after reconnecting it waits for the host again');
        await state(true, t0 + 3);
        await until('NBIRTH again', () => births().length === 2);
        assert.equal(byName(births()[1]!.p, 'bdSeq')?.longValue, 1);
      } finally {
        await n.stop();
        await host.publishAsync('spBv1.0/STATE/scada', '', { qos: 1, retain: true });
        await host.endAsync();
        await rig.stop();
      }
    });
  });
}
