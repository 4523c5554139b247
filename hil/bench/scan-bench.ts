/**
 * Scan benchmark (prints figures, asserts nothing): a /22 under
 * 127.1.0.0/22 (loopback only) with simulators of every family (round-robin
 * over the catalog, all on the same ports like a real subnet) on a few dozen
 * addresses, some silent listeners, and nothing on the rest. Prints wall
 * time and peak open sockets (sampled /proc/self/fd count) for concurrency
 * 64 and 256.
 *   npm run bench:scan
 */
import { expandCidr, scan } from '../../agent/scan.js';
import { SIM_CATALOG, SIM_PASSWORD } from '../sim/catalog.js';
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
  const ports = { api: await freePort(), http: await freePort(), v3: await freePort(), grpc: await freePort() };
  const { api: apiPort, http: httpPort } = ports;
  const open: Closable[] = [];
  // spread miners and silent hosts over the range
  const step = Math.floor(range.hosts.length / HOSTS);
  const picked = Array.from({ length: HOSTS }, (_, i) => range.hosts[i * step] as string);
  for (const [i, host] of picked.entries()) {
    if (i % SILENT_EVERY === 0) open.push((await silentListener(host, apiPort)).server);
    else {
      const entry = SIM_CATALOG[i % SIM_CATALOG.length];
      if (entry) open.push(await entry.start({ host, fast: true, ports, index: i }));
    }
  }
  const silentCount = picked.filter((_, i) => i % SILENT_EVERY === 0).length;
  process.stdout.write(`${RANGE}: ${range.hosts.length} addresses, ${picked.length - silentCount} simulators of ${SIM_CATALOG.length} families, ${silentCount} silent listeners, the rest closed\n`);
  for (const concurrency of [64, 256]) {
    const base = openFds();
    let peak = base;
    const sampler = setInterval(() => (peak = Math.max(peak, openFds())), 2);
    const { summary } = await scan({ hosts: range.hosts, apiPort, httpPort, concurrency, timeoutMs: 3000, portMap: { 4433: ports.v3, 50051: ports.grpc, 8080: httpPort }, credentials: { password: SIM_PASSWORD } });
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
