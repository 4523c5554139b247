/**
 * An aedes broker on a loopback port that requires a username and password
 * (MQTT 3.1.1): wrong or missing credentials get CONNACK 5 "Not authorized",
 * as Mosquitto answers them. For tests of clients' authentication failures.
 */
import net from 'node:net';
import { Aedes, type AuthenticateError } from 'aedes';

export interface AuthBroker {
  port: number;
  url: string;
  /** Connections refused for their credentials. */
  refused: number;
  close(): Promise<void>;
}

/** CONNACK return code 5 (MQTT 3.1.1 "Connection Refused, not authorized"). */
const NOT_AUTHORIZED = 5;

export async function startAuthBroker(username: string, password: string, host = '127.0.0.1'): Promise<AuthBroker> {
  const state = { refused: 0 };
  const aedes = await Aedes.createBroker({
    authenticate: (_client, user, pass, done) => {
      if (user === username && pass?.toString('utf8') === password) {
        done(null, true);
        return;
      }
      state.refused++;
      const err: AuthenticateError = Object.assign(new Error('not authorized'), { returnCode: NOT_AUTHORIZED });
      done(err, false);
    },
  });
  const server = net.createServer((socket) => aedes.handle(socket));
  const sockets = new Set<net.Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `mqtt://${host}:${port}`,
    get refused() {
      return state.refused;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await new Promise<void>((r) => aedes.close(() => r()));
    },
  };
}
