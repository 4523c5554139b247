/**
 * A real serial link for tests: a pseudo-terminal pair made by socat
 * (`socat -d -d pty,raw,echo=0,link=<dir>/a pty,raw,echo=0,link=<dir>/b`).
 * Whatever is written to one end comes out of the other. Needs socat
 * (tests call requireTool('socat', 'socat') first).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PtyPair {
  /** One end (the agent's, say). */
  a: string;
  /** The other end (the simulator's). */
  b: string;
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function ptyPair(socatPath = 'socat', timeoutMs = 5000): Promise<PtyPair> {
  const dir = mkdtempSync(join(tmpdir(), 'rackpilot-pty-'));
  const a = join(dir, 'a');
  const b = join(dir, 'b');
  const child: ChildProcess = spawn(socatPath, ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    if (stderr.length < 4096) stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const dispose = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const until = Date.now() + timeoutMs;
  // socat logs "starting data transfer loop" once both ptys exist
  while (!(existsSync(a) && existsSync(b) && stderr.includes('starting data transfer loop'))) {
    if (child.exitCode !== null || Date.now() > until) {
      await dispose();
      throw new Error(`socat did not make a pty pair within ${timeoutMs} ms: ${stderr.trim() || `exit ${String(child.exitCode)}`}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { a, b, dispose, [Symbol.asyncDispose]: dispose };
}
