/**
 * Runs a real Mosquitto broker on loopback ports for tests; stop/start keep
 * the ports. By default one anonymous plain listener; `config` gives any
 * other configuration (rackpilotSampleConfig: the repository's sample).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { pbkdf2Sync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitForPort } from './ports.js';
import { repoRoot } from './root.js';

export interface MosquittoOptions {
  /** How many listener ports to allocate (default 1); `port` is the first. */
  listeners?: number;
  /** The configuration for the allocated ports; `dir` is the broker's own temp dir. */
  config?: (ports: readonly number[], dir: string) => string;
}

export class Mosquitto {
  private proc: ChildProcess | undefined;
  readonly dir = mkdtempSync(join(tmpdir(), 'rackpilot-mosq-'));
  ports: number[] = [];
  output = '';

  constructor(
    private readonly bin: string,
    private readonly opts: MosquittoOptions = {},
  ) {}

  get port(): number {
    return this.ports[0] ?? 0;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    while (this.ports.length < (this.opts.listeners ?? 1)) this.ports.push(await freePort());
    const conf = join(this.dir, 'mosquitto.conf');
    const text = this.opts.config
      ? this.opts.config(this.ports, this.dir)
      : [`listener ${this.port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'log_type error', 'log_type warning', ''].join('\n');
    // as root, Mosquitto 2 drops to the "mosquitto" user before loading certificates from our 0700 temp dirs
    writeFileSync(conf, process.getuid?.() === 0 ? `${text}\nuser root\n` : text);
    const proc = spawn(this.bin, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    proc.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    const exited = new Promise<never>((_, reject) => proc.once('exit', (code) => reject(new Error(`mosquitto exited (${code}): ${this.output.trim()}`))));
    await Promise.race([Promise.all(this.ports.map((p) => waitForPort(p))), exited]);
    exited.catch(() => undefined);
  }

  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGTERM');
    });
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The sample broker configuration shipped in hil/mosquitto/. */
export const SAMPLE_DIR = 'hil/mosquitto';

export interface SampleFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
  /** Written by writePasswordFile. */
  passwordFile: string;
}

/**
 * hil/mosquitto/mosquitto.conf with only its listener ports (on 127.0.0.1)
 * and /etc/mosquitto paths replaced; its ACL file is used as it is. Throws
 * when a line to replace is missing, so the sample cannot drift from the tests.
 */
export function rackpilotSampleConfig(ports: readonly number[], files: SampleFiles): string {
  const root = repoRoot();
  let text = readFileSync(join(root, SAMPLE_DIR, 'mosquitto.conf'), 'utf8');
  const replace = (from: string, to: string, times: number): void => {
    const n = text.split(from).length - 1;
    if (n !== times) throw new Error(`${SAMPLE_DIR}/mosquitto.conf: expected "${from}" ${times} time(s), found ${n}`);
    text = text.split(from).join(to);
  };
  replace('\nlistener 8883\n', `\nlistener ${ports[0]} 127.0.0.1\n`, 1);
  replace('\nlistener 8884\n', `\nlistener ${ports[1]} 127.0.0.1\n`, 1);
  replace('/etc/mosquitto/rackpilot.acl', join(root, SAMPLE_DIR, 'rackpilot.acl'), 1);
  replace('/etc/mosquitto/rackpilot.passwd', files.passwordFile, 1);
  replace('/etc/mosquitto/ca_certificates/rackpilot-ca.crt', files.caFile, 1);
  replace('/etc/mosquitto/certs/broker.crt', files.certFile, 2);
  replace('/etc/mosquitto/certs/broker.key', files.keyFile, 2);
  return `${text}\n# test run\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n`;
}

/** A Mosquitto 2 password file (PBKDF2-SHA512, as mosquitto_passwd writes it). */
export function writePasswordFile(file: string, users: Record<string, string>): void {
  const lines = Object.entries(users).map(([user, password]) => {
    const salt = randomBytes(12);
    const hash = pbkdf2Sync(password, salt, 101, 64, 'sha512');
    return `${user}:$7$101$${salt.toString('base64')}$${hash.toString('base64')}`;
  });
  writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
}
