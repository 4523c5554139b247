/**
 * The systemd notification protocol (sd_notify(3)), for `Type=notify`
 * services: READY=1 once the agent runs, WATCHDOG=1 pings from the event
 * loop (a stuck loop stops them and systemd restarts the service),
 * RELOADING=1 / STOPPING=1 around a reload and a stop, STATUS=... for
 * `systemctl status`.
 *
 * The protocol is one datagram of newline-separated KEY=VALUE assignments
 * sent to the AF_UNIX SOCK_DGRAM socket named by $NOTIFY_SOCKET (a path, or
 * an abstract name when it starts with "@"). Node has no datagram unix
 * sockets, so the two libc calls are bound with koffi (already used for
 * NVML): no libsystemd needed, and the rack controller's Debian ships libc.
 *
 * Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op. A notifier
 * never throws: a failed send is logged once and the agent runs on.
 */
import koffi from 'koffi';
import type { Logger } from 'pino';

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const MSG_DONTWAIT = 0x40;
const SOL_SOCKET = 1;
const SO_SNDTIMEO = 21;
/** READY=1, RELOADING=1 and STOPPING=1 may wait this long for room in systemd's queue (sd_notify blocks too); pings never wait. */
const SEND_TIMEOUT_S = 1n;
/** sizeof(struct sockaddr_un.sun_path) on Linux. */
const SUN_PATH_MAX = 108;

interface Libc {
  socket: (domain: number, type: number, protocol: number) => number;
  sendto: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number;
  close: (fd: number) => number;
  setsockopt: (fd: number, level: number, name: number, value: Buffer, len: number) => number;
}

let libc: Libc | undefined;
function loadLibc(): Libc {
  if (!libc) {
    const lib = koffi.load('libc.so.6');
    libc = {
      socket: lib.func('int socket(int domain, int type, int protocol)') as Libc['socket'],
      sendto: lib.func('intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)') as Libc['sendto'],
      close: lib.func('int close(int fd)') as Libc['close'],
      setsockopt: lib.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)') as Libc['setsockopt'],
    };
  }
  return libc;
}

/** struct sockaddr_un for $NOTIFY_SOCKET: a filesystem path, or "@name" for the abstract namespace. */
export function sockaddrUn(socketName: string): { addr: Buffer; len: number } {
  const abstract = socketName.startsWith('@');
  const name = Buffer.from(abstract ? socketName.slice(1) : socketName, 'utf8');
  const pathLen = abstract ? 1 + name.length : name.length + 1; // abstract: leading NUL; path: trailing NUL
  if (name.length === 0 || pathLen > SUN_PATH_MAX) throw new Error(`NOTIFY_SOCKET "${socketName}" is not a usable unix socket name (1 to ${SUN_PATH_MAX - 1} bytes)`);
  const addr = Buffer.alloc(2 + SUN_PATH_MAX);
  addr.writeUInt16LE(AF_UNIX, 0); // sa_family_t in host order: every Linux target rackpilot runs on is little-endian
  name.copy(addr, abstract ? 3 : 2);
  return { addr, len: 2 + pathLen };
}

export interface NotifierOptions {
  env?: NodeJS.ProcessEnv;
  log?: Logger;
}

export class SystemdNotifier {
  /** True when systemd (or a test) gave us a notification socket. */
  readonly enabled: boolean;
  /** The watchdog period systemd expects pings within ($WATCHDOG_USEC), or null when the watchdog is off. */
  readonly watchdogMs: number | null;
  private fd = -1;
  private target: { addr: Buffer; len: number } | undefined;
  private failed = false;
  private readonly socketName: string;
  private timer: NodeJS.Timeout | undefined;
  private readonly ping = Buffer.from('WATCHDOG=1');
  /** Datagrams sent (tests, /healthz). */
  sent = 0;

  constructor(private readonly o: NotifierOptions = {}) {
    const env = o.env ?? process.env;
    const socketName = env.NOTIFY_SOCKET;
    this.socketName = socketName ?? '';
    this.enabled = socketName !== undefined && socketName !== '';
    const usec = Number(env.WATCHDOG_USEC);
    const forUs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === process.pid;
    this.watchdogMs = this.enabled && forUs && Number.isFinite(usec) && usec > 0 ? usec / 1000 : null;
    if (!this.enabled || socketName === undefined) return;
    if (socketName.startsWith('vsock:')) {
      this.warn(new Error('NOTIFY_SOCKET over vsock is not supported'), socketName);
      return;
    }
    try {
      this.target = sockaddrUn(socketName);
      const c = loadLibc();
      this.fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (this.fd < 0) throw new Error(`socket(AF_UNIX, SOCK_DGRAM) failed, errno ${koffi.errno()}`);
      // struct timeval as two little-endian 64-bit fields; a 32-bit kernel reads the first 8 bytes, the same value
      const tv = Buffer.alloc(16);
      tv.writeBigInt64LE(SEND_TIMEOUT_S, 0);
      c.setsockopt(this.fd, SOL_SOCKET, SO_SNDTIMEO, tv, tv.length);
    } catch (err) {
      this.warn(err, socketName);
    }
  }

  /** Sends one notification, e.g. notify('READY=1', 'STATUS=running'). Returns whether it was sent. */
  notify(...assignments: string[]): boolean {
    return this.send(Buffer.from(assignments.join('\n')));
  }

  ready(status?: string): boolean {
    return status === undefined ? this.notify('READY=1') : this.notify('READY=1', `STATUS=${status}`);
  }

  status(text: string): boolean {
    return this.notify(`STATUS=${text.replace(/\n/g, ' ')}`);
  }

  reloading(): boolean {
    return this.notify('RELOADING=1', `MONOTONIC_USEC=${monotonicUsec()}`);
  }

  stopping(): boolean {
    return this.notify('STOPPING=1');
  }

  /**
   * Pings the watchdog at half its period from the event loop: when the loop
   * is blocked the timer cannot run, the pings stop and systemd restarts us.
   */
  startWatchdog(): void {
    if (this.watchdogMs === null || this.timer) return;
    this.send(this.ping, MSG_DONTWAIT);
    this.timer = setInterval(() => this.send(this.ping, MSG_DONTWAIT), Math.max(1, Math.floor(this.watchdogMs / 2)));
  }

  stopWatchdog(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  close(): void {
    this.stopWatchdog();
    if (this.fd >= 0) loadLibc().close(this.fd);
    this.fd = -1;
  }

  /** State changes wait (at most SEND_TIMEOUT_S) for room in the queue; watchdog pings pass MSG_DONTWAIT and never block the loop. */
  private send(msg: Buffer, flags = 0): boolean {
    if (this.fd < 0 || !this.target) return false;
    const n = loadLibc().sendto(this.fd, msg, msg.length, MSG_NOSIGNAL | flags, this.target.addr, this.target.len);
    if (n < 0) {
      this.warn(new Error(`sendto failed, errno ${koffi.errno()}`), this.socketName);
      return false;
    }
    this.failed = false;
    this.sent++;
    return true;
  }

  /** Logs a failure once per run of failures (a ping every few seconds must not flood the journal). */
  private warn(err: unknown, socketName: string): void {
    if (this.failed) return;
    this.failed = true;
    this.o.log?.warn({ notifySocket: socketName, error: err instanceof Error ? err.message : String(err) }, 'systemd notification failed; the service manager may consider the agent hung');
  }
}

/** CLOCK_MONOTONIC in µs, which systemd 253+ wants alongside RELOADING=1. */
function monotonicUsec(): string {
  return (process.hrtime.bigint() / 1000n).toString();
}
