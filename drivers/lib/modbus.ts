/**
 * What the Modbus drivers share about modbus-serial: the client class (the
 * library is CommonJS) and the names of Modbus exception codes. How a failure
 * becomes a RackpilotError stays with each driver: a serial meter and a TCP
 * PDU fail in different ways and tell the operator different things.
 */
import modbusSerial from 'modbus-serial';

/** modbus-serial is CommonJS: its `default` is the client class itself. */
export const ModbusRTU = modbusSerial.default;
export type ModbusRTU = InstanceType<typeof ModbusRTU>;

/** Modbus exception codes (Modbus Application Protocol v1.1b3, section 7). */
export const MODBUS_EXCEPTIONS: Readonly<Record<number, string>> = {
  1: 'illegal function',
  2: 'illegal data address',
  3: 'illegal data value',
  4: 'server device failure',
  5: 'acknowledge',
  6: 'server device busy',
  8: 'memory parity error',
  10: 'gateway path unavailable',
  11: 'gateway target device failed to respond',
};

/** The fields a modbus-serial failure may carry (its own errors, socket errors, exception answers). */
export interface ModbusSerialError {
  name?: string;
  message?: string;
  errno?: string;
  code?: string;
  /** Set when the device answered with a Modbus exception. */
  modbusCode?: number;
}
