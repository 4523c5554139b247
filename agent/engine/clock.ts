/**
 * The process's time origin, read once: it does not change for the life of
 * the process, and the `performance.timeOrigin` getter checks its receiver
 * on every read (an argument list allocated each time without the JIT), on
 * a path that takes the time twice per device of a curtailment wave.
 */
const ORIGIN = performance.timeOrigin;

/** Fractional epoch milliseconds from the monotonic clock: the engine's timings (and GPIO edge times) use it. */
export function hrNow(): number {
  return ORIGIN + performance.now();
}
