/**
 * The LuxOS single-session rule: only one session may exist, and it expires
 * after 60 s idle (each privileged use resets the timer). We reuse our
 * session while it is fresh, adopt the active one when logon answers 402
 * "Another session is active", and log on again once when a command says
 * the session is no longer valid.
 *
 * Keeping it warm (off the hot path): `warm()` is called after each good
 * telemetry read. With no session it logs on; with one of ours idle for
 * REFRESH_AFTER_MS it renews it by `logoff` + `logon` (LuxOS has no harmless
 * privileged no-op, and a logoff/logon cycle gives a fresh 60 s window); an
 * adopted session idle that long is re-checked with `logon` (402 -> adopt it
 * again, otherwise it had expired and the new session is ours). So with the
 * poller reading every few seconds, curtail/restore find a live session and
 * never pay for a logon.
 */
import type { CgminerClient, CgminerReply } from '../lib/cgminer/client.js';
import { checkStatus } from '../lib/cgminer/client.js';
import { sectionItems, str } from '../lib/cgminer/fields.js';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError, toRackpilotError } from '../lib/errors.js';

/** Renew before the firmware's 60 s idle expiry. */
const REUSE_WITHIN_MS = 45_000;
/** warm() renews a session idle this long (below REUSE_WITHIN_MS, so a renewed one is never "too old"). */
export const REFRESH_AFTER_MS = 40_000;
/** After a failed warm-up (e.g. logon refused), warm() waits this long before trying again. */
const WARM_RETRY_MS = 30_000;

export class LuxosSession {
  private sid: string | undefined;
  private lastUsed = 0;
  private owned = false;
  /** A logon/refresh in progress; everyone needing a session waits for it instead of racing it. */
  private inflight: Promise<string> | undefined;
  private warmFailedAt: number | undefined;

  constructor(
    private readonly client: CgminerClient,
    private readonly now: () => number,
    /** Deadline of one warm-up (logoff + logon) run in the background. */
    private readonly warmDeadlineMs = 5_000,
    private readonly onWarmError: (err: RackpilotError) => void = () => undefined,
  ) {}

  /** The session id held now, if any (for tests and diagnostics). */
  get current(): string | undefined {
    return this.sid;
  }

  /** `reused`: the id was already held (it may have ended early); false for one just obtained. */
  private async acquire(signal?: AbortSignal): Promise<{ sid: string; reused: boolean }> {
    if (this.inflight) {
      try {
        await this.inflight;
      } catch {
        // the warm-up failed; try ourselves below
      }
    }
    if (this.sid && this.now() - this.lastUsed < REUSE_WITHIN_MS) return { sid: this.sid, reused: true };
    const sid = await this.logon(signal);
    // an adopted session is someone else's and may be about to expire: it gets the retry too
    return { sid, reused: !this.owned };
  }

  private async logon(signal?: AbortSignal): Promise<string> {
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

  /**
   * Off the hot path: makes sure a live session will be there for the next
   * action. Never throws and never waits for the device: the work runs in
   * the background under its own deadline.
   */
  warm(): void {
    if (this.inflight) return;
    const now = this.now();
    if (this.warmFailedAt !== undefined && now - this.warmFailedAt < WARM_RETRY_MS) return;
    if (this.sid && now - this.lastUsed < REFRESH_AFTER_MS) return;
    const p = withDeadline(`${this.client.where} session warm-up`, this.warmDeadlineMs, async (signal) => {
      if (this.sid && this.owned) {
        const old = this.sid;
        this.sid = undefined;
        await this.client.raw('logoff', old, signal).catch(() => undefined);
      }
      return this.logon(signal);
    });
    this.inflight = p;
    p.then(
      () => {
        this.warmFailedAt = undefined;
      },
      (err: unknown) => {
        this.warmFailedAt = this.now();
        this.onWarmError(toRackpilotError(err));
      },
    ).finally(() => {
      if (this.inflight === p) this.inflight = undefined;
    });
  }

  /**
   * The session to build a prepared command with (see LuxosDriver.armCurtail):
   * the one held now while it is fresh and nobody is renewing it, else
   * undefined (the command then goes the plain way, through `run`).
   */
  usable(): string | undefined {
    return this.sid !== undefined && this.inflight === undefined && this.now() - this.lastUsed < REUSE_WITHIN_MS ? this.sid : undefined;
  }

  /**
   * Runs a privileged command with `<sid>,args`; re-logs on once if the
   * session was invalid. `sent`: the command already on the wire with
   * session `sid` (a prepared one); its reply is checked the same way.
   */
  async run(command: string, args: string, signal?: AbortSignal, sent?: { sid: string; reply: (signal?: AbortSignal) => Promise<CgminerReply> }) {
    for (let attempt = 0; ; attempt++) {
      let sid: string;
      let reused: boolean;
      let reply: CgminerReply;
      if (attempt === 0 && sent) {
        sid = sent.sid;
        reused = true;
        reply = await sent.reply(signal);
      } else {
        ({ sid, reused } = await this.acquire(signal));
        reply = await this.client.raw(command, `${sid},${args}`, signal);
      }
      try {
        checkStatus(reply, `${this.client.where} ${command}`);
        this.lastUsed = this.now();
        return reply;
      } catch (err) {
        // LuxOS does not document its "invalid session" error, and a session can end early
        // (reboot, someone's `kill`): any device error on a reused session gets one fresh logon.
        const retry = reused && attempt === 0 && err instanceof RackpilotError && err.code === 'DEVICE_ERROR';
        if (!retry) throw err;
        if (this.sid === sid) this.sid = undefined;
      }
    }
  }

  /** Logs off when the session is ours (never someone else's). */
  async close(signal?: AbortSignal): Promise<void> {
    if (this.inflight) await this.inflight.catch(() => undefined);
    const sid = this.sid;
    const owned = this.owned;
    this.sid = undefined;
    this.warmFailedAt = undefined;
    if (sid && owned) await this.client.raw('logoff', sid, signal);
  }
}
