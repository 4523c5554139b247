/**
 * Pre-flight checks for benchmarks that run a large simulated rack: the
 * open-file and ephemeral-port limits a rack of n devices needs, checked up
 * front so that a run says how far to raise a limit rather than failing
 * half-way with EMFILE or EADDRNOTAVAIL. Each check returns what to tell the
 * user (undefined: enough); the caller decides how to stop.
 */
import { readFileSync } from 'node:fs';

/**
 * Descriptors a rack of n devices may hold at once in one process: up to three
 * listeners per simulator, the connections of polls and confirmations on both
 * ends (keep-alive HTTP, gRPC through the fault proxy), plus the broker and
 * node itself. Measured for 256 mixed miners: ~860 in the simulators'
 * process, ~480 in the agent's; this allows about twice that (and covers the
 * signal-to-dispatch bench's floor, which holds its own warm connections in
 * the agent's process).
 */
export function fdsNeeded(n: number): number {
  return 256 + n * 6;
}

/** This process's open-file limits (Infinity: unlimited). */
export function nofile(): { soft: number; hard: number } {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  const num = (v: string | undefined): number => (v === undefined || v === 'unlimited' ? Infinity : Number(v));
  return { soft: num(m?.[1]), hard: num(m?.[2]) };
}

/**
 * Whether this process (and a node process it spawns) can open enough
 * sockets for n devices. Node raises its soft limit to the hard one at
 * start-up, so only a hard limit below the need is a problem: says how far to
 * raise it. `noun` names the devices in the message ("miners", "devices").
 */
export function fdLimitProblem(n: number, noun = 'devices'): string | undefined {
  const need = fdsNeeded(n);
  const { soft, hard } = nofile();
  if (soft >= need) return undefined;
  return `open-file limit is ${soft} (hard ${hard}); ${n} ${noun} may need ~${need}. Raise the hard limit (e.g. \`ulimit -Hn ${need}\` as root, or LimitNOFILE=${need} in a systemd unit) and run again.`;
}

/** Listeners take ephemeral ports: whether the range is too small for a rack of n devices. */
export function portRangeProblem(n: number, noun = 'devices'): string | undefined {
  let range: number[];
  try {
    range = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  } catch {
    return undefined;
  }
  const [lo = 32768, hi = 60999] = range;
  const need = n * 3 + n * 4; // listeners, plus connections in flight on both ends
  if (hi - lo + 1 >= need) return undefined;
  return `the ephemeral port range ${lo}-${hi} (${hi - lo + 1} ports) is too small for ${n} ${noun} (~${need}); widen net.ipv4.ip_local_port_range`;
}
