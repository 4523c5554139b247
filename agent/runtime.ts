/**
 * The low-memory node profile, defined once. It is what the service runs:
 * install.sh writes these flags into /etc/default/rackpilot
 * (RACKPILOT_NODE_FLAGS, put before the script on the unit's node command
 * line); an operator empties that line for node's JIT. `rackpilot bench
 * curtail` measures the agent's RSS under both (hil/bench/rss-phase.ts);
 * rss-probe.ts takes this profile by default.
 *
 * Why it is the default (node 20, the bundled agent as a release runs it,
 * 256 simulated miners of 9 families polled every 5 s, 32 at once):
 *  - memory: RSS about 74 MiB steady, 75 MiB peak, against 123-130 MiB
 *    steady and 147-155 MiB peak under the JIT; about 40 MiB of either is
 *    file pages of node's own binary and libraries, the live JS heap is
 *    about 18 MiB;
 *  - the signal path: the decision (edge to first send) is 0.1 ms at p50
 *    either way, but its p99 stays at 0.2-0.3 ms here, where under the
 *    JIT a main-thread stall of 1.4-5.7 ms (incremental-marking steps of
 *    its larger heap among them) lands on it in some runs.
 * The price is CPU time: the last of 256 commands goes out about 8 ms
 * after the edge instead of 3 ms, and the last acknowledgement 31-37 ms
 * after it instead of 22-24 ms (p50; 1.14-1.25x the raw floor's, the JIT's
 * 0.99-1.03x, each floor measured under the same flags). Both are far inside
 * the fastest grid response window (250 ms, ERCOT FFR) and a miner's
 * seconds of winding down.
 */
import { constants, PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';

/** keepCompiledCode()'s one switch per process (resolved once flushing is off). */
let codeKept: Promise<void> | undefined;

/**
 * Keeps every function's compiled code for good once start-up is over.
 * By default V8 drops the bytecode of a function that has not run for a few
 * (`--bytecode-old-age`, 5) major GCs, and the curtailment path (signal,
 * engine, each driver's armed send) runs only when the rack is curtailed:
 * an agent that had not curtailed for half a minute compiled it again,
 * function by function, on the next signal edge. Measured (bench curtail,
 * 256 devices, 30 s of polling before each trial, low-memory profile):
 * decision 0.83 / 1.42 ms (p50 / p99) with flushing, 0.25 / 0.30 ms
 * without; the last command issued 1.84x the floor instead of 1.09x.
 *
 * Flushing is turned off (V8's `--no-flush-bytecode`, set at run time: V8
 * reads it at each GC) only after `afterMajorGcs` major GCs (or `maxWaitMs`,
 * whichever comes first), so that the code run once at start (module
 * bodies, config parsing, schema building) is dropped first: turned off at
 * once it kept about 1.4 MiB more RSS for good. With 256 devices polled
 * every 5 s the agent sees a major GC every poll cycle (low-memory profile),
 * so the switch comes about 40 s after start. A curtailment path first run
 * before the switch may still be dropped once; after it, whatever runs stays
 * compiled. Called by Agent.start(); the first call decides, later ones get
 * the same promise, which resolves when flushing is off.
 */
export function keepCompiledCode(opts: { afterMajorGcs?: number; maxWaitMs?: number } = {}): Promise<void> {
  codeKept ??= new Promise<void>((resolve) => {
    const need = opts.afterMajorGcs ?? 8;
    let seen = 0;
    const keep = (): void => {
      observer.disconnect();
      clearTimeout(timer);
      v8.setFlagsFromString('--no-flush-bytecode');
      resolve();
    };
    const observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        const kind = (e as { detail?: { kind?: number } }).detail?.kind;
        if (kind === constants.NODE_PERFORMANCE_GC_MAJOR && ++seen === need) keep();
      }
    });
    observer.observe({ entryTypes: ['gc'] });
    const timer = setTimeout(keep, opts.maxWaitMs ?? 5 * 60_000);
    timer.unref();
  });
  return codeKept;
}

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
