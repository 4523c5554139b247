/**
 * One Modbus link (a serial line or a TCP connection) through modbus-serial.
 * Requests never overlap (RTU is half duplex; one TCP meter is served one at
 * a time too) and each one has a deadline. Library errors become
 * RackpilotErrors that name the meter, the link and the registers.
 */
import type { Logger } from 'pino';
import { withDeadline } from '../lib/deadline.js';
import { RackpilotError } from '../lib/errors.js';
import { MODBUS_EXCEPTIONS, ModbusRTU, type ModbusSerialError } from '../lib/modbus.js';
import { describeBlock, type ReadBlock } from './maps.js';
import { RtuFramePort } from './rtu-port.js';
import type { ModbusMeterConfig } from './schema.js';

export class ModbusLink {
  private client: ModbusRTU | undefined;
  private rtuPort: RtuFramePort | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  /** "tcp 127.0.0.1:502 unit 1" / "rtu /dev/ttyUSB0 19200 8N1 unit 1" */
  readonly where: string;

  constructor(
    private readonly cfg: ModbusMeterConfig,
    private readonly logger: Logger,
  ) {
    const s = cfg.serial;
    this.where =
      cfg.transport === 'tcp' || !s
        ? `tcp ${cfg.host ?? '?'}:${cfg.port} unit ${cfg.unitId}`
        : `rtu ${s.path} ${s.baudRate} ${s.dataBits}${s.parity[0]?.toUpperCase() ?? 'N'}${s.stopBits} unit ${cfg.unitId}`;
  }

  get connected(): boolean {
    return this.client?.isOpen === true;
  }

  /** Opens the serial port or TCP connection (closing any previous one). */
  async connect(signal?: AbortSignal): Promise<void> {
    await this.close();
    const { cfg } = this;
    const client = cfg.transport === 'rtu' && cfg.serial ? new ModbusRTU((this.rtuPort = new RtuFramePort(cfg.serial.path, cfg.serial))) : new ModbusRTU();
    client.on('error', (err: unknown) => this.logger.debug({ err: String((err as Error)?.message ?? err) }, 'modbus link error'));
    this.client = client;
    try {
      await withDeadline(
        `meter ${cfg.id}: connect (${this.where})`,
        cfg.timeouts.connectMs,
        () =>
          cfg.transport === 'rtu'
            ? new Promise<void>((resolve, reject) => client.open((err?: Error | null) => (err ? reject(err) : resolve())))
            : client.connectTCP(cfg.host ?? '', { port: cfg.port }),
        signal,
      );
    } catch (err) {
      await this.close();
      if (err instanceof RackpilotError) {
        if (err.code === 'DEADLINE_EXCEEDED') throw new RackpilotError('CONNECT_TIMEOUT', `meter ${cfg.id}: no connection to ${this.where} within ${cfg.timeouts.connectMs} ms`, { device: cfg.id });
        throw err;
      }
      const msg = (err as Error)?.message ?? String(err);
      if (cfg.transport === 'rtu') {
        throw new RackpilotError('UNREACHABLE', `meter ${cfg.id}: cannot open serial port ${cfg.serial?.path ?? '?'}: ${msg}; check the path and that the agent's user may open it (group dialout)`, { device: cfg.id });
      }
      throw new RackpilotError('CONNECT_REFUSED', `meter ${cfg.id}: cannot connect to ${this.where}: ${msg}`, { device: cfg.id });
    }
    if (cfg.transport === 'rtu' && cfg.serial?.lowLatency && this.rtuPort) {
      try {
        await this.rtuPort.setLowLatency(true);
      } catch (err) {
        this.logger.warn(
          { err: (err as Error).message, path: cfg.serial.path },
          'serial.lowLatency requested but the tty refused it (not a USB-serial adapter?); for FTDI set /sys/bus/usb-serial/devices/<tty>/latency_timer to 1',
        );
      }
    }
  }

  /** Reads one block; the registers' raw bytes (2 per register). Never runs two requests at once. */
  readBlock(block: ReadBlock, deadlineMs: number, signal?: AbortSignal): Promise<Buffer> {
    const run = this.queue.then(() => this.readNow(block, deadlineMs, signal));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async readNow(block: ReadBlock, deadlineMs: number, signal?: AbortSignal): Promise<Buffer> {
    const { cfg } = this;
    const client = this.client;
    const what = `meter ${cfg.id} (${this.where}): ${describeBlock(block)}`;
    if (!client?.isOpen) throw new RackpilotError('CONNECTION_CLOSED', `${what}: the link is not open`, { device: cfg.id });
    const timeoutMs = Math.max(1, Math.min(cfg.timeouts.readMs, deadlineMs));
    client.setID(cfg.unitId);
    client.setTimeout(timeoutMs);
    try {
      // the library's own timer fires at timeoutMs; the deadline is the safety net
      const res = await withDeadline(
        what,
        timeoutMs + 50,
        () => (block.function === 3 ? client.readHoldingRegisters(block.address, block.count) : client.readInputRegisters(block.address, block.count)),
        signal,
      );
      if (res.buffer.length !== block.count * 2) {
        throw new RackpilotError('MALFORMED_RESPONSE', `${what}: answer holds ${res.buffer.length} bytes, expected ${block.count * 2}`, { device: cfg.id });
      }
      return res.buffer;
    } catch (err) {
      throw mapError(err, what, cfg.id, cfg.unitId, timeoutMs);
    }
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.rtuPort = undefined;
    if (!client) return;
    await new Promise<void>((resolve) => {
      try {
        if (client.isOpen) client.close(() => resolve());
        else resolve();
      } catch {
        resolve();
      }
    });
    // a TCP socket that never connected still needs tearing down
    (client as unknown as { _port?: { _client?: { destroy?: () => void } } })._port?._client?.destroy?.();
  }
}

function mapError(err: unknown, what: string, device: string, unitId: number, timeoutMs: number): RackpilotError {
  if (err instanceof RackpilotError) return err;
  const e = err as ModbusSerialError | undefined;
  const msg = e?.message ?? String(err);
  if (typeof e?.modbusCode === 'number') {
    const name = MODBUS_EXCEPTIONS[e.modbusCode] ?? 'unknown exception';
    const hint = e.modbusCode === 2 ? ': the meter has no such registers; check `meter` / the register map and the address offset (0-based)' : e.modbusCode === 1 ? ': the meter does not support this function code' : '';
    return new RackpilotError('DEVICE_ERROR', `${what}: Modbus exception ${e.modbusCode} (${name})${hint}`, { device, modbusException: e.modbusCode });
  }
  if (e?.errno === 'ETIMEDOUT' || e?.name === 'TransactionTimedOutError') {
    return new RackpilotError('READ_TIMEOUT', `${what}: no answer within ${timeoutMs} ms; check wiring, unitId ${unitId}, baud rate and parity`, { device });
  }
  if (/CRC error/i.test(msg)) {
    return new RackpilotError('MALFORMED_RESPONSE', `${what}: the answer failed its CRC check (line noise, wrong baud rate or parity, or two devices answering)`, { device });
  }
  const addr = /expected address (\d+) got (\d+)/.exec(msg);
  if (addr) {
    return new RackpilotError('MALFORMED_RESPONSE', `${what}: the answer came from unit ${addr[2]}, expected unit ${addr[1]}; check unitId`, { device });
  }
  if (/Data length error|Unexpected data/i.test(msg)) {
    return new RackpilotError('MALFORMED_RESPONSE', `${what}: malformed answer (${msg})`, { device });
  }
  if (e?.name === 'PortNotOpenError') return new RackpilotError('CONNECTION_CLOSED', `${what}: the link closed`, { device });
  return new RackpilotError('DEVICE_ERROR', `${what}: ${msg}`, { device }, { cause: err });
}
