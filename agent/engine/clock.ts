/** Fractional epoch milliseconds from the monotonic clock: the engine's timings (and GPIO edge times) use it. */
export function hrNow(): number {
  return performance.timeOrigin + performance.now();
}
