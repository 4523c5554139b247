/**
 * One AbortSignal per task, all aborted together. Node's EventTarget walks
 * its listener list on every addEventListener/removeEventListener, so 256
 * tasks each listening on one shared signal cost O(n²) on the hot path (the
 * curtail fan-out, every poll cycle). A group listens on its parents once and
 * hands every task a signal of its own.
 */
export class AbortGroup {
  private readonly ctls: AbortController[] = [];
  private aborted = false;
  private readonly onAbort = (): void => this.abort();

  constructor(private readonly parents: readonly AbortSignal[] = []) {
    for (const p of parents) {
      if (p.aborted) this.aborted = true;
      else p.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  /** A signal for one task: aborted with the group (at once if the group already is). */
  signal(): AbortSignal {
    const c = new AbortController();
    if (this.aborted) c.abort();
    else this.ctls.push(c);
    return c.signal;
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    for (const c of this.ctls.splice(0)) c.abort();
  }

  get isAborted(): boolean {
    return this.aborted;
  }

  /** Stops listening on the parents (the group's tasks are done). */
  dispose(): void {
    for (const p of this.parents) p.removeEventListener('abort', this.onAbort);
    this.ctls.length = 0;
  }
}
