import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { CommandHandler, MAX_COMMAND_BYTES, RECENT_IDS, type CommandMeta } from '../agent/commands.js';
import { securityConfigSchema } from '../agent/config.js';
import { sleep } from '../drivers/lib/deadline.js';
import { engineRig, FakeDevice } from '../hil/testing/engine-rig.js';
import { commandResultSchema, type CommandResult } from '../protocol/messages.js';
import { generateSigningKeyPair, parsePrivateKey, prepareCommand, signCommand } from '../protocol/signing.js';

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

  test('a rejected id may be fixed and resent; an executed one is not run again: its result is re-sent', async () => {
    const { results, send, settle } = rig();
    send(JSON.stringify({ id: 'x1', command: 'ping', params: { loud: true } }));
    assert.equal(results[0]!.r.error?.code, 'INVALID_PARAMS');
    assert.match(results[0]!.r.error?.message ?? '', /^params: Unrecognized key: "loud"/);
    send(JSON.stringify({ id: 'x1', command: 'ping' }));
    await settle();
    assert.equal(results.at(-1)!.r.status, 'succeeded');
    const final = results.at(-1)!.r;
    send(JSON.stringify({ id: 'x1', command: 'ping' }));
    assert.equal(results.length, 4);
    assert.deepEqual(results.at(-1)!.r, final, 'the same result, its original ts included');
    send(JSON.stringify({ id: 'x1', command: 'ping', params: {} }));
    assert.deepEqual(results.at(-1)!.r, final, 'params {} is what no params means');
    send(JSON.stringify({ id: 'x1', command: 'restore' }));
    assert.equal(results.at(-1)!.r.error?.code, 'DUPLICATE_ID');
    assert.match(results.at(-1)!.r.error?.message ?? '', /already used for a different command \(last status: succeeded\)/);
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

// ---------- idempotent ids and signed commands (issue 7) ----------

const SITE_RACK = 'site-a/rack-01';

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** One FakeDevice `m1` behind a real engine, so a command that runs leaves a trace (calls, demands). */
function deviceRig(o: { delayMs?: number; security?: Record<string, unknown> | 'none' } = {}) {
  const dev = new FakeDevice('m1', o.delayMs ?? 5);
  const er = engineRig([dev]);
  er.poll();
  const pairs = { a: generateSigningKeyPair(), b: generateSigningKeyPair(), x: generateSigningKeyPair() };
  const security =
    o.security === 'none'
      ? undefined
      : securityConfigSchema.parse(
          o.security ?? {
            commandKeys: [
              { id: 'central-a', publicKey: pairs.a.publicKeyPem },
              { id: 'central-b', publicKey: pairs.b.publicKeyRaw },
            ],
          },
        );
  const wall = { t: Date.now() };
  const results: CommandResult[] = [];
  const h = new CommandHandler(er.engine, new Set(['m1']), 0, (r) => results.push(commandResultSchema.parse(r)), '9.9.9', pino({ level: 'silent' }), {
    security,
    target: SITE_RACK,
    wallNow: () => wall.t,
  });
  const send = (payload: string): void => h.handle(Buffer.from(payload), { retain: false });
  /** Signed with key `who` under `keyId` (default central-<who>), issued at wall time + `age` offsets. */
  const signed = (cmd: Record<string, unknown>, who: 'a' | 'b' | 'x' = 'a', o2: { keyId?: string; issuedAt?: number } = {}): Record<string, unknown> => {
    const prepared = prepareCommand(cmd, { target: SITE_RACK, now: o2.issuedAt ?? wall.t });
    return signCommand(prepared, parsePrivateKey(pairs[who].privateKeyPem), o2.keyId ?? `central-${who}`);
  };
  const of = (id: string) => results.filter((r) => r.id === id);
  const finalOf = (id: string) => until(`the final result of ${id}`, () => of(id).some((r) => r.status === 'succeeded' || r.status === 'failed'));
  const untouched = () => {
    assert.deepEqual(dev.calls, [], 'no device was acted on');
    assert.deepEqual(er.engine.demandViews(), [], 'no demand was raised');
    assert.equal(dev.state, 'running');
  };
  return { dev, er, h, wall, results, send, signed, of, finalOf, untouched, pairs };
}

describe('idempotent command ids', () => {
  test('a duplicate while the command runs gets its "accepted" again, afterwards its final result; it runs once', async () => {
    const r = deviceRig({ delayMs: 150, security: 'none' });
    r.send(JSON.stringify({ id: 'c1', command: 'curtail', params: { timeoutMs: 5000 } }));
    const accepted = r.of('c1')[0]!;
    assert.equal(accepted.status, 'accepted');
    r.send(JSON.stringify({ id: 'c1', command: 'curtail', params: { timeoutMs: 5000 }, expiresAt: r.wall.t + 60_000 }));
    assert.deepEqual(r.of('c1'), [accepted, accepted], 'the same accepted, not a second run (expiresAt is not part of what is asked)');
    await r.finalOf('c1');
    const final = r.of('c1')[2]!;
    assert.equal(final.status, 'succeeded');
    r.send(JSON.stringify({ id: 'c1', command: 'curtail', params: { timeoutMs: 5000 } }));
    assert.deepEqual(r.of('c1'), [accepted, accepted, final, final]);
    assert.deepEqual(r.dev.calls, ['curtail'], 'the device was curtailed once');
    assert.deepEqual(r.er.engine.demandViews().map((d) => d.key), ['command:c1']);
    r.send(JSON.stringify({ id: 'c1', command: 'curtail', params: { timeoutMs: 6000 } }));
    assert.equal(r.of('c1').at(-1)!.error?.code, 'DUPLICATE_ID', 'the same id asking for something else is refused');
    await r.er.stop();
  });

  test('an expired command is not remembered: resent with a later expiry it runs', async () => {
    const r = deviceRig({ security: 'none' });
    r.send(JSON.stringify({ id: 'e1', command: 'curtail', expiresAt: r.wall.t - 1 }));
    assert.deepEqual(r.of('e1').map((x) => [x.status, x.error?.code]), [['expired', 'EXPIRED']]);
    r.untouched();
    r.send(JSON.stringify({ id: 'e1', command: 'curtail', expiresAt: r.wall.t + 60_000 }));
    await r.finalOf('e1');
    assert.deepEqual(r.of('e1').map((x) => x.status), ['expired', 'accepted', 'succeeded']);
    assert.deepEqual(r.dev.calls, ['curtail']);
    await r.er.stop();
  });

  test('the memory of ids is bounded, oldest first, and never forgets a command still running', async () => {
    const r = deviceRig({ delayMs: 300, security: 'none' });
    r.send(JSON.stringify({ id: 'slow', command: 'curtail' }));
    for (let i = 0; i <= RECENT_IDS; i++) r.send(JSON.stringify({ id: `p${i}`, command: 'ping' }));
    const n = r.results.length;
    r.send(JSON.stringify({ id: 'slow', command: 'curtail' }));
    assert.deepEqual(r.results.slice(n).map((x) => [x.id, x.status]), [['slow', 'accepted']], 'running: re-sent, not run again');
    r.send(JSON.stringify({ id: `p${RECENT_IDS}`, command: 'ping' }));
    assert.equal(r.results.length, n + 2, 'the newest ping is remembered: its result re-sent');
    r.send(JSON.stringify({ id: 'p0', command: 'ping' }));
    assert.deepEqual(r.results.slice(n + 2).map((x) => x.status), ['accepted', 'succeeded'], 'the oldest ping was forgotten and runs again');
    await r.finalOf('slow');
    assert.deepEqual(r.dev.calls, ['curtail']);
    await r.er.stop();
  });

  test('a slow command never holds up intake: a ping sent after it is answered first', async () => {
    const r = deviceRig({ delayMs: 200, security: 'none' });
    r.send(JSON.stringify({ id: 'c1', command: 'curtail' }));
    r.send(JSON.stringify({ id: 'p1', command: 'ping' }));
    assert.deepEqual(r.results.map((x) => [x.id, x.status]), [
      ['c1', 'accepted'],
      ['p1', 'accepted'],
      ['p1', 'succeeded'],
    ]);
    await r.finalOf('c1');
    assert.deepEqual(r.results.at(-1)!.status, 'succeeded');
    await r.er.stop();
  });
});

describe('signed commands', () => {
  test('unsigned, forged, unknown key, stale, future, expired, wrong target: each refused with its own code, nothing runs', async () => {
    const r = deviceRig();
    const t = r.wall.t;
    const base = (id: string) => ({ id, command: 'curtail' });
    const cases: [string, Record<string, unknown>, string, string][] = [
      ['unsigned', base('u1'), 'rejected', 'UNSIGNED'],
      ['forged', { ...r.signed(base('f1')), params: { devices: ['m1'] } }, 'rejected', 'BAD_SIGNATURE'],
      ['signed by b under a\'s id', r.signed(base('f2'), 'b', { keyId: 'central-a' }), 'rejected', 'BAD_SIGNATURE'],
      ['unknown key', r.signed(base('k1'), 'x', { keyId: 'central-old' }), 'rejected', 'UNKNOWN_KEY'],
      ['issued 300 001 ms ago', r.signed(base('s1'), 'a', { issuedAt: t - 300_001 }), 'rejected', 'STALE'],
      ['issued 30 001 ms ahead', r.signed(base('s2'), 'a', { issuedAt: t + 30_001 }), 'rejected', 'STALE'],
      ['expired', r.signed({ ...base('x1'), expiresAt: new Date(t - 1).toISOString() }), 'expired', 'EXPIRED'],
      ['for another rack', r.signed({ ...base('w1'), target: 'site-a/rack-02' }), 'rejected', 'WRONG_TARGET'],
    ];
    for (const [what, cmd, status, code] of cases) {
      const before = r.results.length;
      r.send(JSON.stringify(cmd));
      const got = r.results.slice(before);
      assert.deepEqual(got.map((x) => [x.id, x.status, x.error?.code]), [[cmd.id, status, code]], what);
    }
    await sleep(50);
    r.untouched();
    assert.equal(r.er.activations.length, 0);
    // the same rig runs a valid one
    r.send(JSON.stringify(r.signed(base('ok1'))));
    await r.finalOf('ok1');
    assert.deepEqual(r.of('ok1').map((x) => x.status), ['accepted', 'succeeded']);
    assert.deepEqual(r.dev.calls, ['curtail']);
    await r.er.stop();
  });

  test('a replayed command is refused (REPLAYED) and runs once; a re-signed retry of the same id gets the earlier result', async () => {
    const r = deviceRig();
    const cmd = JSON.stringify(r.signed({ id: 'c1', command: 'curtail' }));
    r.send(cmd);
    await r.finalOf('c1');
    const [accepted, final] = r.of('c1');
    r.send(cmd);
    const replay = r.of('c1')[2]!;
    assert.equal(replay.status, 'rejected');
    assert.equal(replay.error?.code, 'REPLAYED');
    assert.match(replay.error?.message ?? '', /nonce already used \(by command "c1"\): this delivery is refused, the earlier one stands/);
    // re-encoded (other member order, whitespace): still the same signed command, still a replay
    r.send(JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(cmd) as object).reverse()), null, 1));
    assert.equal(r.of('c1')[3]!.error?.code, 'REPLAYED');
    // a different id reusing the nonce
    const nonce = (JSON.parse(cmd) as { nonce: string }).nonce;
    r.send(JSON.stringify(r.signed({ id: 'c2', command: 'curtail', nonce })));
    assert.equal(r.of('c2')[0]!.error?.code, 'REPLAYED');
    // central control's retry: same id, signed again (new nonce and issuedAt)
    r.wall.t += 1000;
    r.send(JSON.stringify(r.signed({ id: 'c1', command: 'curtail' })));
    assert.deepEqual(r.of('c1'), [accepted, final, replay, r.of('c1')[3], final]);
    assert.deepEqual(r.dev.calls, ['curtail'], 'curtailed once');
    assert.equal(r.er.activations.length, 1);
    await r.er.stop();
  });

  test('two keys (rotation) both act; an unsigned command is refused before anything else is looked at', async () => {
    const r = deviceRig();
    r.send(JSON.stringify(r.signed({ id: 'pa', command: 'ping' }, 'a')));
    r.send(JSON.stringify(r.signed({ id: 'pb', command: 'ping' }, 'b')));
    await r.finalOf('pb');
    assert.deepEqual(r.results.map((x) => [x.id, x.status]), [['pa', 'accepted'], ['pa', 'succeeded'], ['pb', 'accepted'], ['pb', 'succeeded']]);
    r.send(JSON.stringify({ id: 'q', command: 'reboot', params: { now: true } }));
    assert.equal(r.results.at(-1)!.error?.code, 'UNSIGNED');
    await r.er.stop();
  });

  test('requireSigned false: unsigned commands run, signed ones are still verified', async () => {
    const r = deviceRig();
    const r2 = deviceRig({ security: { requireSigned: false, commandKeys: [{ id: 'central-a', publicKey: r.pairs.a.publicKeyRaw }] } });
    r2.send(JSON.stringify({ id: 'u1', command: 'ping' }));
    assert.deepEqual(r2.of('u1').map((x) => x.status), ['accepted', 'succeeded']);
    const forged = { ...r.signed({ id: 'f1', command: 'curtail' }), id: 'f2' };
    r2.send(JSON.stringify(forged));
    assert.equal(r2.of('f2')[0]!.error?.code, 'BAD_SIGNATURE');
    r2.untouched();
    await r.er.stop();
    await r2.er.stop();
  });

  test('without keys, signature members are checked for shape only and ignored; target is still checked', async () => {
    const r = deviceRig({ security: 'none' });
    const other = deviceRig();
    const forged = { ...other.signed({ id: 'g1', command: 'ping' }), params: {} };
    r.send(JSON.stringify(forged));
    assert.deepEqual(r.of('g1').map((x) => x.status), ['accepted', 'succeeded']);
    r.send(JSON.stringify({ id: 'g2', command: 'ping', target: 'site-b/rack-01' }));
    assert.equal(r.of('g2')[0]!.error?.code, 'WRONG_TARGET');
    r.send(JSON.stringify({ id: 'g3', command: 'ping', sig: { keyId: 'k', alg: 'rsa', value: 'x' } }));
    assert.equal(r.of('g3')[0]!.error?.code, 'INVALID_COMMAND');
    assert.match(r.of('g3')[0]!.error?.message ?? '', /^sig\.alg: /);
    await r.er.stop();
    await other.er.stop();
  });
});
