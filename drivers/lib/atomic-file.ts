/**
 * Atomic file replacement: the data goes to a temp file in the same folder,
 * is fsynced, renamed over the target, and the folder is fsynced so the
 * rename itself survives a power loss. A reader (or a process restarted
 * after a crash at any point) sees either the old file or the new one, never
 * a mix. A crash can leave a temp file behind (`<file>.<pid>.<n>.tmp`);
 * `removeStaleTemps` clears those of other processes.
 *
 * Errors are thrown as they come (node's errors, with `code`): callers wrap
 * them with what the file is for and what to do.
 */
import { closeSync, fsyncSync, openSync, readdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

let seq = 0;

/** A temp name unique within this process (a sync and an async write to the same file never share one). */
function tempPath(path: string): string {
  seq = (seq + 1) % 1_000_000;
  return `${path}.${process.pid}.${seq}.tmp`;
}

/** Writes `data` to `path` atomically and durably (blocking). `mode` applies to a new file (default 0640). */
export function writeFileAtomicSync(path: string, data: string | Uint8Array, mode = 0o640): void {
  const tmp = tempPath(path);
  try {
    const fd = openSync(tmp, 'w', mode);
    try {
      writeFileSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // never created, or already renamed
    }
    throw err;
  }
  const dfd = openSync(dirname(path), 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** The same as `writeFileAtomicSync`, without blocking the event loop. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o640): Promise<void> {
  const tmp = tempPath(path);
  try {
    const fh = await open(tmp, 'w', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  const dh = await open(dirname(path), 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/**
 * Removes temp files of `path` left by other processes (a crash mid-write);
 * returns how many. Best effort: an unreadable folder removes nothing.
 */
export function removeStaleTemps(path: string): number {
  const dir = dirname(path);
  const prefix = `${basename(path)}.`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const m = /^(\d+)\.\d+\.tmp$/.exec(name.slice(prefix.length));
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      unlinkSync(join(dir, name));
      removed++;
    } catch {
      // gone already, or not ours to remove
    }
  }
  return removed;
}
