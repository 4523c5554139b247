import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { RackpilotError } from '../../drivers/lib/errors.js';
import { CHUNK_INTERVAL_MS, EvidenceLog, QUEUE_MAX, SETTLE_MS, evidenceConfigSchema, readEvidence, type ActivationRecord, type DeviceTiming } from './evidence.js';
import { exportEvidence, runEventsExport } from './evidence-export.js';
import { tempDir } from '../../hil/testing/temp-dir.js';

const T = 1_700_000_000_000; // on the 100 ms grid

class Clock {
  t = T;
  now = (): number => this.t;
}

function setup(over: Partial<Record<string, number>> = {}) {
  const dir = tempDir('rp-evidence-');
  const clock = new Clock();
  const warnings: string[] = [];
  const stream = new PassThrough();
  stream.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n')) if (line) warnings.push((JSON.parse(line) as { msg: string }).msg);
  });
  const log = pino({ level: 'warn' }, stream);
  const cfg = evidenceConfigSchema.parse({ dir, ...over });
  return { dir, clock, warnings, ev: new EvidenceLog({ ...cfg, dir }, log, clock.now), cfg };
}

function record(id: string, signalAt: number, over: Partial<ActivationRecord> = {}): ActivationRecord {
  return {
    id,
    trigger: { demand: 'signal:uf', source: 'signal', kind: 'shed', signal: 'uf', value: 49.69 },
    signalAt,
    decidedAt: signalAt + 3.25,
    devices: [],
    powerBeforeW: null,
    powerAfterW: null,
    ...over,
  };
}

const DEVICE: DeviceTiming = {
  id: 's19-1',
  action: 'curtail',
  ok: true,
  dispatchAt: T + 3.5,
  ackAt: T + 41.25,
  confirmAt: T + 812,
  steps: [
    { step: 'curtail', at: T + 3.5, ok: false, error: { code: 'READ_TIMEOUT', message: 'no reply, in 500 ms' } },
    { step: 'retry', at: T + 510, ok: true },
  ],
  measuredW: 18.5,
};

interface Line {
  type: string;
  activation?: string;
  id?: string;
  t0?: number;
  stepMs?: number;
  w?: (number | null)[];
}

function lines(dir: string, name = 'evidence.jsonl'): Line[] {
  return readFileSync(join(dir, name), 'utf8')
    .split('\n')
    .filter((l) => l)
    .map((l) => JSON.parse(l) as Line);
}

describe('evidence log: the power grid', () => {
  test('samples land on the grid (last value per slot), gaps and nulls are null, never invented', async () => {
    const { dir, clock, ev } = setup({ preMs: 1000, postMs: 1000 });
    // window: slots from T-1000 to T+1000 (21 slots of 100 ms)
    ev.samplePower(999, T - 5000); // before the window
    ev.samplePower(100, T - 1000);
    ev.samplePower(101, T - 950); // same slot: the last value wins
    ev.samplePower(200, T - 850);
    // slot T-800: no sample (a gap)
    ev.samplePower(null, T - 650); // slot T-700: the meter said "no value"
    ev.samplePower(Number.NaN, T - 550); // slot T-600
    ev.samplePower(500, T - 450); // slot T-500
    ev.samplePower(300, T - 750 + 1000); // T+250, out of order: fine
    ev.samplePower(250, T - 50);
    ev.samplePower(260, T + 1000);
    ev.samplePower(270, T + 1100); // after the window
    ev.begin(record('a1', T));
    clock.t = T + 1000 + SETTLE_MS + 100;
    await ev.flush();
    const power = lines(dir).filter((l) => l.type === 'power');
    assert.equal(power.length, 1);
    assert.equal(power[0]?.t0, T - 1000);
    assert.equal(power[0]?.stepMs, 100);
    const n = null;
    assert.deepEqual(power[0]?.w, [101, 200, n, n, n, 500, n, n, n, 250, n, n, 300, n, n, n, n, n, n, n, 260]);
    assert.equal(ev.stats().openWindows, 0);
  });

  test('samples older than the ring are ignored; the ring keeps the pre-window only (gaps before it)', async () => {
    const { dir, clock, ev } = setup({ preMs: 1000, postMs: 0 });
    ev.samplePower(50, T); // latest
    ev.samplePower(40, T - 1000 - 6 * CHUNK_INTERVAL_MS - 100); // older than the ring holds: dropped
    clock.t = T + 10 * CHUNK_INTERVAL_MS;
    // an activation whose pre-window has long left the ring reads nulls, not stale values
    ev.begin(record('old', T - 7 * CHUNK_INTERVAL_MS));
    await ev.flush();
    const chunk = lines(dir).find((l) => l.type === 'power');
    assert.ok(chunk?.w);
    assert.equal(chunk.w.length, 11);
    assert.ok(chunk.w.every((v) => v === null));
  });

  test('powerBeforeW is the mean of the second before the signal, powerAfterW of the second before completion', async () => {
    const { ev, clock } = setup({ preMs: 2000, postMs: 2000 });
    // 5000 W until a second before the signal, then two samples per slot: 1000 then 1100 (the later one wins)
    for (let t = T - 2000; t < T; t += 50) ev.samplePower(t < T - 1000 ? 5000 : t % 100 === 0 ? 1000 : 1100, t);
    ev.begin(record('a1', T, { powerBeforeW: 1 }));
    for (let t = T; t < T + 2000; t += 100) ev.samplePower(t < T + 1000 ? 3000 : 400, t);
    clock.t = T + 2000;
    const done = ev.complete('a1', [DEVICE], T + 2000);
    assert.ok(done);
    assert.equal(done.powerBeforeW, 1100);
    assert.equal(done.powerAfterW, 400);
    assert.equal(done.completedAt, T + 2000);
    assert.deepEqual(done.devices, [DEVICE]);
    assert.equal(ev.complete('nope', [], T), undefined);
    await ev.stop();
  });

  test('without samples before the signal, the caller\'s powerBeforeW is kept and powerAfterW is null', async () => {
    const { ev } = setup();
    ev.begin(record('a1', T, { powerBeforeW: 1234 }));
    const done = ev.complete('a1', [], T + 10);
    assert.equal(done?.powerBeforeW, 1234);
    assert.equal(done?.powerAfterW, null);
    await ev.stop();
  });
});

describe('evidence log: windows and files', () => {
  test('a window is written in chunks (the first with the pre-window) that reassemble to the whole window', async () => {
    const { dir, clock, ev } = setup({ preMs: 10_000, postMs: 30_000 });
    const value = (t: number): number => 10_000 + ((t - T) / 100) * 3;
    for (let t = T - 12_000; t <= T + 31_000; t += 100) {
      ev.samplePower(value(t), t);
      clock.t = t;
      if ((t - T) % CHUNK_INTERVAL_MS === 0 && t > T) await ev.flush(); // what the 10 s timer does
      if (t === T) ev.begin(record('a1', T));
      if (t === T + 5000) ev.complete('a1', [DEVICE], t);
    }
    clock.t = T + 40_000;
    await ev.flush();
    const all = lines(dir);
    // begin, complete (at +5 s), then a chunk every 10 s and the rest at the window's end (+30 s)
    assert.deepEqual(
      all.map((l) => l.type),
      ['activation', 'activation', 'power', 'power', 'power', 'power'],
    );
    const chunks = all.filter((l) => l.type === 'power');
    // the first chunk, written 10 s after the signal, already holds the pre-window (a crash then keeps it)
    assert.equal(chunks[0]?.t0, T - 10_000);
    assert.equal(chunks[0]?.w?.length, (10_000 + 10_000 - SETTLE_MS) / 100);
    for (let i = 1; i < chunks.length; i++) {
      const prev = chunks[i - 1]!;
      assert.equal(chunks[i]?.t0, prev.t0! + prev.w!.length * 100, 'chunks are contiguous');
    }
    const exported = JSON.parse(exportEvidence(dir, { format: 'json' })) as { activations: (ActivationRecord & { power: { t0: number; stepMs: number; w: (number | null)[] } })[] };
    assert.equal(exported.activations.length, 1);
    const a = exported.activations[0]!;
    assert.equal(a.completedAt, T + 5000);
    assert.equal(a.power.t0, T - 10_000);
    assert.equal(a.power.w.length, 401);
    a.power.w.forEach((v, k) => assert.equal(v, value(T - 10_000 + k * 100), `slot ${k}`));
  });

  test('overlapping activations each get their own window', async () => {
    const { dir, clock, ev } = setup({ preMs: 1000, postMs: 2000 });
    for (let t = T - 2000; t <= T + 5000; t += 100) ev.samplePower(t - T, t);
    ev.begin(record('a1', T));
    ev.begin(record('a2', T + 1500));
    ev.begin(record('a2', T + 1700)); // the same id again: ignored
    ev.complete('a2', [], T + 1600);
    ev.complete('a1', [], T + 1700);
    clock.t = T + 6000;
    await ev.flush();
    const { activations, power } = readEvidence(dir);
    assert.deepEqual(
      activations.map((a) => [a.id, a.signalAt]),
      [
        ['a1', T],
        ['a2', T + 1500],
      ],
    );
    assert.deepEqual(power.get('a1')?.[0]?.w, Array.from({ length: 31 }, (_, k) => -1000 + k * 100));
    assert.deepEqual(power.get('a2')?.[0]?.w, Array.from({ length: 31 }, (_, k) => 500 + k * 100));
    assert.equal(ev.stats().openWindows, 0);
  });

  test('stop writes open windows up to now, and list() reads the records back (last version wins)', async () => {
    const { dir, clock, ev } = setup({ preMs: 500, postMs: 900_000 });
    ev.start();
    for (let t = T - 500; t <= T + 700; t += 100) ev.samplePower(7, t);
    ev.begin(record('a1', T));
    // the engine's own outcome objects carry more than the record documents: only DeviceTiming's fields are written
    const richer = { ...DEVICE, cutOutlets: [{ pdu: 'p', outlet: '1' }], internal: { big: 'x' } };
    ev.complete('a1', [richer], T + 650);
    clock.t = T + 700;
    assert.equal(ev.stats().openWindows, 1);
    await ev.stop();
    assert.equal(ev.stats().openWindows, 0);
    const power = lines(dir).filter((l) => l.type === 'power');
    assert.equal(power.length, 1);
    assert.deepEqual(power[0]?.w, Array.from({ length: 13 }, () => 7));
    assert.doesNotMatch(readFileSync(join(dir, 'evidence.jsonl'), 'utf8'), /cutOutlets|internal/);
    const listed = ev.list();
    assert.equal(listed.length, 1);
    assert.equal(listed[0]?.completedAt, T + 650);
    assert.equal(listed[0]?.powerBeforeW, 7);
    assert.deepEqual(listed[0]?.devices, [DEVICE]);
  });

  test('rotation keeps every file under maxFileBytes and the total under maxFiles x maxFileBytes', async () => {
    const maxFileBytes = 64 * 1024;
    const { dir, clock, ev } = setup({ maxFileBytes, maxFiles: 3, preMs: 0, postMs: 0 });
    // a leftover of a config with more files is removed at the first write
    writeFileSync(join(dir, 'evidence.7.jsonl'), 'old\n');
    const devices = Array.from({ length: 8 }, (_, k) => ({ ...DEVICE, id: `dev-${k}` }));
    for (let i = 0; i < 400; i++) {
      const at = T + i * 1000;
      ev.begin(record(`act-${i}`, at, { devices }));
      ev.complete(`act-${i}`, devices, at + 1);
      clock.t = at + SETTLE_MS + 100;
      if (i % 25 === 0) {
        await ev.flush();
        const files = readdirSync(dir);
        const sizes = files.map((f) => statSync(join(dir, f)).size);
        assert.ok(files.length <= 3, files.join(', '));
        assert.ok(
          sizes.every((s) => s <= maxFileBytes),
          sizes.join(', '),
        );
      }
    }
    await ev.stop();
    const files = readdirSync(dir).sort();
    assert.deepEqual(files, ['evidence.1.jsonl', 'evidence.2.jsonl', 'evidence.jsonl']);
    const total = files.reduce((s, f) => s + statSync(join(dir, f)).size, 0);
    assert.ok(total <= 3 * maxFileBytes, `${total} bytes`);
    for (const f of ['evidence.1.jsonl', 'evidence.2.jsonl']) assert.ok(statSync(join(dir, f)).size > maxFileBytes - 8 * 1024, `${f} filled up before it was rotated`);
    const ids = ev.list().map((a) => a.id);
    assert.equal(ids.at(-1), 'act-399', 'the newest is kept');
    assert.ok(!ids.includes('act-0'), 'the oldest fell off');
    assert.equal(ev.stats().linesDropped, 0);
  });

  test('a torn last line is skipped on read and the next write starts on a fresh line', async () => {
    const { dir, clock, ev } = setup({ preMs: 0, postMs: 0 });
    const good = JSON.stringify({ type: 'activation', ...record('a0', T - 10_000) });
    writeFileSync(join(dir, 'evidence.jsonl'), `${good}\n${good.slice(0, 70)}`); // a crash mid-append
    assert.deepEqual(
      ev.list().map((a) => a.id),
      ['a0'],
    );
    assert.equal(readEvidence(dir).skipped, 1);
    ev.begin(record('a1', T));
    clock.t = T + 10_000;
    await ev.stop();
    assert.deepEqual(
      ev.list().map((a) => a.id),
      ['a0', 'a1'],
    );
    assert.equal(readEvidence(dir).skipped, 1, 'only the torn line is lost');
  });

  test('the write queue is bounded: a burst past it is dropped, counted and warned about', async () => {
    const { dir, ev, clock, warnings } = setup({ preMs: 0, postMs: 0 });
    const n = QUEUE_MAX + 300;
    // a burst with no chance for the writer to run: two records each, then a power chunk for each window still open
    for (let i = 0; i < n; i++) {
      ev.begin(record(`a${i}`, T));
      ev.complete(`a${i}`, [], T);
    }
    clock.t = T + SETTLE_MS + 100;
    const open = ev.stats().openWindows;
    assert.ok(open > 0 && open <= 256, `${open} windows kept: memory stays bounded`);
    await ev.flush();
    const s = ev.stats();
    assert.ok(s.linesDropped > 0);
    assert.ok(s.linesWritten <= QUEUE_MAX + 1);
    assert.equal(s.linesWritten + s.linesDropped, 2 * n + open, 'every line is either written or counted as dropped');
    assert.equal(lines(dir).length, s.linesWritten);
    assert.ok(warnings.some((w) => /write queue full/.test(w)), warnings.join('; '));
    assert.ok(warnings.filter((w) => /write queue full/.test(w)).length === 1, 'warned once, not per line');
  });

  test('an unwritable folder never throws at the caller: errors are counted and warned about', async () => {
    const { dir, clock, warnings } = setup();
    writeFileSync(join(dir, 'file'), 'x');
    const ev = new EvidenceLog({ ...evidenceConfigSchema.parse({}), dir: join(dir, 'file', 'evidence') }, pinoInto(warnings), clock.now);
    ev.start();
    ev.samplePower(1, T);
    ev.begin(record('a1', T));
    ev.complete('a1', [], T + 1);
    await ev.stop();
    assert.ok(ev.stats().writeErrors > 0);
    assert.equal(ev.stats().linesWritten, 0);
    assert.equal(ev.stats().linesDropped, 3);
    assert.ok(warnings.some((w) => /cannot write the evidence log/.test(w)));
  });
});

function pinoInto(into: string[]) {
  const stream = new PassThrough();
  stream.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n')) if (line) into.push((JSON.parse(line) as { msg: string }).msg);
  });
  return pino({ level: 'warn' }, stream);
}

describe('evidence export', () => {
  async function sampleDir(): Promise<string> {
    const { dir, clock, ev } = setup({ preMs: 200, postMs: 200 });
    for (let t = T - 200; t <= T + 200; t += 100) if (t !== T) ev.samplePower(1000 - (t - T), t);
    ev.begin(record('act-1', T, { trigger: { demand: 'command:c1', source: 'command', kind: 'budget', maxW: 900, commandId: 'c1' } }));
    ev.complete('act-1', [DEVICE], T + 900);
    ev.begin(record('act-2', T + 100));
    ev.complete('act-2', [], T + 150);
    clock.t = T + 10_000;
    await ev.stop();
    return dir;
  }

  test('CSV power: one row per slot, ms from the signal, ISO time, empty for a gap', async () => {
    const dir = await sampleDir();
    const csv = exportEvidence(dir, { format: 'csv', activation: 'act-1' });
    assert.equal(
      csv,
      [
        'activation,t_ms_from_signal,iso_time,power_w',
        `act-1,-200,${new Date(T - 200).toISOString()},1200`,
        `act-1,-100,${new Date(T - 100).toISOString()},1100`,
        `act-1,0,${new Date(T).toISOString()},`,
        `act-1,100,${new Date(T + 100).toISOString()},900`,
        `act-1,200,${new Date(T + 200).toISOString()},800`,
        '',
      ].join('\n'),
    );
    const both = exportEvidence(dir, { format: 'csv' }).trim().split('\n');
    assert.equal(both.length, 1 + 5 + 5);
    assert.equal(both[6], `act-2,-200,${new Date(T - 100).toISOString()},1100`);
  });

  test('CSV devices: one row per device with times from the signal; an activation without devices has one row', async () => {
    const dir = await sampleDir();
    const rows = exportEvidence(dir, { format: 'csv', table: 'devices' }).trim().split('\n');
    assert.equal(rows[0], 'activation,signal_iso,demand,source,kind,decided_ms,completed_ms,power_before_w,power_after_w,device,action,ok,dispatch_ms,ack_ms,confirm_ms,measured_w,steps');
    const iso = new Date(T).toISOString();
    assert.equal(rows[1], `act-1,${iso},command:c1,command,budget,3.3,900,1150,933.333,s19-1,curtail,true,3.5,41.3,812,18.5,curtail@3.5:fail:READ_TIMEOUT retry@510:ok`);
    assert.equal(rows[2], `act-2,${new Date(T + 100).toISOString()},signal:uf,signal,shed,3.3,50,1150,1066.667,,,,,,,,`);
    assert.equal(rows.length, 3);
    for (const r of rows) assert.equal(r.split(',').length, 17);
  });

  test('JSON: every record with its power series; an unknown activation names the ones there are', async () => {
    const dir = await sampleDir();
    const out = JSON.parse(exportEvidence(dir, { format: 'json' })) as { activations: { id: string; devices: unknown[]; power: unknown }[] };
    assert.deepEqual(
      out.activations.map((a) => a.id),
      ['act-1', 'act-2'],
    );
    assert.deepEqual(out.activations[0]?.devices, [DEVICE]);
    assert.deepEqual(out.activations[0]?.power, { t0: T - 200, stepMs: 100, w: [1200, 1100, null, 900, 800] });
    assert.throws(
      () => exportEvidence(dir, { format: 'json', activation: 'act-9' }),
      (err: unknown) => err instanceof RackpilotError && /no activation "act-9" in .*it holds 2: act-1, act-2/.test(err.message),
    );
    assert.throws(() => exportEvidence(join(dir, 'missing'), { format: 'json' }), /cannot read the evidence folder/);
  });

  test('runEventsExport: --dir, --out, --format, --table; errors are one line with an exit code', async () => {
    const dir = await sampleDir();
    const run = async (args: string[]) => {
      const out = new PassThrough();
      const err = new PassThrough();
      let o = '';
      let e = '';
      out.on('data', (d: Buffer) => (o += d.toString()));
      err.on('data', (d: Buffer) => (e += d.toString()));
      const code = await runEventsExport(args, out, err);
      return { code, out: o, err: e };
    };
    const csv = await run(['--dir', dir, '--activation', 'act-2', '--table', 'devices']);
    assert.equal(csv.code, 0, csv.err);
    assert.equal(csv.out, exportEvidence(dir, { format: 'csv', table: 'devices', activation: 'act-2' }));
    const file = join(dir, 'export.json');
    const json = await run(['--dir', dir, '--format', 'json', '--out', file]);
    assert.equal(json.code, 0, json.err);
    assert.equal(json.out, '');
    assert.equal(readFileSync(file, 'utf8'), exportEvidence(dir, { format: 'json' }));

    for (const [args, code, msg] of [
      [['--dir', dir, '--format', 'xml'], 2, /--format: expected csv or json, got "xml"/],
      [['--dir', dir, '--bogus'], 2, /Unknown option '--bogus'/],
      [['--dir', dir, '--config', 'x.yaml'], 2, /not both/],
      [['--dir', dir, '--activation', 'nope'], 1, /no activation "nope" in .*act-1, act-2/],
      [['--config', join(dir, 'missing.yaml')], 1, /cannot read config file/],
    ] as const) {
      const r = await run([...args]);
      assert.equal(r.code, code, r.err);
      assert.match(r.err, msg);
      assert.equal(r.err.trim().split('\n').length, 1, r.err);
      assert.equal(r.out, '');
    }
  });

  test('runEventsExport --config reads evidence.dir from the agent config', async () => {
    const dir = await sampleDir();
    const cfgFile = join(dir, 'rackpilot.yaml');
    writeFileSync(cfgFile, `site: s1\nrack: r1\nmqtt:\n  url: mqtt://127.0.0.1:1883\nevidence:\n  dir: ${JSON.stringify(dir)}\n`);
    const out = new PassThrough();
    let o = '';
    out.on('data', (d: Buffer) => (o += d.toString()));
    assert.equal(await runEventsExport(['--config', cfgFile, '--format', 'json'], out, new PassThrough()), 0);
    assert.equal(o, exportEvidence(dir, { format: 'json' }));
  });
});
