/**
 * The Sparkplug birth/death sequence (bdSeq): one value per MQTT CONNECT,
 * 0..255 then 0 again, carried by the Will (NDEATH) and the NBIRTH that
 * follows. Kept in the state directory so a restarted agent does not reuse
 * the value of its previous session (a host would match the old NDEATH to
 * the new NBIRTH). Written before the CONNECT that uses it.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';

export class BdSeqStore {
  private next: number;

  constructor(
    private readonly file: string,
    private readonly log: Logger,
  ) {
    this.next = this.load();
  }

  private load(): number {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ file: this.file, error: (err as Error).message }, 'sparkplug: bdSeq file unreadable; starting at 0');
      return 0;
    }
    try {
      const v = (JSON.parse(text) as { next?: unknown }).next;
      if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 255) return v;
    } catch {
      // reported below
    }
    this.log.warn({ file: this.file }, 'sparkplug: bdSeq file is damaged; starting at 0');
    return 0;
  }

  /** The value for the CONNECT about to be sent; the one after it is on disk before this returns. */
  take(): number {
    const v = this.next;
    this.next = (v + 1) % 256;
    try {
      mkdirSync(dirname(this.file), { recursive: true });
      const tmp = `${this.file}.tmp`;
      writeFileSync(tmp, `${JSON.stringify({ next: this.next })}\n`, { flush: true });
      renameSync(tmp, this.file);
    } catch (err) {
      // the session still works; a restart may then reuse a value (hosts see an NDEATH/NBIRTH mismatch once)
      this.log.error({ file: this.file, error: (err as Error).message }, 'sparkplug: cannot persist bdSeq');
    }
    return v;
  }
}
