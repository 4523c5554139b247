/**
 * Scan benchmark (prints figures, asserts nothing): a /22 under
 * 127.1.0.0/22 (loopback only) with LuxOS simulators on a few dozen
 * addresses, other registered families' simulators where a sim can be
 * made generically (none yet: see the report), some silent listeners, and
 * nothing on the rest. Prints wall time and peak open sockets (sampled
 * /proc/self/fd count) for concurrency 64 and 256.
 *   npm run bench:scan
 */
import { expandCidr, scan } from '../../agent/scan.js';
import { LuxosSim } from '../sim/luxos-sim.js';
import { openFds } from '../testing/fds.js';
import { freePort } from '../testing/ports.js';
import { silentListener, type Closable } from '../testing/responders.js';

const RANGE = '127.1.0.0/22';
/** Simulated hosts; every SILENT_EVERY-th of them is a silent listener instead of a simulator. */
const HOSTS = 56;
const SILENT_EVERY = 4;

async function main(): Promise<void> {
  const range = expandCidr(RANGE);
  if (!range.ok) throw new Error(range.error);
  const apiPort = await freePort();
  const httpPort = await freePort();
  const open: Closable[] = [];
  // spread miners and silent hosts over the range
  const step = Math.floor(range.hosts.length / HOSTS);
  const picked = Array.from({ length: HOSTS }, (_, i) => range.hosts[i * step] as string);
  for (const [i, host] of picked.entries()) {
    if (i % SILENT_EVERY === 0) open.push((await silentListener(host, apiPort)).server);
    else {
      const sim = new LuxosSim({ host, port: apiPort });
      await sim.listen();
      open.push(sim);
    }
  }
  const silentCount = picked.filter((_, i) => i % SILENT_EVERY === 0).length;
  process.stdout.write(`${RANGE}: ${range.hosts.length} addresses, ${picked.length - silentCount} LuxOS simulators, ${silentCount} silent listeners, the rest closed\n`);
  for (const concurrency of [64, 256]) {
    const base = openFds();
    let peak = base;
    const sampler = setInterval(() => (peak = Math.max(peak, openFds())), 2);
    const { summary } = await scan({ hosts: range.hosts, apiPort, httpPort, concurrency, timeoutMs: 3000, portMap: { 4433: httpPort, 50051: httpPort } });
    clearInterval(sampler);
    await new Promise((r) => setTimeout(r, 200));
    process.stdout.write(
      `concurrency ${String(concurrency).padStart(3)}: wall ${(summary.wallMs / 1000).toFixed(2)} s, ${summary.miners} miners (${JSON.stringify(summary.byDriver)}), ` +
        `${summary.silent} silent, ${summary.timeouts} timed out; peak open fds ${peak} (baseline ${base}, +${peak - base} incl. simulator side), after ${openFds()}\n`,
    );
  }
  for (const s of open) await s.close();
}

main().catch((err: unknown) => {
  process.stderr.write(`${String(err)}\n`);
  process.exit(1);
});
