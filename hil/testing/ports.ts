import { readFileSync } from 'node:fs';
import net from 'node:net';

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, host, () => resolve());
  });
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/**
 * A TCP port on `host` that refuses connections and stays that way for the
 * test: it lies below the kernel's ephemeral range
 * (/proc/sys/net/ipv4/ip_local_port_range), so no listener bound to port 0
 * (every simulator here) can be handed it later, which a port from
 * freePort() can be, within the same process or by a parallel test file.
 * It is checked to refuse at the moment it is returned.
 */
export async function refusedPort(host = '127.0.0.1'): Promise<number> {
  let low = 32768;
  try {
    const first = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(first) && first > 1100) low = first;
  } catch {
    // not Linux: 32768 is the usual lower bound elsewhere too
  }
  // Start a little below the range and walk down past anything that answers.
  for (let port = low - 7; port > 1024; port--) {
    if (await refuses(host, port)) return port;
  }
  throw new Error(`no refused TCP port below ${low} on ${host}`);
}

function refuses(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

/** Resolves once something accepts TCP connections on host:port. */
export async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createConnection({ host, port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
