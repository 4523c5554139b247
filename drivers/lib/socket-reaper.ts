/**
 * Closing the connection of an exchange that ended well, off the hot path.
 *
 * Tearing a socket down costs the event loop tens of microseconds under the
 * low-memory profile: the close(2) (on loopback the kernel runs the peer's
 * side of the FIN in the same call) and the stream's destroy machinery. In a
 * curtail wave about 200 of the 256 answers end a connection (a cgminer
 * command has one of its own; an armed HTTP request takes its socket), and
 * closing each as its answer came in cost about 7 ms of the ~65 ms in which
 * the rack's answers are read: every later answer waited for it.
 *
 * So an answered exchange hands its socket here instead. The sockets are
 * closed together once no exchange has ended for QUIET_MS (the answers have
 * stopped coming), and at the latest MAX_DELAY_MS after the first of them,
 * so a steady stream of polls still gets its connections closed. While a
 * curtail wave is collecting its acknowledgements (`holdUntil`, from the
 * engine) nothing is closed at all: sockets left by the polls or the restore
 * before it would otherwise be closed in the middle of it. A failed or
 * cancelled exchange closes its socket at once, as before: its connection
 * may be in any state.
 *
 * A socket waiting here is unref'd (it never keeps the process up), keeps
 * an 'error' listener (a reset from the peer meanwhile is dropped), and
 * reads nothing more into its exchange (which has ended).
 */
import type net from 'node:net';

/** No exchange ended for this long: the burst of answers is over. */
export const QUIET_MS = 50;
/** The longest a socket waits to be closed. */
export const MAX_DELAY_MS = 250;
/**
 * The most sockets kept waiting (file descriptors): past it an answered
 * exchange closes its socket at once, as a scan of thousands of hosts or a
 * rack larger than a wave's worth would otherwise hold every connection it
 * made in the last MAX_DELAY_MS (or during a wave, until its
 * acknowledgements are in).
 */
export const MAX_WAITING = 512;

/** The cap in force (MAX_WAITING; tests lower it). */
export const reaperLimits = { maxWaiting: MAX_WAITING };

const waiting: net.Socket[] = [];
let firstAt = 0;
let lastAt = 0;
let timer: NodeJS.Timeout | undefined;
/** Holds not settled yet (holdUntil). */
let holds = 0;

const ignore = (): void => undefined;

/** Closes `socket` soon, when the loop is quiet (see above). */
export function closeLater(socket: net.Socket): void {
  if (socket.destroyed) return;
  if (waiting.length >= reaperLimits.maxWaiting) {
    socket.destroy();
    return;
  }
  socket.unref();
  if (socket.listenerCount('error') === 0) socket.on('error', ignore);
  const now = performance.now();
  if (waiting.length === 0) firstAt = now;
  lastAt = now;
  waiting.push(socket);
  if (timer === undefined) arm(QUIET_MS);
}

function arm(ms: number): void {
  timer = setTimeout(tick, ms);
  timer.unref();
}

/**
 * Closes nothing until `until` settles (a curtail wave's acknowledgements,
 * which the engine bounds). Overlapping holds end with the last of them;
 * the quiet time then counts from there.
 */
export function holdUntil(until: Promise<unknown>): void {
  holds++;
  const release = (): void => {
    holds--;
    lastAt = performance.now();
    if (holds === 0 && waiting.length > 0 && timer === undefined) arm(QUIET_MS);
  };
  until.then(release, release);
}

function tick(): void {
  timer = undefined;
  // held: the release arms the timer again
  if (holds > 0) return;
  const now = performance.now();
  const quietFor = now - lastAt;
  const waited = now - firstAt;
  if (quietFor < QUIET_MS && waited < MAX_DELAY_MS) {
    arm(Math.min(QUIET_MS - quietFor, MAX_DELAY_MS - waited));
    return;
  }
  closeWaiting();
}

/** Closes every waiting socket now (the curtail bench before each timed run; tests). */
export function closeWaiting(): void {
  if (timer !== undefined) {
    clearTimeout(timer);
    timer = undefined;
  }
  for (const s of waiting.splice(0)) s.destroy();
}

/** Sockets waiting to be closed (the curtail bench; tests). */
export function waitingCount(): number {
  return waiting.length;
}
