/**
 * The LuxOS single-session rule: only one session may exist, and it expires
 * after 60 s idle. We reuse our session while it is fresh, adopt the active
 * one when logon answers 402 "Another session is active", and log on again
 * once when a command says the session is no longer valid.
 */
import type { CgminerClient } from '../lib/cgminer/client.js';
import { checkStatus } from '../lib/cgminer/client.js';
import { sectionItems, str } from '../lib/cgminer/fields.js';
import { RackpilotError } from '../lib/errors.js';

/** Renew before the firmware's 60 s idle expiry. */
const REUSE_WITHIN_MS = 45_000;

export class LuxosSession {
  private sid: string | undefined;
  private lastUsed = 0;
  private owned = false;

  constructor(
    private readonly client: CgminerClient,
    private readonly now: () => number,
  ) {}

  private async acquire(signal?: AbortSignal): Promise<string> {
    if (this.sid && this.now() - this.lastUsed < REUSE_WITHIN_MS) return this.sid;
    this.sid = undefined;
    const where = `${this.client.where} logon`;
    const reply = await this.client.raw('logon', undefined, signal);
    const sid = str(sectionItems(reply, 'SESSION')[0], 'SessionID');
    if (sid) {
      this.set(sid, true);
      return sid;
    }
    const st = Array.isArray(reply.STATUS) ? reply.STATUS[0] : reply.STATUS;
    if (st?.Code === 402) {
      // Someone (maybe our previous run) holds the one session: adopt it.
      const info = await this.client.command('session', undefined, signal);
      const active = str(sectionItems(info, 'SESSION')[0], 'SessionID');
      if (active) {
        this.set(active, false);
        return active;
      }
      throw new RackpilotError('SESSION_BUSY', `${where}: another session is active and its id cannot be read; retry later`);
    }
    checkStatus(reply, where);
    throw new RackpilotError('MALFORMED_RESPONSE', `${where}: logon succeeded but returned no SessionID`);
  }

  private set(sid: string, owned: boolean): void {
    this.sid = sid;
    this.owned = owned;
    this.lastUsed = this.now();
  }

  /** Runs a privileged command with `<sid>,args`; re-logs on once if the session was invalid. */
  async run(command: string, args: string, signal?: AbortSignal) {
    for (let attempt = 0; ; attempt++) {
      const reused = this.sid !== undefined;
      const sid = await this.acquire(signal);
      const reply = await this.client.raw(command, `${sid},${args}`, signal);
      try {
        checkStatus(reply, `${this.client.where} ${command}`);
        this.lastUsed = this.now();
        return reply;
      } catch (err) {
        // LuxOS does not document its "invalid session" error, and a session can end early
        // (reboot, someone's `kill`): any device error on a reused session gets one fresh logon.
        const retry = reused && attempt === 0 && err instanceof RackpilotError && err.code === 'DEVICE_ERROR';
        if (!retry) throw err;
        this.sid = undefined;
      }
    }
  }

  /** Logs off when the session is ours (never someone else's). */
  async close(signal?: AbortSignal): Promise<void> {
    const sid = this.sid;
    const owned = this.owned;
    this.sid = undefined;
    if (sid && owned) await this.client.raw('logoff', sid, signal);
  }
}
