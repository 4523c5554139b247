import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { sleep } from './deadline.js';
import { closeLater, closeWaiting, holdUntil, MAX_DELAY_MS, QUIET_MS, reaperLimits, waitingCount } from './socket-reaper.js';

const accepted: net.Socket[] = [];
const server = net.createServer((s) => {
  accepted.push(s);
  s.on('error', () => undefined);
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const port = (server.address() as net.AddressInfo).port;
after(() => {
  closeWaiting();
  for (const s of accepted) s.destroy();
  server.close();
});

async function connected(): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((r, j) => s.once('connect', r).once('error', j));
  return s;
}

const closed = (s: net.Socket): Promise<void> => (s.closed ? Promise.resolve() : new Promise((r) => s.once('close', () => r())));

test('closeLater: the socket stays open while answers keep ending, and is closed once they stop', async () => {
  const a = await connected();
  const b = await connected();
  closeLater(a);
  assert.equal(a.destroyed, false, 'not closed on the spot');
  await sleep(QUIET_MS / 3);
  closeLater(b);
  assert.equal(a.destroyed, false);
  assert.equal(waitingCount(), 2);
  await Promise.all([closed(a), closed(b)]);
  assert.equal(waitingCount(), 0);
});

test('closeLater: a steady stream of ended exchanges still gets its sockets closed (MAX_DELAY_MS), not only after it stops', async () => {
  const first = await connected();
  closeLater(first);
  const startedAt = performance.now();
  let firstClosed = false;
  void closed(first).then(() => (firstClosed = true));
  // a new ended exchange every few ms, never quiet for QUIET_MS, until the first socket is closed
  // (20x the longest wait at most, for a loaded machine)
  let added = 0;
  while (!firstClosed && performance.now() - startedAt < 20 * MAX_DELAY_MS) {
    closeLater(await connected());
    added++;
    await sleep(Math.max(1, QUIET_MS / 5));
  }
  assert.ok(firstClosed, 'the first socket was closed while the stream went on');
  assert.ok(added > 0);
  closeWaiting();
  assert.equal(waitingCount(), 0);
});

test('holdUntil: nothing is closed while a wave holds the reaper, past the quiet time and the longest wait; all of it after', async () => {
  closeWaiting();
  let release!: () => void;
  const wave = new Promise<void>((r) => (release = r));
  holdUntil(wave);
  const s = await connected();
  closeLater(s);
  await sleep(MAX_DELAY_MS + QUIET_MS * 2);
  assert.equal(s.destroyed, false, 'held');
  // a second, overlapping hold that ends first does not end the first one
  holdUntil(Promise.reject(new Error('a wave that failed still releases')));
  await sleep(QUIET_MS * 2);
  assert.equal(s.destroyed, false, 'still held by the first wave');
  release();
  await closed(s);
  assert.equal(waitingCount(), 0);
});

test('closeLater: a reset from the peer while a socket waits is dropped, not thrown', async () => {
  const s = await connected();
  const peer = accepted.at(-1) as net.Socket;
  closeLater(s);
  peer.resetAndDestroy();
  await closed(s);
  assert.equal(s.destroyed, true);
});

test('closeLater: past the cap (MAX_WAITING) an answered exchange closes its socket at once (file descriptors stay bounded)', async () => {
  closeWaiting();
  const cap = reaperLimits.maxWaiting;
  reaperLimits.maxWaiting = 8;
  let release!: () => void;
  holdUntil(new Promise<void>((r) => (release = r))); // nothing is closed by time meanwhile
  try {
    const sockets = await Promise.all(Array.from({ length: 11 }, () => connected()));
    for (const s of sockets) closeLater(s);
    assert.equal(waitingCount(), 8);
    assert.deepEqual(
      sockets.slice(8).map((s) => s.destroyed),
      [true, true, true],
    );
    release();
    await Promise.all(sockets.map(closed));
    assert.equal(waitingCount(), 0);
  } finally {
    reaperLimits.maxWaiting = cap;
    release();
  }
});

test('closeLater: an already destroyed socket is not kept', async () => {
  const s = await connected();
  s.destroy();
  const before = waitingCount();
  closeLater(s);
  assert.equal(waitingCount(), before);
});

test('closeLater: a waiting socket does not keep the process up', () => {
  // a process whose last handle is a socket waiting here exits at once, not after the wait
  const reaper = fileURLToPath(new URL('./socket-reaper.js', import.meta.url));
  const script = `
    import net from 'node:net';
    import { closeLater, waitingCount } from ${JSON.stringify(reaper)};
    const server = net.createServer((s) => { s.on('error', () => {}); s.unref(); });
    server.listen(0, '127.0.0.1', () => {
      const s = net.connect(server.address().port, '127.0.0.1', () => {
        closeLater(s);
        server.unref();
        process.on('exit', () => console.log('waiting at exit:', waitingCount()));
      });
    });
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  // it exited with the socket still waiting: nothing held the loop open for MAX_DELAY_MS
  assert.match(r.stdout, /waiting at exit: 1/);
});
