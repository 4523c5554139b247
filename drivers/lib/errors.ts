/**
 * The one error type of rackpilot (CONVENTIONS.md #8): a stable code, a
 * `retriable` flag and context. Messages say what failed, where, and what to do.
 */

/** Stable error codes. They appear in MQTT results and logs: never rename one. */
export const ERROR_CODES = {
  CONNECT_TIMEOUT: { retriable: true },
  CONNECT_REFUSED: { retriable: true },
  UNREACHABLE: { retriable: true },
  READ_TIMEOUT: { retriable: true },
  CONNECTION_CLOSED: { retriable: true },
  RESPONSE_TOO_LARGE: { retriable: false },
  MALFORMED_RESPONSE: { retriable: true },
  DEVICE_ERROR: { retriable: false },
  AUTH_FAILED: { retriable: false },
  SESSION_BUSY: { retriable: true },
  BUSY: { retriable: true },
  NOT_CONFIRMED: { retriable: true },
  UNSUPPORTED: { retriable: false },
  NOT_STARTED: { retriable: false },
  DEADLINE_EXCEEDED: { retriable: true },
  CANCELLED: { retriable: false },
  CONFIG_INVALID: { retriable: false },
  INTERNAL: { retriable: false },
  STATE_WRITE_FAILED: { retriable: true },
  POWER_NOT_CONFIRMED: { retriable: true },
  DEMANDS_ACTIVE: { retriable: false },
  PREEMPTED: { retriable: true },
} as const satisfies Record<string, { retriable: boolean }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export type ErrorContext = Record<string, string | number | boolean | null | undefined>;

export class RackpilotError extends Error {
  override readonly name = 'RackpilotError';
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly context: ErrorContext;

  constructor(code: ErrorCode, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.retriable = ERROR_CODES[code].retriable;
    this.context = context;
  }

  /** The shape used on the wire (`{code, message}`), without stack or context secrets. */
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** Wraps anything thrown into a RackpilotError, keeping one already of that type. */
export function toRackpilotError(err: unknown, context: ErrorContext = {}): RackpilotError {
  if (err instanceof RackpilotError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new RackpilotError('INTERNAL', `unexpected error: ${message}`, context, { cause: err });
}
