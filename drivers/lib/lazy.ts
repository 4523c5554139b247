/**
 * A driver's heavy transport (a library such as net-snmp, modbus-serial,
 * serialport or grpc-js, and the client built on it) loaded on first use,
 * not when the registry is imported: an agent pays, in memory and start-up
 * time, only for the protocols its configured devices speak. Creating a
 * driver still does no I/O; `start()` (or the first call before it) loads.
 */
import { RackpilotError } from './errors.js';

export class LazyTransport<T> {
  private value: T | undefined;
  private pending: Promise<T> | undefined;

  /** `what` names the module in errors, e.g. "net-snmp client". */
  constructor(
    private readonly what: string,
    private readonly load: () => Promise<T>,
  ) {}

  /** The transport once loaded (no await on the hot path), else undefined. */
  get loaded(): T | undefined {
    return this.value;
  }

  /** Loads once; a failed load is retried by the next call. */
  get(): Promise<T> {
    if (this.value !== undefined) return Promise.resolve(this.value);
    this.pending ??= this.load().then(
      (v) => {
        this.value = v;
        return v;
      },
      (err: unknown) => {
        this.pending = undefined;
        throw err instanceof RackpilotError
          ? err
          : new RackpilotError(
              'INTERNAL',
              `cannot load the ${this.what} (${err instanceof Error ? err.message : String(err)}); reinstall rackpilot's dependencies`,
              {},
              { cause: err },
            );
      },
    );
    return this.pending;
  }
}
