/**
 * The listening side every TCP/HTTP simulator shares: bind host:port (0: an
 * ephemeral port) failing on a bind error, read the bound port back, and
 * remember accepted sockets so close() can cut them instead of waiting for
 * clients to hang up.
 */
import type net from 'node:net';

export class SimListener {
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly server: net.Server) {}

  /** Remembers an accepted socket until it closes. */
  track(s: net.Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return { host, port: this.port };
  }

  /** The bound port (0 before listen). */
  get port(): number {
    const a = this.server.address();
    return typeof a === 'object' && a ? a.port : 0;
  }

  /** Destroys the tracked sockets and stops listening. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
