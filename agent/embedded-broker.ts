/** The embedded demo broker: aedes on a TCP port (MQTT 3.1.1). */
import net from 'node:net';
import { Aedes } from 'aedes';

export interface EmbeddedBroker {
  host: string;
  port: number;
  url: string;
  close(): Promise<void>;
}

export async function startEmbeddedBroker(host = '127.0.0.1', port = 1883): Promise<EmbeddedBroker> {
  const aedes = await Aedes.createBroker();
  const server = net.createServer((socket) => aedes.handle(socket));
  const sockets = new Set<net.Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    await new Promise<void>((r) => aedes.close(() => r()));
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') {
      throw new Error(
        `port ${port} on ${host} is already in use (is Mosquitto or another broker running?). ` +
          `Use --port N for the embedded broker, or --broker mqtt://${host}:${port} to use the broker that is there.`,
        { cause: err },
      );
    }
    throw err;
  }
  const addr = server.address() as net.AddressInfo;
  return {
    host,
    port: addr.port,
    url: `mqtt://${host}:${addr.port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await new Promise<void>((r) => aedes.close(() => r()));
    },
  };
}
