import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTolerantJson } from './tolerant-json.js';
import { RackpilotError } from '../errors.js';

const W = 'sim:4028 stats';
const parse = (text: string): unknown => parseTolerantJson(text, W);

function assertMalformed(text: string, messagePart?: RegExp): void {
  assert.throws(
    () => parse(text),
    (err: unknown) => {
      assert.ok(err instanceof RackpilotError, `expected RackpilotError, got ${String(err)}`);
      assert.equal(err.code, 'MALFORMED_RESPONSE');
      assert.equal(err.retriable, true);
      assert.match(err.message, /sim:4028 stats/, 'message names where it failed');
      if (messagePart) assert.match(err.message, messagePart);
      return true;
    },
  );
}

describe('parseTolerantJson', () => {
  test('valid JSON passes through unchanged', () => {
    const obj = { STATUS: [{ STATUS: 'S', Code: 11, Msg: 'Summary' }], SUMMARY: [{ 'GHS 5s': 110000.5 }], id: 1 };
    assert.deepEqual(parse(JSON.stringify(obj)), obj);
    assert.deepEqual(parse('[1, 2.5, -3, true, false, null, "x"]'), [1, 2.5, -3, true, false, null, 'x']);
  });

  test('trailing commas before } and ] are dropped (btminer)', () => {
    assert.deepEqual(parse('{"a":1,"b":[1,2,],}'), { a: 1, b: [1, 2] });
    assert.deepEqual(parse('{"a":[{"x":1,},{"y":2} , ] ,\n}'), { a: [{ x: 1 }, { y: 2 }] });
  });

  test('objects glued together }{ become array elements (bmminer stats)', () => {
    assert.deepEqual(parse('{"STATS":[{"STATS":0,"ID":"BC50"}{"Elapsed":3600}],"id":1}'), {
      STATS: [{ STATS: 0, ID: 'BC50' }, { Elapsed: 3600 }],
      id: 1,
    });
    assert.deepEqual(parse('{"STATS":[{"a":1} \n {"b":2}{"c":3}]}'), { STATS: [{ a: 1 }, { b: 2 }, { c: 3 }] });
  });

  test('a comma right after [ or { and a leading comma are dropped', () => {
    assert.deepEqual(parse('{"DEVS":[,{"ID":0},{"ID":1}]}'), { DEVS: [{ ID: 0 }, { ID: 1 }] });
    assert.deepEqual(parse('{,"a":1}'), { a: 1 });
    assert.deepEqual(parse(',{"a":1}'), { a: 1 });
    assert.deepEqual(parse('{"a":[1,,2]}'), { a: [1, 2] });
  });

  test('bare inf, -inf, nan (any case) become null (Avalon)', () => {
    assert.deepEqual(parse('{"a":inf,"b":-inf,"c":nan,"d":[NaN,-Infinity,Inf],"e":1}'), {
      a: null,
      b: null,
      c: null,
      d: [null, null, null],
      e: 1,
    });
    // negative numbers are not mistaken for -inf
    assert.deepEqual(parse('{"t":-12.5,"u":inf}'), { t: -12.5, u: null });
  });

  test('raw control characters inside strings are escaped', () => {
    assert.deepEqual(parse('{"Msg":"line1\nline2\ttab\u0001"}'), { Msg: 'line1\nline2\ttab\u0001' });
  });

  test('commas, braces and barewords inside strings are left untouched', () => {
    const tricky = '{"Msg":"a,} b,] }{ [,{ inf -inf nan","Desc":"x\\"y,}","n":inf,}';
    assert.deepEqual(parse(tricky), { Msg: 'a,} b,] }{ [,{ inf -inf nan', Desc: 'x"y,}', n: null });
  });

  test('several repairs at once', () => {
    assert.deepEqual(parse(',{"S":[,{"v":nan,}{"w":"a,}"},],}'), { S: [{ v: null }, { w: 'a,}' }] });
  });

  test('a truncated buffer is reported as truncated, not guessed at', () => {
    assertMalformed('{"STATUS":[{"STATUS":"S","Code":11}],"SUMMARY":[{"GHS 5s":1100', /truncated/);
    assertMalformed('{"STATUS":[{"STATUS":"S","Msg":"Summ', /truncated/);
    assertMalformed('{"a":[1,2', /truncated/);
  });

  test('plain garbage is MALFORMED_RESPONSE', () => {
    assertMalformed('\u0007\u00ffnot json at all');
    assertMalformed('<html><body>404</body></html>');
    assertMalformed('');
    assertMalformed('{"a":1}}');
  });

  test('the error message carries a bounded snippet of the reply', () => {
    const long = `{"a":"${'x'.repeat(500)}`;
    try {
      parse(long);
      assert.fail('expected a throw');
    } catch (err) {
      assert.ok(err instanceof RackpilotError);
      assert.ok(err.message.length < 300, `message is bounded (${err.message.length} chars)`);
      assert.equal(err.context.bytes, long.length);
    }
  });
});

test('repair stays linear on pathological input (1 MiB of whitespace and stray commas)', () => {
  // a quadratic repair pass took minutes here and froze the agent's event loop
  const n = 512 * 1024;
  const text = `[${' '.repeat(n)}${','.repeat(n)}]`;
  assert.deepEqual(parseTolerantJson(text, 'big'), []);
});
