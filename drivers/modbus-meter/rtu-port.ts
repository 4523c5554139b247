/**
 * The serial side of Modbus RTU for modbus-serial (`new ModbusRTU(port)`):
 * a SerialPort that hands the library whole answer frames. Unlike the
 * library's buffered port it
 * - discards whatever is in the input buffer before each request, so a late
 *   answer to an earlier, timed-out request is never taken for the next one;
 * - hands over a CRC-valid frame from another unit id, so the library reports
 *   "expected address 1 got 2" instead of a bare timeout;
 * - hands over a frame of the expected length with a bad CRC, so the library
 *   reports a CRC error.
 * modbus-serial still builds requests, checks CRC, unit id, function code and
 * length, and raises exceptions and timeouts.
 */
import { EventEmitter } from 'node:events';
import { SerialPort } from 'serialport';
import { crcOk } from './crc.js';
import type { LineSettings } from './wire.js';

const EXCEPTION_FRAME = 5;

export class RtuFramePort extends EventEmitter {
  /** Set by modbus-serial on open; RTU has no transaction ids, so they stay 1. */
  _transactionIdRead = 1;
  _transactionIdWrite = 1;
  private readonly port: SerialPort;
  private buf: Buffer = Buffer.alloc(0);
  private expect = 0;

  constructor(path: string, line: LineSettings) {
    super();
    this.port = new SerialPort({ path, baudRate: line.baudRate, dataBits: line.dataBits, stopBits: line.stopBits, parity: line.parity, autoOpen: false });
    this.port.on('data', (chunk: Buffer) => this.onData(chunk));
    this.port.on('error', (err: Error) => this.emit('error', err));
    this.port.on('close', () => this.emit('close'));
  }

  get isOpen(): boolean {
    return this.port.isOpen;
  }

  open(cb: (err?: Error | null) => void): void {
    this.port.open(cb);
  }

  close(cb?: (err?: Error | null) => void): void {
    if (!this.port.isOpen) {
      cb?.(null);
      return;
    }
    this.port.close(cb);
  }

  destroy(): void {
    this.close();
  }

  /** Sets the adapter's low-latency flag (FTDI latency timer 1 ms); rejects where the tty has none (a pty). */
  setLowLatency(on: boolean): Promise<void> {
    return new Promise((resolve, reject) => this.port.set({ lowLatency: on } as Parameters<SerialPort['set']>[0], (err) => (err ? reject(err) : resolve())));
  }

  write(data: Buffer): void {
    this.buf = Buffer.alloc(0);
    const fc = data[1] ?? 0;
    // reads (1..4): 3 + byte count + 2; writes (5, 6, 15, 16): 8
    this.expect = fc === 3 || fc === 4 ? 5 + 2 * data.readUInt16BE(4) : fc === 1 || fc === 2 ? 5 + Math.ceil(data.readUInt16BE(4) / 8) : 8;
    this.port.write(data);
  }

  private onData(chunk: Buffer): void {
    if (this.expect === 0) return; // nothing asked: line noise or a late answer
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const b = this.buf;
    if (b.length >= EXCEPTION_FRAME && ((b[1] ?? 0) & 0x80) !== 0 && crcOk(b.subarray(0, EXCEPTION_FRAME))) {
      this.hand(EXCEPTION_FRAME);
    } else if (b.length >= this.expect) {
      this.hand(this.expect);
    }
  }

  private hand(n: number): void {
    const frame = this.buf.subarray(0, n);
    this.buf = Buffer.alloc(0);
    this.expect = 0;
    this.emit('data', frame);
  }
}
