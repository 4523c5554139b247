/**
 * The one way every driver acts on a device: send the write, note when the
 * device acknowledged it, then poll read-back until the wanted condition
 * holds or the deadline passes (NOT_CONFIRMED naming the last real reading).
 * `ackMs` and `tookMs` are taken on the monotonic high-resolution clock
 * (fractional milliseconds from the call).
 */
import type { ActionOptions, ActionResult, Reading } from '../contract.js';
import { sleep, withDeadline } from './deadline.js';
import { RackpilotError, toRackpilotError } from './errors.js';

export interface ConfirmSpec {
  deviceId: string;
  /** What is being done, for messages: e.g. "curtail (sleep)". */
  what: string;
  /** What confirmation means, for messages: e.g. 'state "curtailed"'. */
  want: string;
  /** Sends the write; resolves when the device acknowledged it. */
  send: (signal: AbortSignal) => Promise<void>;
  read: (opts: { deadlineMs: number; signal: AbortSignal }) => Promise<Reading>;
  confirmed: (r: Reading) => boolean;
  /** Deadline of one read-back. */
  readDeadlineMs: number;
  pollMs: number;
  /** Unused: ackMs and tookMs are taken with performance.now() (kept optional so existing specs still compile; drivers may stop passing it). */
  now?: () => number;
  /**
   * The first send, already on the wire (an armed action fired, see
   * ArmedAction): its answer is awaited instead of a first `send`, and the
   * times count from when it went out. A failed one is retried with `send`.
   */
  inFlight?: InFlightSend;
  /** Error codes retried on send besides the transport failures (for devices whose writes are idempotent whatever the failure, e.g. BUSY, READ_TIMEOUT). */
  retryAlso?: readonly string[];
}

export interface InFlightSend {
  /** performance.now() when it was handed to the OS. */
  sentAt: number;
  /**
   * Resolves when the device acknowledged it (rejects as `send` would), with
   * the performance.now() at which its answer arrived when that is known
   * (the answer may have been in before anyone waited for it).
   */
  wait(signal: AbortSignal): Promise<number | undefined>;
}

export function describeReading(r: Reading | undefined): string {
  if (!r) return 'no read-back succeeded';
  const hash = r.fields.hashrateThs;
  return `last read-back: state ${r.state}, ${r.powerW ?? '?'} W${hash === undefined ? '' : `, ${String(hash)} TH/s`}`;
}

/** Transport failures worth another try while the deadline allows (the writes are idempotent). */
const RETRY_SEND = new Set(['CONNECT_TIMEOUT', 'CONNECT_REFUSED', 'UNREACHABLE', 'CONNECTION_CLOSED', 'MALFORMED_RESPONSE', 'SESSION_BUSY']);

interface SendState {
  attempts: number;
  lastError?: RackpilotError;
}

/** Sends the write; a dropped connection or a garbled answer is retried with backoff until the deadline aborts. */
/** Resolves with when the answer arrived, when the sender knows it (else the caller takes now). */
async function sendWithRetry(spec: ConfirmSpec, signal: AbortSignal, st: SendState): Promise<number | undefined> {
  for (;;) {
    st.attempts++;
    try {
      if (st.attempts === 1 && spec.inFlight) return await spec.inFlight.wait(signal);
      await spec.send(signal);
      return undefined;
    } catch (err) {
      const e = toRackpilotError(err, { device: spec.deviceId });
      if ((!RETRY_SEND.has(e.code) && !spec.retryAlso?.includes(e.code)) || signal.aborted) throw e;
      st.lastError = e;
      await sleep(Math.min(1000, 100 * 2 ** (st.attempts - 1)), signal);
    }
  }
}

export async function actAndConfirm(spec: ConfirmSpec, opts: ActionOptions): Promise<ActionResult> {
  const started = spec.inFlight?.sentAt ?? performance.now();
  let last: Reading | undefined;
  let ackMs: number | undefined;
  const sent: SendState = { attempts: 0 };
  let acked = false;
  const onAck = (): void => {
    if (acked) return;
    acked = true;
    opts.onAck?.();
  };
  try {
    return await withDeadline(
      `${spec.deviceId} ${spec.what}`,
      opts.deadlineMs,
      async (signal) => {
        const answeredAt = await sendWithRetry(spec, signal, sent);
        ackMs = (answeredAt ?? performance.now()) - started;
        onAck();
        if (opts.confirmAfter) await opts.confirmAfter;
        for (;;) {
          const r = await spec.read({ deadlineMs: spec.readDeadlineMs, signal });
          if (r.freshness === 'fresh') {
            // a read cut short by the deadline must not stand in for the last real one
            last = r;
            if (spec.confirmed(r)) return { confirmed: true, ackMs: ackMs ?? 0, tookMs: performance.now() - started, reading: r };
          }
          await sleep(spec.pollMs, signal);
        }
      },
      opts.signal,
    );
  } catch (err) {
    onAck();
    const e = toRackpilotError(err, { device: spec.deviceId });
    if (e.code !== 'DEADLINE_EXCEEDED') throw e;
    if (ackMs === undefined && sent.lastError) {
      // never got through: the transport failure is the cause to report
      throw new RackpilotError(
        sent.lastError.code,
        `${spec.deviceId}: ${spec.what} not acknowledged after ${sent.attempts} attempt(s) within ${opts.deadlineMs} ms; last: ${sent.lastError.message}`,
        { device: spec.deviceId },
      );
    }
    const ack = ackMs === undefined ? 'was not acknowledged' : `acknowledged after ${Math.round(ackMs)} ms`;
    throw new RackpilotError(
      'NOT_CONFIRMED',
      `${spec.deviceId}: ${spec.what} ${ack} but the device did not reach ${spec.want} within ${opts.deadlineMs} ms (${describeReading(last)})`,
      { device: spec.deviceId },
    );
  }
}
