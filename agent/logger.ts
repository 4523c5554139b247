import { pino, type Logger } from 'pino';

/** JSON logs on stderr (stdout stays free for command output). */
export function createLogger(level: string, name = 'rackpilot'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: false }));
}
