/**
 * The spool's acknowledged position, `ack.json`: `{"version":1,"ackedSeq":N,"nextSeq":M}`.
 * Every record with seq <= ackedSeq was acknowledged by the broker and is never
 * replayed; nextSeq keeps seqs increasing across restarts even when the
 * segments holding the newest ones are gone. Replaced atomically
 * (drivers/lib/atomic-file.ts: temp file, fsync, rename, fsync the folder).
 */
import { readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { removeStaleTemps, writeFileAtomic } from '../../drivers/lib/atomic-file.js';

export const ACK_FILE = 'ack.json';

const ackSchema = z.object({
  version: z.literal(1),
  ackedSeq: z.number().int().nonnegative(),
  nextSeq: z.number().int().positive(),
});

export type AckState = z.output<typeof ackSchema>;

/** `none`: no file (a new spool); `corrupt`: unreadable, moved aside to `ack.json.corrupt-<ts>`. */
export type AckLoad = { kind: 'ok'; ack: AckState } | { kind: 'none' } | { kind: 'corrupt'; error: string };

export async function loadAck(dir: string): Promise<AckLoad> {
  const path = join(dir, ACK_FILE);
  removeStaleTemps(path);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'none' };
    return { kind: 'corrupt', error: (err as Error).message };
  }
  let error: string;
  try {
    const r = ackSchema.safeParse(JSON.parse(text));
    if (r.success) return { kind: 'ok', ack: r.data };
    error = r.error.message;
  } catch (err) {
    error = (err as Error).message;
  }
  await rename(path, `${path}.corrupt-${Date.now()}`).catch(() => undefined);
  return { kind: 'corrupt', error };
}

export async function saveAck(dir: string, ack: AckState): Promise<void> {
  await writeFileAtomic(join(dir, ACK_FILE), JSON.stringify(ack));
}
