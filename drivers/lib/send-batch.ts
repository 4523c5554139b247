/**
 * Sends first, listeners after: while the engine fires every armed curtail
 * of a wave in one loop (agent/engine/executor.ts fireArmed), the transports
 * leave what reads each answer (attaching socket and stream listeners) for
 * right after the loop, so the sends go out back to back. Nothing is missed
 * meanwhile: a socket's events are all delivered later (I/O callbacks and
 * process.nextTick), and the deferred work runs before the loop's caller
 * returns, in the same synchronous stretch. Outside a batch (every plain
 * request) `afterSends` runs its work at once.
 */

let pending: (() => void)[] | undefined;

/** Runs `sends`, then the work they deferred with `afterSends`, in order; returns what `sends` returned. */
export function sendBatch<T>(sends: () => T): T {
  if (pending) return sends(); // nested: the outer batch runs the work
  const work: (() => void)[] = [];
  pending = work;
  try {
    return sends();
  } finally {
    pending = undefined;
    // each piece on its own: one transport's failure must not leave another's answer unread (that
    // exchange then ends at its deadline); it is a bug, said on stderr, never a crash of the agent
    for (const w of work) {
      try {
        w();
      } catch (err) {
        process.emitWarning(`rackpilot: reading an answer after a batch of sends failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
    }
  }
}

/** Inside a batch: `work` runs right after the batch's sends; outside one: now. */
export function afterSends(work: () => void): void {
  if (pending) pending.push(work);
  else work();
}
