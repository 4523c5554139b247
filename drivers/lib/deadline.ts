import { RackpilotError } from './errors.js';

/**
 * Runs `work` with a deadline. The signal passed to `work` aborts when the
 * deadline passes or when the caller's signal aborts, so sockets can be torn
 * down; the returned promise settles no later than the deadline either way.
 *
 * One promise, one controller and one timer per call, settled by whichever
 * comes first (no Promise.race over a second "expired" promise): a curtail
 * wave runs this twice per device on its hot path (the engine's guard and
 * the driver's own deadline), so its allocations are the wave's garbage.
 */
export function withDeadline<T>(
  what: string,
  ms: number,
  work: (signal: AbortSignal) => Promise<T>,
  parent?: AbortSignal,
): Promise<T> {
  if (parent?.aborted) return Promise.reject(new RackpilotError('CANCELLED', `${what}: cancelled before it started`));
  return new Promise<T>((resolve, reject) => {
    const ctl = new AbortController();
    let settled = false;
    const end = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      if (parent) parent.removeEventListener('abort', onParentAbort);
      return true;
    };
    const stop = (err: RackpilotError): void => {
      if (!end()) return;
      ctl.abort(err);
      reject(err);
    };
    const onParentAbort = (): void => stop(new RackpilotError('CANCELLED', `${what}: cancelled`));
    const timer = setTimeout(() => stop(new RackpilotError('DEADLINE_EXCEEDED', `${what}: no result within ${ms} ms`, { deadlineMs: ms })), ms);
    if (parent) parent.addEventListener('abort', onParentAbort, { once: true });
    let running: Promise<T>;
    try {
      running = Promise.resolve(work(ctl.signal));
    } catch (err) {
      // the work's own failure goes on as it was thrown, as it would through an await
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
      if (end()) reject(err);
      return;
    }
    // a result after the deadline or the cancel is dropped (and its rejection handled)
    running.then(
      (v) => {
        if (end()) resolve(v);
      },
      (err: unknown) => {
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        if (end()) reject(err);
      },
    );
  });
}

/** Resolves after `ms`, or rejects early with CANCELLED when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new RackpilotError('CANCELLED', 'wait cancelled'));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new RackpilotError('CANCELLED', 'wait cancelled'));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
