/**
 * Detection against the LuxOS simulator and tiny purpose-built responders,
 * over real sockets on loopback only. Fingerprints are passed explicitly
 * (test families modelled on the registry's), so these tests do not depend
 * on other families' work in progress; the last test uses the registry.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { LuxosSim } from '../hil/sim/luxos-sim.js';
import { WhatsminerV3Sim } from '../hil/sim/whatsminer-v3-sim.js';
import { statusSection } from '../hil/sim/cgminer-server.js';
import { fdsBackTo, openFds } from '../hil/testing/fds.js';
import { fakeApi, fakeWeb, silentListener, type Closable } from '../hil/testing/responders.js';
import { refusedPort } from '../hil/testing/ports.js';
import type { DriverDefinition, Fingerprint } from './contract.js';
import { apiFirmware, detect } from './detect.js';
import { luxosDriver } from './luxos/index.js';
import { DRIVERS } from './registry.js';

const fake = (id: string, fingerprint: Fingerprint): DriverDefinition => ({ ...(luxosDriver as unknown as DriverDefinition), id, fingerprint });
const FAMILIES: DriverDefinition[] = [
  luxosDriver,
  fake('antminer', { api: ['BMMiner', 'Antminer'], web: { realm: 'antMiner' } }),
  fake('vnish', { api: ['VNISH'], web: { bodyIncludes: ['AnthillOS'] } }),
  fake('braiins', { api: ['BOSminer', 'BOSer'], web: { bodyIncludes: ['Braiins OS'] }, ports: [50051] }),
  fake('whatsminer-v2', { api: ['BTMiner'], web: { redirectIncludes: ['/cgi-bin/luci'] } }),
  fake('whatsminer-v3', { ports: [4433] }),
  fake('epic', { web: { bodyIncludes: ['Miner Web Dashboard'] } }),
];

const open: Closable[] = [];
after(async () => {
  for (const s of open.splice(0)) await s.close();
});

/**
 * A port nothing listens on (for the probes that must be refused). Not from
 * freePort(): a simulator started later in this file could be handed that
 * port, and the "refused" probes would then find it (CI saw braiins detected
 * on a silent listener that way).
 */
let closedPort = 0;
const base = async () => {
  closedPort ||= await refusedPort();
  return { host: '127.0.0.1', httpPort: closedPort, probeTimeoutMs: 1500, drivers: FAMILIES, portMap: { 4433: closedPort, 50051: closedPort } };
};

const ok = (code: number, msg: string, desc: string, sections: Record<string, unknown>) => ({ STATUS: statusSection('S', code, msg, desc), ...sections, id: 1 });

describe('detect', () => {
  test('the LuxOS simulator is luxos, with model and firmware, although its model string says Antminer', async () => {
    const sim = new LuxosSim({ model: 'Antminer S19j Pro' });
    const { port } = await sim.listen();
    open.push(sim);
    const d = await detect({ ...(await base()), apiPort: port });
    assert.equal(d.driver, 'luxos');
    assert.equal(d.confidence, 'high');
    assert.equal(d.model, 'Antminer S19j Pro');
    assert.equal(d.firmware, 'LUXminer 2024.11.1-sim');
    assert.ok(d.evidence.some((e) => e.detail.includes('LUXminer') && e.strength === 'firmware'));
    assert.deepEqual(d.alternatives, ['antminer'], 'the generic "Antminer" marker is visible but loses');
  });

  test('Vnish on an Antminer: the firmware marker beats bmminer/Antminer', async () => {
    const { server, port } = await fakeApi({
      version: ok(22, 'CGMiner versions', 'bmminer 1.0.0', { VERSION: [{ BMMiner: '2.0.0', API: '3.1', Type: 'Antminer S19j Pro (vnish 1.2.6)' }] }),
    });
    open.push(server);
    const d = await detect({ ...(await base()), apiPort: port });
    assert.equal(d.driver, 'vnish');
    assert.equal(d.model, 'Antminer S19j Pro (vnish 1.2.6)');
    assert.equal(d.firmware, 'BMMiner 2.0.0');
    assert.deepEqual(d.alternatives, ['antminer']);
  });

  test('stock Antminer: API says BMMiner, the web UI asks for Digest auth with realm antMiner Configuration', async () => {
    const api = await fakeApi({ version: ok(22, 'CGMiner versions', 'bmminer 1.0.0', { VERSION: [{ BMMiner: '1.0.0', Type: 'Antminer S19' }] }) });
    const web = await fakeWeb({ status: 401, headers: { 'www-authenticate': 'Digest realm="antMiner Configuration", nonce="abc", qop="auth"' }, body: 'unauthorized' });
    open.push(api.server, web.server);
    const d = await detect({ ...(await base()), apiPort: api.port, httpPort: web.port });
    assert.equal(d.driver, 'antminer');
    assert.equal(d.confidence, 'high', 'generic markers nobody else claims');
    assert.equal(d.firmware, 'BMMiner 1.0.0');
    assert.ok(d.evidence.some((e) => e.detail.startsWith('web realm')));
  });

  test('Braiins: BOSminer in the API plus its gRPC port', async () => {
    const api = await fakeApi({ version: ok(22, 'BOSminer versions', 'BOSminer bosminer-plugin-am 0.2.0', { VERSION: [{ 'BOSminer+': '0.2.0-3f5b5a6', API: '3.7' }] }) });
    const grpc = await silentListener();
    open.push(api.server, grpc.server);
    const d = await detect({ ...(await base()), apiPort: api.port, portMap: { 50051: grpc.port, 4433: closedPort } });
    assert.equal(d.driver, 'braiins');
    assert.equal(d.evidence.length, 2);
    assert.ok(d.evidence.some((e) => e.strength === 'port'));
  });

  test('Whatsminer API v2: version object in STATUS.Msg, model from devdetails; the LuCI redirect also matches', async () => {
    const api = await fakeApi({
      version: { STATUS: 'S', When: 1, Code: 131, Msg: { api_ver: '2.0.5', fw_ver: '20230911.12.Rel', platform: 'H6OS' }, Description: 'btminer' },
      devdetails: ok(69, 'Device Details', 'btminer', { DEVDETAILS: [{ DEVDETAILS: 0, Name: 'SM', ID: 0, Driver: 'bitmicro', Model: 'M50S+.VK30' }] }),
      summary: ok(11, 'Summary', 'BTMiner 1.0', { SUMMARY: [{}] }),
    });
    const web = await fakeWeb({ status: 302, headers: { location: '/cgi-bin/luci' } });
    open.push(api.server, web.server);
    const d = await detect({ ...(await base()), apiPort: api.port, httpPort: web.port });
    assert.equal(d.driver, 'whatsminer-v2');
    assert.equal(d.firmware, '20230911.12.Rel');
    assert.equal(d.model, 'M50S+.VK30');
    assert.ok(d.evidence.some((e) => e.detail.includes('redirect')));
  });

  test('a family known only by its port (Whatsminer API v3 on 4433) is identified with low confidence', async () => {
    const v3 = await silentListener();
    open.push(v3.server);
    const d = await detect({ ...(await base()), apiPort: closedPort, portMap: { 4433: v3.port, 50051: closedPort } });
    assert.equal(d.driver, 'whatsminer-v3');
    assert.equal(d.confidence, 'low');
  });

  test('with the real fingerprints, Whatsminer API v3 needs its framed answer: a silent or foreign service on 4433 is not it', async () => {
    await base(); // sets closedPort
    const silent = await silentListener();
    open.push(silent.server);
    const web = await fakeWeb({ status: 200, body: '<html>some other service</html>' });
    open.push(web.server);
    for (const port of [silent.port, web.port]) {
      const d = await detect({ host: '127.0.0.1', apiPort: closedPort, httpPort: closedPort, probeTimeoutMs: 800, drivers: DRIVERS, portMap: { 4433: port, 50051: closedPort } });
      assert.notEqual(d.driver, 'whatsminer-v3', JSON.stringify(d.probes));
    }
    const sim = new WhatsminerV3Sim({ password: 'x' });
    const { port } = await sim.listen();
    open.push(sim);
    const d = await detect({ host: '127.0.0.1', apiPort: closedPort, httpPort: closedPort, probeTimeoutMs: 1500, drivers: DRIVERS, portMap: { 4433: port, 50051: closedPort } });
    assert.equal(d.driver, 'whatsminer-v3');
    assert.equal(d.confidence, 'high');
  });

  test('an HTTP API on the API port (ePIC on 4028) gets its own GET /', async () => {
    const web = await fakeWeb({ status: 200, headers: { 'content-type': 'text/html' }, body: '<html><title>ePIC</title>Miner Web Dashboard</html>' });
    open.push(web.server);
    const d = await detect({ ...(await base()), apiPort: web.port });
    assert.equal(d.driver, 'epic');
    assert.ok(d.probes.some((p) => p.probe === `web:${web.port}` && p.answered));
  });

  test('nothing listening: unknown, and each probe says what it saw', async () => {
    const d = await detect({ ...(await base()), apiPort: closedPort });
    assert.equal(d.driver, null);
    assert.equal(d.confidence, null);
    assert.ok(d.probes.length >= 3);
    for (const p of d.probes) {
      assert.equal(p.answered, false);
      assert.match(p.saw, /CONNECT_REFUSED/);
    }
  });

  test('a silent listener cannot stall detection, and every socket is closed afterwards', async () => {
    const silent = await silentListener();
    const web = await silentListener();
    open.push(silent.server, web.server);
    const fds = openFds();
    const t0 = Date.now();
    const d = await detect({ ...(await base()), apiPort: silent.port, httpPort: web.port, probeTimeoutMs: 300 });
    assert.ok(Date.now() - t0 < 3000, `settled in ${Date.now() - t0} ms`);
    assert.equal(d.driver, null);
    assert.ok(d.probes.filter((p) => p.kind !== 'port').every((p) => /DEADLINE_EXCEEDED|READ_TIMEOUT|CONNECT_TIMEOUT/.test(p.saw)), JSON.stringify(d.probes));
    if (fds >= 0) assert.ok((await fdsBackTo(fds)) <= fds, 'no socket left open');
  });

  test('garbage on the API port is reported, not thrown', async () => {
    const api = await fakeApi({});
    api.server.fault = { kind: 'garbage' };
    open.push(api.server);
    const d = await detect({ ...(await base()), apiPort: api.port });
    assert.equal(d.driver, null);
    assert.ok(d.probes.some((p) => p.probe === 'api version' && p.answered && /not the cgminer API/.test(p.saw)));
  });

  test('apiFirmware reads the model/firmware strings with one request', async () => {
    const sim = new LuxosSim();
    const { port } = await sim.listen();
    open.push(sim);
    const before = sim.server.requests;
    assert.deepEqual(await apiFirmware({ host: '127.0.0.1', apiPort: port, drivers: FAMILIES }), { model: 'Antminer S21', firmware: 'LUXminer 2024.11.1-sim' });
    assert.equal(sim.server.requests - before, 1);
  });

  test('every registered fingerprint is data detect() can use', () => {
    for (const d of DRIVERS as readonly DriverDefinition[]) {
      const fp = d.fingerprint;
      if (!fp) continue;
      for (const m of fp.api ?? []) assert.ok(m.trim().length >= 3, `${d.id}: api marker "${m}"`);
      for (const p of fp.ports ?? []) assert.ok(Number.isInteger(p) && p > 0 && p < 65536, `${d.id}: port ${p}`);
    }
  });
});
