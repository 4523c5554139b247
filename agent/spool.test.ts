import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { pino } from 'pino';
import { Spool, spoolConfigSchema, type RecordClass, type SpoolRecord } from './spool.js';
import { crc32, crc32Table } from './spool/crc32.js';
import { tempDir } from '../hil/testing/temp-dir.js';

function setup(dir: string, over: Record<string, unknown> = {}) {
  const warnings: string[] = [];
  const stream = new PassThrough();
  stream.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n')) if (line) warnings.push((JSON.parse(line) as { msg: string }).msg);
  });
  const cfg = spoolConfigSchema.parse({ dir, ...over });
  return { spool: new Spool({ ...cfg, dir }, pino({ level: 'warn' }, stream)), warnings };
}

async function opened(dir: string, over: Record<string, unknown> = {}) {
  const s = setup(dir, over);
  const report = await s.spool.open();
  return { ...s, report };
}

/** A payload that says what it is and does not compress away (so sizes on disk are predictable). */
function payload(i: number, bytes = 200): string {
  let s = `{"i":${i},"r":"`;
  let x = (i + 1) * 2654435761;
  while (s.length < bytes - 2) {
    x = (x * 1103515245 + 12345) % 2147483648;
    s += String.fromCharCode(97 + (x % 26));
  }
  return `${s}"}`;
}

const idOf = (r: SpoolRecord): number => (JSON.parse(r.payload.toString()) as { i: number }).i;

async function takeAll(s: Spool, batch = 7): Promise<SpoolRecord[]> {
  const out: SpoolRecord[] = [];
  for (;;) {
    const got = await s.take(batch);
    if (got.length === 0) return out;
    out.push(...got);
  }
}

function segFiles(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.endsWith('.seg')).sort();
}

describe('crc32', () => {
  test('the table-driven version matches zlib and the standard check value', () => {
    assert.equal(crc32Table(Buffer.from('123456789')), 0xcbf43926);
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
    const data = Buffer.from(payload(7, 5000));
    assert.equal(crc32Table(data), zlibCrc32(data));
    assert.equal(crc32Table(data.subarray(100), crc32Table(data.subarray(0, 100))), zlibCrc32(data));
  });
});

describe('spool config', () => {
  test('defaults, and sizes that cannot work are refused with their paths', () => {
    const d = spoolConfigSchema.parse(undefined);
    assert.equal(d.maxBytes, 256 * 1024 * 1024);
    assert.equal(d.fsyncIntervalMs, 0);
    const r = spoolConfigSchema.safeParse({ maxBytes: 1024 * 1024, segmentBytes: 1024 * 1024, maxRecordBytes: 1024 * 1024, bogus: 1 });
    assert.equal(r.success, false);
    const paths = r.error?.issues.map((i) => i.path.join('.') || i.code) ?? [];
    assert.ok(paths.includes('segmentBytes') || paths.includes('unrecognized_keys'), paths.join());
  });
});

describe('spool', () => {
  test('replays in append order, across classes, with topic, payload and time', async () => {
    const dir = tempDir('rp-spool-');
    const { spool, report } = await opened(dir);
    assert.deepEqual(report.pending, { telemetry: 0, events: 0 });
    const cls = (i: number): RecordClass => (i % 5 === 0 || i % 7 === 0 ? 'event' : 'telemetry');
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => spool.append(cls(i), `rack/${cls(i)}`, payload(i, 100 + (i % 13) * 300))));
    assert.deepEqual(
      results.map((r) => (r.ok ? r.seq : -1)),
      Array.from({ length: 200 }, (_, i) => i + 1),
    );
    assert.deepEqual(spool.pending(), { telemetry: 137, events: 63, total: 200 });
    const got = await takeAll(spool);
    assert.deepEqual(got.map(idOf), Array.from({ length: 200 }, (_, i) => i));
    assert.deepEqual(
      got.map((r) => r.seq),
      Array.from({ length: 200 }, (_, i) => i + 1),
    );
    for (const r of got) {
      assert.equal(r.cls, cls(idOf(r)));
      assert.equal(r.topic, `rack/${r.cls}`);
      assert.equal(r.payload.toString(), payload(idOf(r), 100 + (idOf(r) % 13) * 300));
      assert.ok(r.writtenAt > Date.now() - 60_000 && r.writtenAt <= Date.now());
    }
    // records appended after a take come next
    await spool.append('event', 'rack/event', payload(200));
    assert.deepEqual((await spool.take(10)).map(idOf), [200]);
    await spool.close();
  });

  test('acknowledged records are never replayed, unacknowledged ones always (rewind, reopen without close)', async () => {
    const dir = tempDir('rp-spool-');
    const a = await opened(dir, { segmentBytes: 64 * 1024, compress: false });
    for (let i = 0; i < 600; i++) void a.spool.append(i % 4 === 0 ? 'event' : 'telemetry', 't', payload(i, 500));
    await a.spool.flush();
    const first = await a.spool.take(250);
    assert.equal(first.length, 250);
    assert.equal(await a.spool.ack(200), true);
    // a lost connection: what was taken but not acknowledged comes again
    await a.spool.rewind();
    assert.deepEqual((await a.spool.take(3)).map(idOf), [200, 201, 202]);
    assert.equal(await a.spool.ack(999), true); // clamped to the last taken (203)
    assert.equal(a.spool.stats().ackedSeq, 203);
    const before = segFiles(dir).length;
    assert.ok(before < Math.ceil((600 * 540) / (64 * 1024)) + 2, 'acknowledged segments deleted');
    // no close(): as after a crash
    const b = await opened(dir, { segmentBytes: 64 * 1024, compress: false });
    assert.equal(b.report.ackedSeq, 203);
    assert.equal(b.report.pending.telemetry + b.report.pending.events, 600 - 203);
    assert.deepEqual(b.report.corrupt, []);
    const rest = await takeAll(b.spool, 50);
    assert.deepEqual(
      rest.map(idOf),
      Array.from({ length: 600 - 203 }, (_, i) => i + 203),
    );
    // seqs keep increasing across the restart
    const r = await b.spool.append('event', 't', payload(600));
    assert.ok(r.ok && r.seq === 601);
    assert.equal(await b.spool.ack((await takeAll(b.spool)).at(-1)?.seq ?? 0), true);
    await b.spool.close();
    await a.spool.close();
    const c = await opened(dir, { segmentBytes: 64 * 1024, compress: false });
    assert.deepEqual(c.report.pending, { telemetry: 0, events: 0 });
    assert.deepEqual(segFiles(dir), []);
    assert.deepEqual(await c.spool.take(10), []);
    await c.spool.close();
  });

  test('at the cap the oldest telemetry goes, every event stays; with only events left new events are refused', async () => {
    const dir = tempDir('rp-spool-');
    const MAX = 1024 * 1024;
    const { spool, warnings } = await opened(dir, { maxBytes: MAX, segmentBytes: 64 * 1024, compress: false, maxRecordBytes: 16 * 1024 });
    const kinds: RecordClass[] = [];
    // a reader part-way through the oldest telemetry when it is dropped
    for (let i = 0; i < 20; i++) {
      kinds.push(i % 10 === 0 ? 'event' : 'telemetry');
      await spool.append(kinds[i] as RecordClass, 't', payload(i, 2000));
    }
    assert.equal((await spool.take(5)).length, 5);
    for (let i = 20; i < 1500; i++) {
      kinds.push(i % 10 === 0 ? 'event' : 'telemetry');
      const r = await spool.append(kinds[i] as RecordClass, 't', payload(i, 2000));
      assert.ok(r.ok, `append ${i}`);
    }
    const st = spool.stats();
    assert.ok(st.diskBytes <= MAX, `${st.diskBytes} <= ${MAX}`);
    assert.ok(st.telemetryDropped > 0);
    assert.ok(warnings.includes('spool: full; oldest telemetry dropped'));
    const rest = await takeAll(spool, 100);
    const ids = rest.map(idOf);
    assert.deepEqual(
      ids,
      [...ids].sort((x, y) => x - y),
      'in order',
    );
    const events = ids.filter((i) => kinds[i] === 'event');
    assert.deepEqual(
      events,
      Array.from({ length: 150 }, (_, k) => k * 10).filter((i) => i >= 5),
      'every event after the taken ones',
    );
    const tel = ids.filter((i) => kinds[i] === 'telemetry');
    // the telemetry kept is the newest: a suffix of what was appended
    const allTel = kinds.flatMap((k, i) => (k === 'telemetry' && i >= 5 ? [i] : []));
    assert.deepEqual(tel, allTel.slice(allTel.length - tel.length));
    // counted: every unacknowledged record dropped, the 4 taken (not acknowledged) before included
    assert.equal(st.telemetryDropped, allTel.length - tel.length + 4);
    await spool.ack(rest.at(-1)?.seq ?? 0);

    // only events: fill up, then new ones are refused and the old ones kept
    const accepted: number[] = [];
    let refused = 0;
    for (let i = 2000; i < 2700; i++) {
      const r = await spool.append('event', 'e', payload(i, 2000));
      if (r.ok) accepted.push(i);
      else {
        assert.equal(r.reason, 'full');
        refused++;
      }
    }
    assert.ok(refused > 0 && accepted.length > 300, `${accepted.length} accepted, ${refused} refused`);
    assert.deepEqual(accepted, Array.from({ length: accepted.length }, (_, k) => 2000 + k), 'the first ones kept, the later ones refused');
    assert.equal(spool.stats().eventsRefused, refused);
    assert.ok(warnings.includes('spool: full of events; new events refused'));
    assert.deepEqual(await spool.append('telemetry', 't', payload(1, 2000)), { ok: false, reason: 'full' }, 'no room for telemetry either');
    // acknowledging frees room
    const got = await spool.take(100);
    assert.deepEqual(got.map(idOf), accepted.slice(0, 100));
    await spool.ack(got.at(-1)?.seq ?? 0);
    assert.equal((await spool.append('event', 'e', payload(3000, 2000))).ok, true);
    assert.ok(spool.stats().diskBytes <= MAX);
    await spool.close();
  });

  test('a full write queue refuses telemetry, and an event evicts queued telemetry first', async () => {
    const dir = tempDir('rp-spool-');
    const { spool } = await opened(dir, { maxQueueBytes: 64 * 1024 });
    const pending = Array.from({ length: 7 }, (_, i) => spool.append('telemetry', 't', payload(i, 10_000)));
    const ev = spool.append('event', 'e', payload(100, 10_000));
    const results = await Promise.all([...pending, ev]);
    assert.deepEqual(results[6], { ok: false, reason: 'queue-full' });
    assert.deepEqual(results[0], { ok: false, reason: 'dropped' });
    assert.ok(results[7]?.ok);
    assert.deepEqual((await takeAll(spool)).map(idOf), [1, 2, 3, 4, 5, 100]);
    assert.equal(spool.stats().telemetryDropped, 2);
    assert.deepEqual(await spool.append('event', 'e', 'x'.repeat(9 * 1024 * 1024)), { ok: false, reason: 'too-large' });
    await spool.close();
    assert.deepEqual(await spool.append('event', 'e', 'late'), { ok: false, reason: 'closed' });
  });

  test('a torn tail is cut off and reported; every record before it is kept', async () => {
    const dir = tempDir('rp-spool-');
    const a = await opened(dir);
    for (let i = 0; i < 30; i++) await a.spool.append('telemetry', 't', payload(i, 3000));
    await a.spool.close();
    const [file] = segFiles(dir);
    const path = join(dir, file as string);
    const size = statSync(path).size;
    truncateSync(path, size - 500); // the last record, cut mid-way
    const b = await opened(dir);
    assert.equal(b.report.corrupt.length, 1);
    assert.equal(b.report.corrupt[0]?.torn, true);
    assert.equal(b.report.corrupt[0]?.afterSeq, 29);
    assert.ok(b.warnings.some((w) => w.startsWith('spool: damaged records skipped')));
    assert.deepEqual(
      (await takeAll(b.spool)).map(idOf),
      Array.from({ length: 29 }, (_, i) => i),
    );
    assert.ok(statSync(path).size < size - 500, 'cut at the last whole record');
    await b.spool.append('telemetry', 't', payload(30, 3000));
    await b.spool.close();
    const c = await opened(dir);
    assert.deepEqual(c.report.corrupt, [], 'reported once');
    assert.deepEqual((await takeAll(c.spool)).map(idOf), [...Array.from({ length: 29 }, (_, i) => i), 30]);
    await c.spool.close();
  });

  test('a flipped byte (payload or length) loses that record only, reported; the later ones are kept', async () => {
    for (const where of ['payload', 'length'] as const) {
      const dir = tempDir('rp-spool-');
      const a = await opened(dir, { compress: false });
      for (let i = 0; i < 20; i++) await a.spool.append(i % 3 === 0 ? 'event' : 'telemetry', 't', payload(i, 1000));
      await a.spool.close();
      // record 7 (telemetry) is the 5th in its file: find it by its payload
      const path = join(dir, segFiles(dir).find((n) => n.startsWith('t-')) as string);
      const bytes = readFileSync(path);
      const at = bytes.indexOf(Buffer.from('{"i":7,'));
      assert.ok(at > 0);
      // the header sits 10 + 20 + topic bytes before the payload
      const off = where === 'payload' ? at + 500 : at - 31 + 3;
      bytes[off] = (bytes[off] as number) ^ 0x10;
      writeFileSync(path, bytes);
      const b = await opened(dir, { compress: false });
      assert.equal(b.report.corrupt.length, 1, where);
      assert.deepEqual({ ...b.report.corrupt[0], start: 0, end: 0 }, { file: segFiles(dir).find((n) => n.startsWith('t-')), start: 0, end: 0, torn: false, afterSeq: 6, beforeSeq: 9 }); // seqs of the telemetry around id 7 (seq 8)
      assert.deepEqual(
        (await takeAll(b.spool)).map(idOf),
        Array.from({ length: 20 }, (_, i) => i).filter((i) => i !== 7),
        where,
      );
      assert.equal(b.spool.stats().corruptRanges, 1);
      await b.spool.close();
    }
  });

  for (const fsyncIntervalMs of [0, 1000]) {
    test(`SIGKILL while appending (fsyncIntervalMs ${fsyncIntervalMs}): every record reported written is there after a restart, in order, at most one torn record`, async () => {
      const dir = tempDir('rp-spool-');
      const spoolUrl = new URL('./spool.js', import.meta.url).href;
      const pinoUrl = import.meta.resolve('pino');
      const script = `
        const { Spool, spoolConfigSchema } = await import(${JSON.stringify(spoolUrl)});
        const { pino } = await import(${JSON.stringify(pinoUrl)});
        const dir = ${JSON.stringify(dir)};
        const s = new Spool({ ...spoolConfigSchema.parse({ dir, segmentBytes: 256 * 1024, maxBytes: 64 * 1024 * 1024, fsyncIntervalMs: ${fsyncIntervalMs} }), dir }, pino({ level: 'silent' }));
        await s.open();
        let i = 0;
        const worker = async () => {
          for (;;) {
            const n = i++;
            const cls = n % 4 === 0 ? 'event' : 'telemetry';
            const r = await s.append(cls, 't', JSON.stringify({ i: n, pad: 'p'.repeat(200 + (n % 50) * 97) }) );
            if (r.ok) process.stdout.write(r.seq + ' ' + n + '\\n');
          }
        };
        for (let k = 0; k < 8; k++) void worker();
      `;
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      const reported = new Map<number, number>();
      let buf = '';
      await new Promise<void>((resolve, reject) => {
        child.on('error', reject);
        child.on('exit', () => resolve());
        child.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          const lines = buf.split('\n');
          buf = lines.pop() ?? '';
          for (const l of lines) {
            const [seq, n] = l.split(' ').map(Number);
            reported.set(seq as number, n as number);
          }
          if (reported.size >= 3000 && !child.killed) child.kill('SIGKILL');
        });
      });
      assert.equal(child.signalCode, 'SIGKILL');
      assert.ok(reported.size >= 3000);
      const b = await opened(dir, { segmentBytes: 256 * 1024, maxBytes: 64 * 1024 * 1024 });
      // one write is in flight at a time: at most one record torn, at the end of its file
      assert.ok(b.report.corrupt.length <= 1, JSON.stringify(b.report.corrupt));
      assert.ok(b.report.corrupt.every((c) => c.torn));
      const got = await takeAll(b.spool, 500);
      const seqs = got.map((r) => r.seq);
      assert.deepEqual(
        seqs,
        [...seqs].sort((x, y) => x - y),
        'in order',
      );
      const present = new Map(got.map((r) => [r.seq, idOf(r)]));
      for (const [seq, n] of reported) assert.equal(present.get(seq), n, `seq ${seq} reported written`);
      assert.ok(got.length - reported.size <= 8, 'only records in flight at the kill are extra');
      await b.spool.close();
    });
  }
});
