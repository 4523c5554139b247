/**
 * The low-memory node profile, defined once: an opt-in for controllers short
 * of RAM (put the flags before the script on the node command line, e.g. in
 * the systemd unit's ExecStart). It is NOT the default: it trades the
 * curtailment path's speed for memory (figures below), and a rack agent's
 * first duty is to shed load fast. `rackpilot bench curtail` measures the
 * agent's RSS both ways (hil/bench/rss-phase.ts); rss-probe.ts takes them by
 * default.
 *
 * Measured (hil/bench/rss-probe.ts and `rackpilot bench curtail`, node 20,
 * the bundled agent as a release runs it, 256 simulated miners of 9 families
 * polled every 5 s): RSS about 130-155 MiB with no flag, about 75 MiB
 * (peaks 76-78 MiB) with these; about 40 MiB of it is file pages of node's
 * own binary and libraries, the live JS heap is about 18 MiB. The price is
 * CPU time on the curtailment path: the last of 256 commands goes out in
 * about 10 ms instead of 3.4-4.1 ms, and the last acknowledgement comes about
 * 1.23-1.35x the raw floor's instead of 1.04-1.17x (the floor measured under
 * the same flags); the decision (edge to first send) is 0.1 ms either way.
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
