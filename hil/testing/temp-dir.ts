/**
 * Temporary folders for tests, rigs and benchmarks: made under the OS temp
 * folder and removed, with everything in them, when the process exits (a
 * test file runs in a process of its own, so its folders go with it). A run
 * of the suite used to leave a few hundred behind in /tmp.
 *
 * A process killed outright (SIGKILL, a runner's timeout) leaves its folders:
 * nothing can run then.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];

function removeAll(): void {
  for (const dir of made.splice(0)) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // a folder that cannot be removed (e.g. made read-only by a test) stays; the exit goes on
    }
  }
}

/** A new empty folder `<tmp>/<prefix>XXXXXX`, removed at process exit. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (made.length === 0) process.once('exit', removeAll);
  made.push(dir);
  return dir;
}
