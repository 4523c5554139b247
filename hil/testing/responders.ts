/**
 * Tiny purpose-built responders for detection tests: a cgminer-family API
 * answering fixed replies, a web page, a port that accepts and says nothing.
 * All bind loopback addresses only.
 */
import net from 'node:net';
import { CgminerServer, statusSection } from '../sim/cgminer-server.js';
import { HttpSimServer, type SimResponse } from '../sim/http-server.js';

export interface Closable {
  close(): Promise<void>;
}

/** A cgminer-family API that answers `version`/`devdetails` (and anything in `replies`) with fixed objects. */
export async function fakeApi(replies: Record<string, unknown>, host = '127.0.0.1', port = 0): Promise<{ server: CgminerServer; port: number }> {
  const server = new CgminerServer({
    host,
    port,
    handler: (req) => replies[req.command] ?? { STATUS: statusSection('E', 14, 'Invalid command'), id: 1 },
  });
  const a = await server.listen();
  return { server, port: a.port };
}

/** A web server whose every request gets `res`. */
export async function fakeWeb(res: SimResponse, host = '127.0.0.1', port = 0): Promise<{ server: HttpSimServer; port: number }> {
  const server = new HttpSimServer(() => res, host, port);
  const a = await server.listen();
  return { server, port: a.port };
}

/** Accepts connections and never answers (a hung service). */
export async function silentListener(host = '127.0.0.1', port = 0): Promise<{ server: Closable; port: number }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    // read (and drop) whatever comes, so the peer's close is seen and this side closes too
    s.resume();
    s.on('end', () => s.destroy());
    s.on('error', () => s.destroy());
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, host, () => resolve());
  });
  const p = (srv.address() as net.AddressInfo).port;
  return {
    port: p,
    server: {
      close: async () => {
        for (const s of sockets) s.destroy();
        await new Promise<void>((r) => srv.close(() => r()));
      },
    },
  };
}
