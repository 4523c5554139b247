/**
 * A simulated Modbus power meter serving Modbus TCP (on 127.0.0.1, port 0 by
 * default) and Modbus RTU on a serial port (one end of a socat pty pair,
 * opened with serialport; real RTU framing and CRC). Values and scenarios
 * come from MeterModel; faults are switched with `sim.fault`.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { SerialPort } from 'serialport';
import { crcOk, withCrc } from '../../drivers/modbus-meter/crc.js';
import { charMs, frameGapMs, type LineSettings } from '../../drivers/modbus-meter/wire.js';
import { EXCEPTION, exception, MeterModel, type MeterModelOptions } from './modbus-meter-model.js';

export type ModbusSimFault =
  | { kind: 'none' }
  /** Reads requests, never answers. */
  | { kind: 'silent' }
  /** Answers after `delayMs`. */
  | { kind: 'slow'; delayMs: number }
  /** Reads covering `address` get exception `code` (default 2, illegal data address). */
  | { kind: 'exception'; address: number; code?: number }
  /** RTU: the answer's CRC is wrong (TCP has no CRC: answers normally). */
  | { kind: 'badCrc' }
  /** Answers as another unit id. */
  | { kind: 'wrongUnit'; unitId: number }
  /** Random bytes instead of the answer (RTU: the answer's length; TCP: an MBAP frame of noise). */
  | { kind: 'garbage' };

export interface ModbusMeterSimOptions extends MeterModelOptions {
  unitId?: number;
}

export interface RtuAttachOptions extends Partial<LineSettings> {
  /** Delay each answer by the time the request and answer would take on a real line at this baud rate (a pty has no baud rate). Default true. */
  paceWire?: boolean;
  /** The meter's own answer delay (ms), added to every answer. Default 0. */
  turnaroundMs?: number;
}

export class ModbusMeterSim {
  readonly model: MeterModel;
  readonly unitId: number;
  fault: ModbusSimFault = { kind: 'none' };
  /** Requests received (addressed to this unit or not). */
  requests = 0;
  private tcp: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private readonly serials: SerialPort[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(opts: ModbusMeterSimOptions) {
    this.model = new MeterModel(opts);
    this.unitId = opts.unitId ?? 1;
  }

  /** The answer PDU for a request, or null to stay silent. Applies the exception fault. */
  private answer(pdu: Buffer): Buffer | null {
    const f = this.fault;
    if (f.kind === 'silent') return null;
    this.model.exceptionAt = f.kind === 'exception' ? { address: f.address, code: f.code ?? EXCEPTION.illegalAddress } : undefined;
    return this.model.handle(pdu);
  }

  private later(ms: number, fn: () => void): void {
    if (ms <= 0) {
      fn();
      return;
    }
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private faultDelay(): number {
    return this.fault.kind === 'slow' ? this.fault.delayMs : 0;
  }

  // ---- Modbus TCP ----

  async listenTcp(opts: { host?: string; port?: number } = {}): Promise<{ host: string; port: number }> {
    const host = opts.host ?? '127.0.0.1';
    const srv = net.createServer((sock) => this.serveTcp(sock));
    this.tcp = srv;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(opts.port ?? 0, host, () => resolve());
    });
    return { host, port: (srv.address() as net.AddressInfo).port };
  }

  private serveTcp(sock: net.Socket): void {
    this.sockets.add(sock);
    sock.setNoDelay(true);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 7) {
        const len = buf.readUInt16BE(4);
        if (len < 2 || len > 254) {
          sock.destroy(); // not Modbus TCP
          return;
        }
        if (buf.length < 6 + len) return;
        const frame = buf.subarray(0, 6 + len);
        buf = buf.subarray(6 + len);
        this.onTcpRequest(sock, frame);
      }
    });
  }

  private onTcpRequest(sock: net.Socket, frame: Buffer): void {
    this.requests++;
    const tid = frame.readUInt16BE(0);
    const unit = frame[6] ?? 0;
    const pdu = frame.subarray(7);
    let reply: Buffer | null;
    if (unit !== this.unitId && unit !== 0 && unit !== 255) reply = exception(pdu[0] ?? 0, EXCEPTION.gatewayTargetFailed);
    else reply = this.answer(pdu);
    if (!reply) return;
    const f = this.fault;
    const replyUnit = f.kind === 'wrongUnit' ? f.unitId : unit;
    let out: Buffer = Buffer.alloc(7 + reply.length);
    out.writeUInt16BE(tid, 0);
    out.writeUInt16BE(0, 2);
    out.writeUInt16BE(1 + reply.length, 4);
    out[6] = replyUnit;
    reply.copy(out, 7);
    if (f.kind === 'garbage') {
      out = randomBytes(out.length);
      out.writeUInt16BE(tid, 0);
      out.writeUInt16BE(out.length - 6, 4);
    }
    this.later(this.faultDelay(), () => {
      if (!sock.destroyed) sock.write(out);
    });
  }

  // ---- Modbus RTU ----

  /** Serves RTU on a serial device (the sim's end of a pty pair). */
  async attachRtu(path: string, opts: RtuAttachOptions = {}): Promise<void> {
    const line: LineSettings = { baudRate: opts.baudRate ?? 9600, dataBits: opts.dataBits ?? 8, parity: opts.parity ?? 'none', stopBits: opts.stopBits ?? 1 };
    const port = new SerialPort({ path, ...line, autoOpen: false });
    await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
    this.serials.push(port);
    const pace = opts.paceWire ?? true;
    const cms = charMs(line);
    const gap = frameGapMs(line);
    const turnaround = opts.turnaroundMs ?? 0;
    let buf = Buffer.alloc(0);
    port.on('error', () => undefined);
    port.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const n = requestLength(buf);
        if (n === 0 || buf.length < n) return;
        const frame = buf.subarray(0, n);
        buf = buf.subarray(n);
        if (!crcOk(frame)) {
          buf = Buffer.alloc(0); // a slave ignores a frame with a bad CRC, and resynchronises on the next silence
          return;
        }
        this.requests++;
        const unit = frame[0] ?? 0;
        if (unit !== this.unitId) continue; // not for us (0 = broadcast: never answered)
        const reply = this.answer(frame.subarray(1, n - 2));
        if (!reply) continue;
        const f = this.fault;
        const body = Buffer.concat([Buffer.from([f.kind === 'wrongUnit' ? f.unitId : unit]), reply]);
        let out = withCrc(body);
        if (f.kind === 'badCrc') out.writeUInt16LE(out.readUInt16LE(out.length - 2) ^ 0xffff, out.length - 2);
        if (f.kind === 'garbage') out = randomBytes(out.length);
        const wire = pace ? (n + out.length) * cms + 2 * gap : 0;
        this.later(Math.round(wire + turnaround + this.faultDelay()), () => {
          if (port.isOpen) port.write(out);
        });
      }
    });
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of this.sockets) s.destroy();
    const srv = this.tcp;
    this.tcp = undefined;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
    for (const p of this.serials.splice(0)) {
      if (p.isOpen) await new Promise<void>((r) => p.close(() => r()));
    }
  }
}

/** Length of the RTU request frame at the head of `buf`, 0 while unknown. */
function requestLength(buf: Buffer): number {
  if (buf.length < 2) return 0;
  const fc = buf[1] ?? 0;
  if (fc >= 1 && fc <= 6) return 8;
  if (fc === 15 || fc === 16) return buf.length < 7 ? 0 : 9 + (buf[6] ?? 0);
  return 4; // an unknown function: header + CRC, answered with illegal function by the model
}
