/**
 * One Modbus TCP connection (modbus-serial) for a PDU: connected lazily,
 * requests serialised, every request under a deadline, failures mapped to
 * RackpilotError codes; a connection that failed is dropped and reopened by
 * the next request.
 */
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError } from '../lib/errors.js';
import { MODBUS_EXCEPTIONS, ModbusRTU, type ModbusSerialError } from '../lib/modbus.js';
import type { Table } from './registers.js';

export interface ModbusTarget {
  deviceId: string;
  host: string;
  port: number;
  unitId: number;
  connectMs: number;
  readMs: number;
}

export class ModbusPduClient {
  private client: ModbusRTU | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly t: ModbusTarget) {}

  private get where(): string {
    return `${this.t.host}:${this.t.port} unit ${this.t.unitId}`;
  }

  private async connected(signal: AbortSignal): Promise<ModbusRTU> {
    if (this.client?.isOpen) return this.client;
    this.drop();
    const c = new ModbusRTU();
    try {
      await withDeadline(
        `${this.t.deviceId}: Modbus TCP connect to ${this.t.host}:${this.t.port}`,
        this.t.connectMs,
        () => c.connectTCP(this.t.host, { port: this.t.port, timeout: this.t.connectMs }),
        signal,
      );
    } catch (err) {
      try {
        c.close(() => undefined);
      } catch {
        // never opened
      }
      throw this.mapError(err, 'connect', true);
    }
    c.setID(this.t.unitId);
    c.setTimeout(this.t.readMs);
    this.client = c;
    return c;
  }

  private drop(): void {
    const c = this.client;
    this.client = undefined;
    if (!c) return;
    try {
      c.close(() => undefined);
    } catch {
      // already closed
    }
  }

  close(): void {
    this.closed = true;
    this.drop();
  }

  open(): void {
    this.closed = false;
  }

  /** Runs one request on the connection, after the ones before it, under readMs. */
  private run<T>(what: string, signal: AbortSignal | undefined, fn: (c: ModbusRTU) => Promise<T>): Promise<T> {
    const next = this.queue.then(async () => {
      if (this.closed) throw new RackpilotError('NOT_STARTED', `${this.t.deviceId}: Modbus client stopped`, { device: this.t.deviceId });
      return withDeadline(
        `${this.t.deviceId}: Modbus ${what} at ${this.where}`,
        this.t.connectMs + this.t.readMs + 50,
        async (s) => {
          const c = await this.connected(s);
          try {
            return await fn(c);
          } catch (err) {
            const e = this.mapError(err, what, false);
            // a timed-out or broken connection may deliver a late answer to the next request: start afresh
            if (e.code !== 'DEVICE_ERROR') this.drop();
            throw e;
          }
        },
        signal,
      ).catch((err: unknown) => {
        if (err instanceof RackpilotError && err.code === 'DEADLINE_EXCEEDED') this.drop();
        throw err;
      });
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  readBits(table: 'coil' | 'discrete', start: number, count: number, signal?: AbortSignal): Promise<boolean[]> {
    return this.run(`read ${count} ${table}(s) at ${start}`, signal, async (c) => {
      const r = table === 'coil' ? await c.readCoils(start, count) : await c.readDiscreteInputs(start, count);
      return r.data.slice(0, count);
    });
  }

  readRegisters(table: Exclude<Table, 'coil' | 'discrete'>, start: number, count: number, signal?: AbortSignal): Promise<number[]> {
    return this.run(`read ${count} ${table} register(s) at ${start}`, signal, async (c) => {
      const r = table === 'holding' ? await c.readHoldingRegisters(start, count) : await c.readInputRegisters(start, count);
      return r.data;
    });
  }

  writeCoil(address: number, value: boolean, signal?: AbortSignal): Promise<void> {
    return this.run(`write coil ${address} = ${value}`, signal, async (c) => {
      await c.writeCoil(address, value);
    });
  }

  writeRegister(address: number, value: number, signal?: AbortSignal): Promise<void> {
    return this.run(`write register ${address} = ${value}`, signal, async (c) => {
      await c.writeRegister(address, value);
    });
  }

  private mapError(err: unknown, what: string, connecting: boolean): RackpilotError {
    if (err instanceof RackpilotError) return err;
    const e = err as ModbusSerialError;
    const ctx = { device: this.t.deviceId, host: this.t.host, port: this.t.port };
    if (typeof e.modbusCode === 'number') {
      const name = MODBUS_EXCEPTIONS[e.modbusCode] ?? `exception ${e.modbusCode}`;
      return new RackpilotError('DEVICE_ERROR', `${this.t.deviceId}: Modbus ${what} at ${this.where} answered exception ${e.modbusCode} (${name})`, { ...ctx, modbusCode: e.modbusCode }, { cause: err });
    }
    const code = e.errno ?? e.code;
    if (code === 'ETIMEDOUT') {
      return new RackpilotError(
        connecting ? 'CONNECT_TIMEOUT' : 'READ_TIMEOUT',
        `${this.t.deviceId}: no Modbus answer from ${this.where} to ${what} within ${connecting ? this.t.connectMs : this.t.readMs} ms (wrong unit id, or the PDU is busy or down)`,
        ctx,
        { cause: err },
      );
    }
    if (code === 'ECONNREFUSED') return new RackpilotError('CONNECT_REFUSED', `${this.t.deviceId}: Modbus TCP connection to ${this.t.host}:${this.t.port} refused (is Modbus/TCP enabled on the PDU?)`, ctx, { cause: err });
    if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return new RackpilotError('UNREACHABLE', `${this.t.deviceId}: ${this.t.host} unreachable`, ctx, { cause: err });
    return new RackpilotError('CONNECTION_CLOSED', `${this.t.deviceId}: Modbus ${what} at ${this.where} failed: ${e.message}`, ctx, { cause: err });
  }
}
