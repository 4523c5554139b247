import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { renderJsonSchemas } from '../protocol/json-schema.js';
import { commandEnvelopeSchema, commandResultSchema, statusMessageSchema } from '../protocol/messages.js';
import { rackTopics } from '../protocol/topics.js';
import { repoRoot } from '../hil/testing/root.js';

const schemaDir = join(repoRoot(), 'protocol', 'schema');

test('checked-in JSON Schema files are up to date (run `npm run schema`)', () => {
  const expected = renderJsonSchemas();
  const present = readdirSync(schemaDir).filter((f) => f.endsWith('.schema.json'));
  assert.deepEqual([...present].sort(), Object.keys(expected).sort(), 'schema file set differs: run npm run schema');
  for (const [name, text] of Object.entries(expected)) {
    assert.equal(readFileSync(join(schemaDir, name), 'utf8'), text, `protocol/schema/${name} is stale: run npm run schema`);
  }
});

test('topics follow rackpilot/v1/<site>/<rack>', () => {
  const t = rackTopics('site-1', 'rack_A');
  assert.equal(t.root, 'rackpilot/v1/site-1/rack_A');
  assert.equal(t.cmdResult, 'rackpilot/v1/site-1/rack_A/cmd/result');
  assert.throws(() => rackTopics('a/b', 'r'));
  assert.throws(() => rackTopics('s', 'r#'));
});

test('command envelope accepts ISO and epoch-ms expiry and rejects unknown keys', () => {
  assert.ok(commandEnvelopeSchema.safeParse({ id: 'a', command: 'ping', expiresAt: '2030-01-01T00:00:00Z' }).success);
  assert.ok(commandEnvelopeSchema.safeParse({ id: 'a', command: 'ping', expiresAt: 1893456000000 }).success);
  assert.equal(commandEnvelopeSchema.safeParse({ id: 'a', command: 'ping', expiresAt: 'tomorrow' }).success, false);
  assert.equal(commandEnvelopeSchema.safeParse({ id: 'a', command: 'ping', extra: 1 }).success, false);
  assert.equal(commandEnvelopeSchema.safeParse({ id: '', command: 'ping' }).success, false);
});

test('result and status schemas accept what the agent sends', () => {
  assert.ok(commandResultSchema.safeParse({ id: null, command: null, status: 'rejected', error: { code: 'INVALID_JSON', message: 'x' }, ts: new Date().toISOString() }).success);
  assert.ok(statusMessageSchema.safeParse({ online: false, ts: new Date().toISOString(), site: 's', rack: 'r', agentVersion: '0.1.0', protocol: 'v1', reason: 'connection-lost' }).success);
});
