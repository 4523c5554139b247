/**
 * The service's reload edge cases, in-process: a reload whose new agent and
 * whose fallback both fail to start is fatal (the process must exit so that
 * systemd restarts it, and the watchdog stops vouching for it); a stop asked
 * for while a reload waits makes the reload give way; a failed start refuses
 * later reloads.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { pino } from 'pino';
import { Agent } from '../agent/agent.js';
import { validateConfig } from '../agent/config.js';
import { Service } from '../agent/service.js';
import { SystemdNotifier } from '../agent/systemd/notify.js';
import { tempDir } from '../hil/testing/temp-dir.js';

const silent = pino({ level: 'silent' });

function setup(): { file: string; raw: Record<string, unknown>; service: (onFatal?: (e: unknown) => void) => Service } {
  const dir = tempDir('rp-svc-unit-');
  // no devices, a broker on a closed port: the agent runs and keeps retrying the broker
  const raw = { site: 's', rack: 'unit', mqtt: { url: 'mqtt://127.0.0.1:9', reconnect: { minMs: 1000, maxMs: 2000 } }, log: { level: 'silent' }, stateDir: dir, health: { enabled: false } };
  const file = join(dir, 'config.yaml');
  writeFileSync(file, JSON.stringify(raw));
  const res = validateConfig(raw);
  assert.ok(res.ok, res.ok ? '' : res.errors.join('\n'));
  const config = res.config;
  return {
    file,
    raw,
    service: (onFatal) => new Service({ configPath: file, config, log: silent, notifier: new SystemdNotifier({ env: {} }), ...(onFatal ? { onFatal } : {}) }),
  };
}

describe('service reload edge cases', () => {
  // restored after each test; called with .call(this) only
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const realStart = Agent.prototype.start;
  afterEach(() => {
    Agent.prototype.start = realStart;
  });

  test('a reload whose new agent and fallback both fail to start is fatal', async () => {
    const { file, raw, service } = setup();
    let fatal: unknown;
    const svc = service((e) => (fatal = e));
    await svc.start();
    writeFileSync(file, JSON.stringify({ ...raw, poll: { intervalMs: 1234 } }));
    Agent.prototype.start = () => Promise.reject(new Error('cannot start'));
    const r = await svc.reload();
    assert.deepEqual(r, { outcome: 'failed', error: 'cannot start' });
    assert.ok(fatal instanceof Error && fatal.message === 'cannot start', 'onFatal was called');
    Agent.prototype.start = realStart;
    await svc.stop();
  });

  test('a reload whose new agent fails falls back to the previous config', async () => {
    const { file, raw, service } = setup();
    let fatal: unknown;
    const svc = service((e) => (fatal = e));
    await svc.start();
    writeFileSync(file, JSON.stringify({ ...raw, poll: { intervalMs: 1234 } }));
    let calls = 0;
    Agent.prototype.start = function (this: Agent) {
      calls++;
      return calls === 1 ? Promise.reject(new Error('new config cannot start')) : realStart.call(this);
    };
    const r = await svc.reload();
    assert.deepEqual(r, { outcome: 'failed', error: 'new config cannot start' });
    assert.equal(fatal, undefined);
    assert.equal(svc.agent.config.poll.intervalMs, 5000, 'the previous config runs again');
    Agent.prototype.start = realStart;
    await svc.stop();
  });

  test('a stop asked for while a reload waits: the reload gives way', async () => {
    const { file, raw, service } = setup();
    const svc = service();
    const started = svc.start();
    writeFileSync(file, JSON.stringify({ ...raw, poll: { intervalMs: 1234 } }));
    const r = svc.reload(); // queued behind the start
    const stopped = svc.stop();
    await started;
    assert.deepEqual(await r, { outcome: 'skipped', why: 'stopping' });
    await stopped;
  });

  test('after a failed start, a reload does nothing', async () => {
    const { service } = setup();
    const svc = service();
    Agent.prototype.start = () => Promise.reject(new Error('no start'));
    await assert.rejects(svc.start(), /no start/);
    Agent.prototype.start = realStart;
    assert.deepEqual(await svc.reload(), { outcome: 'skipped', why: 'the agent did not start' });
    await svc.stop();
  });
});
