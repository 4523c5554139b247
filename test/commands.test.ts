import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { CommandHandler, MAX_COMMAND_BYTES, type CommandMeta } from '../agent/commands.js';
import { engineRig } from '../hil/testing/engine-rig.js';
import { commandResultSchema, type CommandResult } from '../protocol/messages.js';

function rig() {
  const results: { r: CommandResult; meta: CommandMeta }[] = [];
  const log = pino({ level: 'silent' });
  const { engine } = engineRig([]);
  const h = new CommandHandler(engine, new Set(['m1']), 0, (r, meta) => results.push({ r: commandResultSchema.parse(r), meta }), '9.9.9', log);
  const send = (payload: string | Buffer, meta: Partial<CommandMeta> = {}): void => h.handle(Buffer.isBuffer(payload) ? payload : Buffer.from(payload), { retain: false, ...meta });
  const settle = () => new Promise((r) => setImmediate(r));
  return { results, send, settle };
}

describe('command intake', () => {
  test('ping is accepted then succeeds with the agent version', async () => {
    const { results, send, settle } = rig();
    send(JSON.stringify({ id: 'p1', command: 'ping' }));
    await settle();
    assert.deepEqual(results.map((x) => x.r.status), ['accepted', 'succeeded']);
    assert.equal(results[1]!.r.result?.agentVersion, '9.9.9');
  });

  test('an empty payload (clearing a retained command) is ignored', () => {
    const { results, send } = rig();
    send('');
    assert.equal(results.length, 0);
  });

  test('oversized payloads are rejected without parsing', () => {
    const { results, send } = rig();
    send(Buffer.alloc(MAX_COMMAND_BYTES + 1, 0x20));
    assert.equal(results[0]!.r.error?.code, 'PAYLOAD_TOO_LARGE');
    assert.equal(results[0]!.r.id, null);
  });

  test('a rejected id may be fixed and resent; an executed one may not', async () => {
    const { results, send, settle } = rig();
    send(JSON.stringify({ id: 'x1', command: 'ping', params: { loud: true } }));
    assert.equal(results[0]!.r.error?.code, 'INVALID_PARAMS');
    assert.match(results[0]!.r.error?.message ?? '', /^params: Unrecognized key: "loud"/);
    send(JSON.stringify({ id: 'x1', command: 'ping' }));
    await settle();
    assert.equal(results.at(-1)!.r.status, 'succeeded');
    send(JSON.stringify({ id: 'x1', command: 'ping' }));
    assert.equal(results.at(-1)!.r.error?.code, 'DUPLICATE_ID');
    assert.match(results.at(-1)!.r.error?.message ?? '', /last status: succeeded/);
  });

  test('retained commands are refused, with the id when readable, and the meta is passed through', () => {
    const { results, send } = rig();
    const corr = Buffer.from('c');
    send(JSON.stringify({ id: 'r1', command: 'curtail' }), { retain: true, responseTopic: 'reply/x', correlationData: corr });
    assert.equal(results[0]!.r.status, 'rejected');
    assert.equal(results[0]!.r.id, 'r1');
    assert.equal(results[0]!.r.error?.code, 'RETAINED_COMMAND');
    assert.equal(results[0]!.meta.responseTopic, 'reply/x');
    assert.equal(results[0]!.meta.correlationData, corr);
  });

  test('an envelope error names the field; a non-object payload is an invalid command', () => {
    const { results, send } = rig();
    send(JSON.stringify({ id: 'e1', command: 'curtail', expiresAt: 'soon' }));
    assert.equal(results[0]!.r.error?.code, 'INVALID_COMMAND');
    assert.match(results[0]!.r.error?.message ?? '', /^expiresAt: /);
    send('[1,2]');
    assert.equal(results[1]!.r.error?.code, 'INVALID_COMMAND');
    assert.equal(results[1]!.r.id, null);
    send('"curtail"');
    assert.equal(results[2]!.r.error?.code, 'INVALID_COMMAND');
  });
});
