/**
 * Property-based fuzzing of command intake (fast-check, 10 000 payloads):
 * whatever arrives on the command topic, intake never throws, every payload
 * gets a result that matches the published schema (or, for the empty
 * payload that clears a retained message, a logged drop), and every
 * accepted command gets exactly one final result.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import { CommandHandler, type CommandMeta } from '../agent/commands.js';
import { commandResultSchema, type CommandResult } from '../protocol/messages.js';
import { engineRig } from '../hil/testing/engine-rig.js';

const FINAL = new Set(['succeeded', 'failed', 'rejected', 'expired']);

/** Envelopes that get past JSON parsing: the known keys with valid, wrong-typed and random values, plus stray keys. */
function envelope(): fc.Arbitrary<Record<string, unknown>> {
  const anyJson = fc.jsonValue({ maxDepth: 2 });
  return fc.record(
    {
      id: fc.oneof(fc.uuid(), fc.string({ maxLength: 140 }), anyJson),
      command: fc.oneof(fc.constantFrom('ping', 'curtail', 'restore', 'set-budget', 'clear-budget', 'explode', ''), fc.string({ maxLength: 70 }), anyJson),
      params: fc.oneof(
        fc.record(
          {
            timeoutMs: fc.oneof(fc.integer({ min: -10, max: 700_000 }), anyJson),
            maxW: fc.oneof(fc.integer({ min: -5, max: 20_000_000 }), anyJson),
            devices: fc.oneof(fc.array(fc.constantFrom('m1', 'nope', '../x', ''), { maxLength: 3 }), anyJson),
            durationMs: fc.oneof(fc.integer({ min: 0, max: 10 * 86_400_000 }), anyJson),
            startsAt: fc.oneof(fc.integer({ min: 0, max: 4_000_000_000_000 }), fc.date().map((d) => (Number.isNaN(d.getTime()) ? 'x' : d.toISOString())), anyJson),
            budgetId: fc.oneof(fc.constantFrom('central', 'feeder'), fc.string({ maxLength: 70 })),
          },
          { requiredKeys: [] },
        ),
        anyJson,
      ),
      expiresAt: fc.oneof(fc.integer({ min: -1, max: 4_000_000_000_000 }), fc.date().map((d) => (Number.isNaN(d.getTime()) ? 'soon' : d.toISOString())), anyJson),
      extra: anyJson,
    },
    { requiredKeys: [] },
  );
}

/** Raw payloads: envelopes as JSON, arbitrary JSON, arbitrary text and bytes, truncations. */
function payload(): fc.Arbitrary<Buffer> {
  return fc.oneof(
    { weight: 6, arbitrary: envelope().map((e) => Buffer.from(JSON.stringify(e))) },
    { weight: 1, arbitrary: fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? 'null')) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }).map((s) => Buffer.from(s)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)) },
    { weight: 1, arbitrary: envelope().chain((e) => { const s = JSON.stringify(e); return fc.nat({ max: s.length }).map((n) => Buffer.from(s.slice(0, n))); }) },
  );
}

test('fuzzed command payloads: no crash, a schema-valid result for each (or a logged drop), one final result per accepted command', async () => {
  const rig = engineRig([]);
  const results: CommandResult[] = [];
  const drops: string[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => { if (line.includes('ignoring empty command payload')) drops.push(line); } });
  const h = new CommandHandler(rig.engine, new Set(['m1']), 0, (r: CommandResult, _m: CommandMeta) => results.push(r), '0.0.0', log);
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(payload(), fc.boolean(), async (buf, retain) => {
      runs++;
      const before = results.length;
      const dropsBefore = drops.length;
      assert.doesNotThrow(() => h.handle(buf, { retain }));
      const mine = results.slice(before);
      if (buf.length === 0) {
        assert.equal(mine.length, 0, 'the empty payload gets no result');
        assert.equal(drops.length, dropsBefore + 1, 'and its drop is logged');
        return;
      }
      assert.ok(mine.length >= 1, `a result for ${JSON.stringify(buf.toString('utf8').slice(0, 80))}`);
      for (const r of mine) assert.ok(commandResultSchema.safeParse(r).success, `schema-valid result ${JSON.stringify(r).slice(0, 200)}`);
      if (mine[0]?.status !== 'accepted') {
        assert.ok(FINAL.has(mine[0]?.status ?? ''), 'not accepted: the one result is final');
        return;
      }
      // accepted: exactly one final result follows for this id (the engine has no devices: it settles at once, and the
      // result is sent once the engine's state file is on disk, which may take a few ms)
      const id = mine[0].id;
      const end = Date.now() + 5_000;
      while (Date.now() < end && !results.slice(before + 1).some((r) => r.id === id && FINAL.has(r.status))) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      const finals = results.slice(before + 1).filter((r) => r.id === id && FINAL.has(r.status));
      assert.equal(finals.length, 1, `exactly one final result for ${id ?? 'null'}`);
      // end what it started, so demands do not pile up across runs
      await rig.engine.restore(null).catch(() => undefined);
      rig.engine.clearBudget(undefined);
    }),
    { numRuns: 10_000 },
  );
  assert.equal(runs, 10_000);
  await rig.stop();
});
