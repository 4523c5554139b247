import { RackpilotError } from './errors.js';

/**
 * Runs `work` with a deadline. The signal passed to `work` aborts when the
 * deadline passes or when the caller's signal aborts, so sockets can be torn
 * down; the returned promise settles no later than the deadline either way.
 */
export async function withDeadline<T>(
  what: string,
  ms: number,
  work: (signal: AbortSignal) => Promise<T>,
  parent?: AbortSignal,
): Promise<T> {
  if (parent?.aborted) throw new RackpilotError('CANCELLED', `${what}: cancelled before it started`);
  const ctl = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let onParentAbort: (() => void) | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new RackpilotError('DEADLINE_EXCEEDED', `${what}: no result within ${ms} ms`, { deadlineMs: ms });
      ctl.abort(err);
      reject(err);
    }, ms);
    if (parent) {
      onParentAbort = () => {
        const err = new RackpilotError('CANCELLED', `${what}: cancelled`);
        ctl.abort(err);
        reject(err);
      };
      parent.addEventListener('abort', onParentAbort, { once: true });
    }
  });
  try {
    return await Promise.race([work(ctl.signal), expired]);
  } finally {
    clearTimeout(timer);
    if (parent && onParentAbort) parent.removeEventListener('abort', onParentAbort);
  }
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
