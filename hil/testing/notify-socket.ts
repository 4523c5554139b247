/**
 * A fake systemd NOTIFY_SOCKET for tests: a unix datagram socket bound by a
 * small python3 process (Node cannot bind datagram unix sockets), which
 * prints every datagram it receives as one JSON line with its arrival time.
 * An independent implementation of the receiving side, as systemd's is.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const RECEIVER = `
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"bound": True}), flush=True)
while True:
    data = s.recv(65536)
    print(json.dumps({"t": time.time() * 1000, "msg": data.decode("utf-8", "replace")}), flush=True)
`;

export interface Notification {
  /** Arrival time, ms since the epoch (receiver's clock, the same host's). */
  t: number;
  /** The raw datagram: KEY=VALUE lines. */
  msg: string;
}

export class FakeNotifySocket {
  readonly received: Notification[] = [];
  private waiters: (() => void)[] = [];

  private constructor(
    readonly path: string,
    private readonly dir: string,
    private readonly proc: ChildProcessWithoutNullStreams,
  ) {}

  static async start(python = 'python3'): Promise<FakeNotifySocket> {
    const dir = mkdtempSync(join(tmpdir(), 'rp-notify-'));
    const path = join(dir, 'notify.sock');
    const proc = spawn(python, ['-c', RECEIVER, path], { stdio: ['pipe', 'pipe', 'pipe'] });
    const sock = new FakeNotifySocket(path, dir, proc);
    let stderr = '';
    proc.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    await new Promise<void>((resolve, reject) => {
      const lines = createInterface({ input: proc.stdout });
      proc.once('exit', (code) => reject(new Error(`notify receiver exited (${code}): ${stderr}`)));
      lines.on('line', (line) => {
        const m = JSON.parse(line) as { bound?: boolean } & Partial<Notification>;
        if (m.bound) return resolve();
        if (typeof m.t === 'number' && typeof m.msg === 'string') sock.received.push({ t: m.t, msg: m.msg });
        for (const w of sock.waiters.splice(0)) w();
      });
    });
    return sock;
  }

  /** Notifications carrying this assignment (e.g. "READY=1"). */
  with(assignment: string): Notification[] {
    return this.received.filter((n) => n.msg.split('\n').includes(assignment));
  }

  /** Resolves when `pred` holds for the received list; rejects after `timeoutMs` naming what was received. */
  async waitFor(what: string, pred: (r: Notification[]) => boolean, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.received)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; received: ${JSON.stringify(this.received.map((n) => n.msg).slice(-10))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.proc.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}
