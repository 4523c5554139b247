/**
 * A throw-away PKI for TLS tests, made with the openssl CLI in a temp dir:
 * a CA, a broker certificate for 127.0.0.1/localhost, and client
 * certificates whose CN is the MQTT identity. Keys are EC P-256 (fast to
 * make) and written with mode 0600.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './temp-dir.js';

export interface CertFiles {
  cert: string;
  key: string;
}

export class TestPki {
  readonly dir = tempDir('rackpilot-pki-');
  private n = 0;

  private constructor(
    private readonly openssl: string,
    /** The CA certificate (what clients and the broker trust). */
    readonly caFile: string,
    private readonly caKey: string,
  ) {}

  /** Makes a new self-signed CA (`name` is its CN and file prefix). */
  static create(openssl: string, name = 'rackpilot-test-ca'): TestPki {
    const dir = tempDir('rackpilot-ca-');
    const cnf = join(dir, 'ca.cnf');
    writeFileSync(cnf, distinguished(name, ['basicConstraints = critical, CA:true', 'keyUsage = critical, keyCertSign, cRLSign', 'subjectKeyIdentifier = hash']));
    const caFile = join(dir, `${name}.crt`);
    const caKey = join(dir, `${name}.key`);
    run(openssl, ['req', '-x509', '-new', ...EC, '-nodes', '-keyout', caKey, '-out', caFile, '-days', '3650', '-config', cnf, '-extensions', 'ext']);
    chmodSync(caKey, 0o600);
    return new TestPki(openssl, caFile, caKey);
  }

  /** The broker's certificate, valid for 127.0.0.1 and localhost. */
  server(cn = 'localhost'): CertFiles {
    return this.issue(cn, ['extendedKeyUsage = serverAuth', 'subjectAltName = IP:127.0.0.1, DNS:localhost']);
  }

  /** A client certificate; Mosquitto's `use_identity_as_username` makes `cn` the MQTT username. */
  client(cn: string, opts: { days?: number } = {}): CertFiles {
    return this.issue(cn, ['extendedKeyUsage = clientAuth'], opts.days);
  }

  private issue(cn: string, ext: string[], days = 365): CertFiles {
    const base = join(this.dir, `c${++this.n}`);
    const cnf = `${base}.cnf`;
    writeFileSync(cnf, distinguished(cn, ['basicConstraints = critical, CA:false', 'keyUsage = critical, digitalSignature, keyEncipherment', ...ext]));
    const key = `${base}.key`;
    const cert = `${base}.crt`;
    run(this.openssl, ['req', '-new', ...EC, '-nodes', '-keyout', key, '-out', `${base}.csr`, '-config', cnf]);
    chmodSync(key, 0o600);
    run(this.openssl, ['x509', '-req', '-in', `${base}.csr`, '-CA', this.caFile, '-CAkey', this.caKey, '-set_serial', String(Date.now() * 100 + this.n), '-days', String(days), '-extfile', cnf, '-extensions', 'ext', '-out', cert]);
    return { cert, key };
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
    rmSync(join(this.caFile, '..'), { recursive: true, force: true });
  }
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];

/** An openssl config with the subject given as data (a CN may hold "/", which `-subj` would split). */
function distinguished(cn: string, ext: string[]): string {
  if (!/^[A-Za-z0-9_./-]+$/.test(cn)) throw new Error(`unsupported CN ${JSON.stringify(cn)} for this test PKI`);
  return ['[req]', 'prompt = no', 'distinguished_name = dn', '[dn]', `CN = ${cn}`, '[ext]', ...ext, ''].join('\n');
}

function run(openssl: string, args: string[]): void {
  try {
    execFileSync(openssl, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`openssl ${args[0] ?? ''} failed: ${stderr.trim() || String(err)}`, { cause: err });
  }
}
