/**
 * What every PDU driver shares about outlets: outlet names, and the switch-on
 * sequencer that spaces switch-ons on one PDU (inrush current).
 */
import { sleep } from './deadline.js';
import { RackpilotError } from './errors.js';

/** Outlet "3" -> 3; anything that is not an outlet number in 1..count is CONFIG_INVALID naming the device. */
export function parseOutlet(deviceId: string, outlet: string, count: number): number {
  const n = /^[0-9]{1,3}$/.test(outlet) ? Number(outlet) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > count) {
    throw new RackpilotError('CONFIG_INVALID', `${deviceId}: outlet ${JSON.stringify(outlet.slice(0, 32))} does not exist (outlets are "1".."${count}")`, {
      device: deviceId,
    });
  }
  return n;
}

/**
 * Spaces switch-ons: each switch-on write waits its turn, then until
 * `delayMs` after the previous switch-on write was sent. Switch-offs do not
 * go through it. A waiting switch-on gives up with CANCELLED when its
 * signal aborts (the next one in line then proceeds).
 */
export class SwitchOnSequencer {
  private tail: Promise<void> = Promise.resolve();
  private lastOnAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly delayMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  async run<T>(signal: AbortSignal | undefined, send: () => Promise<T>): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    try {
      await prev;
      const wait = this.lastOnAt + this.delayMs - this.now();
      if (wait > 0) await sleep(wait, signal);
      if (signal?.aborted) throw new RackpilotError('CANCELLED', 'switch-on cancelled while waiting for its turn');
      try {
        return await send();
      } finally {
        // spaced from when the write completed: a write that reached the PDU late (queued behind a
        // poll, retried) must not let the next switch-on follow it at once
        this.lastOnAt = this.now();
      }
    } finally {
      release();
    }
  }
}
