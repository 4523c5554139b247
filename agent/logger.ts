import { pino, type Logger } from 'pino';

/**
 * JSON logs, one object per line. Commands log on stderr (stdout stays free
 * for their output); the service (`rackpilot run`) logs on stdout, which
 * journald collects with the level mapped from pino's numeric `level`.
 */
export function createLogger(level: string, name = 'rackpilot', fd: 1 | 2 = 2): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ fd, sync: false }));
}
