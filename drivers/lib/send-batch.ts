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
let tracking: BatchAnswers | undefined;

/**
 * When the exchanges a batch started have all ended (answered or failed):
 * the engine finishes a wave's devices (deadlines, confirmation) once their
 * answers are in, so that none of that work runs while answers are still
 * being read. Each transport that starts an exchange inside the batch asks
 * for a member (`answerTracker`) and calls it once when the exchange ends.
 */
export class BatchAnswers {
  /** Settles once every member ended (at once when the batch started none). */
  readonly all: Promise<void>;
  /** Exchanges the batch started that report their end. */
  count = 0;
  private left = 0;
  private sealed = false;
  private released = false;
  private resolve!: () => void;
  /** Work put off until every answer is in (`later`). */
  private queued: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    /** How long `later` work waits at most for the last answer (ms). */
    private readonly laterMaxMs = LATER_MAX_MS,
  ) {
    this.all = new Promise((r) => (this.resolve = r));
  }

  member(): () => void {
    this.count++;
    this.left++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.left === 0 && this.sealed) this.release();
    };
  }

  /** The batch's sends are all out: no member joins after this. */
  seal(): void {
    this.sealed = true;
    if (this.left === 0) this.release();
  }

  /**
   * Runs `work` once every answer of the batch is in, or `laterMaxMs` after
   * the first work was put off, whichever comes first (a device that never
   * answers holds nothing up for long); at once when that time has come.
   * For what an exchange has to do after its answer and that can wait:
   * done among the answers still coming in, it would hold up their reading.
   */
  later(work: () => void): void {
    if (this.released) {
      work();
      return;
    }
    this.queued.push(work);
    if (this.timer === undefined) {
      this.timer = setTimeout(() => this.flush(), this.laterMaxMs);
      this.timer.unref();
    }
  }

  private release(): void {
    this.resolve();
    this.flush();
  }

  private flush(): void {
    this.released = true;
    clearTimeout(this.timer);
    const work = this.queued;
    this.queued = [];
    // each piece on its own, as after a batch of sends
    for (const w of work) runSafely(w, 'after the answers of a batch');
  }
}

/** How long an exchange's put-off work (BatchAnswers.later) waits at most for the rest of its batch's answers. */
export const LATER_MAX_MS = 250;

function runSafely(w: () => void, when: string): void {
  try {
    w();
  } catch (err) {
    process.emitWarning(`rackpilot: work ${when} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  }
}

/**
 * Runs `sends`, then the work they deferred with `afterSends`, in order;
 * returns what `sends` returned. `answers`: counts the exchanges the sends
 * started (see BatchAnswers).
 */
export function sendBatch<T>(sends: () => T, answers?: BatchAnswers): T {
  if (pending) return sends(); // nested: the outer batch runs the work
  const work: (() => void)[] = [];
  pending = work;
  tracking = answers;
  try {
    return sends();
  } finally {
    pending = undefined;
    tracking = undefined;
    answers?.seal();
    // each piece on its own: one transport's failure must not leave another's answer unread (that
    // exchange then ends at its deadline); it is a bug, said on stderr, never a crash of the agent
    for (const w of work) runSafely(w, 'reading an answer after a batch of sends');
  }
}

/**
 * Inside a batch that counts its answers: the call to make, once, when the
 * exchange being started now has ended (answered or failed). Undefined
 * anywhere else.
 */
export function answerTracker(): (() => void) | undefined {
  return tracking?.member();
}

/** The batch that counts its answers, when one is running its sends now (see answerTracker). */
export function answerBatch(): BatchAnswers | undefined {
  return tracking;
}

/** Inside a batch: `work` runs right after the batch's sends; outside one: now. */
export function afterSends(work: () => void): void {
  if (pending) pending.push(work);
  else work();
}
