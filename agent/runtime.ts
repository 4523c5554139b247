/**
 * The low-memory node profile, defined once: an opt-in for controllers short
 * of RAM (put the flags before the script on the node command line, e.g. in
 * the systemd unit's ExecStart). It is NOT the default: it trades the
 * curtailment path's speed for memory (figures below), and a rack agent's
 * first duty is to shed load fast. `rackpilot bench curtail` measures the
 * agent's RSS both ways (hil/bench/rss-phase.ts); rss-probe.ts takes them by
 * default.
 *
 * Measured (hil/bench/rss-probe.ts, node 20, 256 simulated miners of 9
 * families polled every 5 s): RSS about 155 MiB with no flag, about 95 MiB
 * with the three heap flags, about 76 MiB (peak 77-80) with all of them; 38 MiB
 * of that is node's own binary (file-backed pages), the live JS heap is
 * about 21 MiB. The price is CPU time: `rackpilot bench curtail` issues the
 * last of 256 commands in about 75-90 ms instead of 25-30 ms (the heap flags
 * alone cost about as much as --jitless).
 */

/** Each flag with why it is there; the order is the command line's. */
export const LOW_MEMORY_NODE_FLAG_RATIONALE = [
  ['--jitless', 'interpreter only: no compiled code kept and fewer pages of the node binary touched (-17 MiB RSS)'],
  ['--no-expose-wasm', 'says what --jitless implies, which silences its warning at every start (nothing uses WebAssembly)'],
  ['--max-semi-space-size=1', '1 MiB young generation: frequent cheap scavenges free socket buffers early (-60 MiB RSS)'],
  ['--max-old-space-size=96', 'a ceiling 4x the 256-device live heap: bursts fit, and an out-of-memory exit would stop curtailment'],
  ['--optimize-for-size', 'V8 grows the heap in smaller steps and favours memory over speed'],
] as const satisfies readonly (readonly [string, string])[];

/** The flags alone, to put on a node command line before the script. */
export const LOW_MEMORY_NODE_FLAGS: readonly string[] = LOW_MEMORY_NODE_FLAG_RATIONALE.map(([flag]) => flag);

/** The flags of LOW_MEMORY_NODE_FLAGS missing from a process's `execArgv` (e.g. `node dist/agent/cli.js run` by hand). */
export function missingLowMemoryFlags(execArgv: readonly string[] = process.execArgv): string[] {
  return LOW_MEMORY_NODE_FLAGS.filter((f) => !execArgv.includes(f));
}
