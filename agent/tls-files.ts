/**
 * Start-up checks of the TLS files named in `mqtt.tls`, before anything
 * connects: each file is readable; the private key is not readable (or
 * writable) by group or others; certificates parse as X.509 (a CA file may
 * be a bundle); the client certificate and key belong together. A problem
 * is a CONFIG_INVALID error naming the config key, the file and the fix.
 * A certificate that expires soon (or is not yet valid) is a warning only:
 * the agent still curtails locally without its broker.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { RackpilotError } from '../drivers/lib/errors.js';
import type { MqttConfig } from './config.js';

/** Certificates expiring within this many days are reported at start-up. */
export const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 86_400_000;

export interface TlsFiles {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export interface TlsFileWarning {
  key: 'caFile' | 'certFile';
  file: string;
  message: string;
}

type FileKey = 'caFile' | 'certFile' | 'keyFile';

function invalid(key: FileKey, file: string, message: string, cause?: unknown): RackpilotError {
  return new RackpilotError('CONFIG_INVALID', `mqtt.tls.${key}: ${message}`, { key, file }, cause === undefined ? undefined : { cause });
}

function read(key: FileKey, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    const hint = code === 'EACCES' ? ': give the agent\'s user read access to it' : '';
    throw invalid(key, file, `cannot read "${file}" (${code})${hint}`, err);
  }
}

/** The key file must be for the agent's user alone (OpenSSH's rule for private keys). */
function checkKeyMode(file: string): void {
  if (process.platform === 'win32') return;
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) === 0) return;
  const octal = `0${mode.toString(8).padStart(3, '0')}`;
  throw invalid('keyFile', file, `"${file}" is accessible by group or others (mode ${octal}); a private key must be readable by the agent's user only: run "chmod 600 ${file}"`);
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function certificates(key: 'caFile' | 'certFile', file: string, data: Buffer): X509Certificate[] {
  const blocks = data.toString('latin1').match(PEM_CERT) ?? [];
  if (blocks.length === 0) {
    throw invalid(key, file, `"${file}" holds no PEM certificate (expected "-----BEGIN CERTIFICATE-----"; a DER file converts with "openssl x509 -inform der -in FILE -out FILE.pem")`);
  }
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      const which = blocks.length > 1 ? ` (certificate ${i + 1} of ${blocks.length})` : '';
      throw invalid(key, file, `"${file}" is not a valid X.509 certificate${which}: ${(err as Error).message}`, err);
    }
  });
}

function privateKey(file: string, data: Buffer): KeyObject {
  if (data.toString('latin1').includes('ENCRYPTED')) {
    throw invalid('keyFile', file, `"${file}" is an encrypted private key and the agent has no passphrase option: store it decrypted with mode 0600 (openssl pkey -in KEY -out KEY.plain)`);
  }
  try {
    return createPrivateKey(data);
  } catch (err) {
    throw invalid('keyFile', file, `"${file}" is not a valid private key (PEM): ${(err as Error).message}`, err);
  }
}

function validity(key: 'caFile' | 'certFile', file: string, certs: X509Certificate[], now: number): TlsFileWarning[] {
  const out: TlsFileWarning[] = [];
  for (const c of certs) {
    const notAfter = Date.parse(c.validTo);
    const notBefore = Date.parse(c.validFrom);
    if (notAfter <= now) out.push({ key, file, message: `certificate "${c.subject.replace(/\n/g, ', ')}" expired on ${new Date(notAfter).toISOString()}: the broker will refuse it; renew it` });
    else if (notAfter - now < EXPIRY_WARNING_DAYS * DAY_MS) out.push({ key, file, message: `certificate "${c.subject.replace(/\n/g, ', ')}" expires on ${new Date(notAfter).toISOString()} (in ${Math.ceil((notAfter - now) / DAY_MS)} day(s)): renew it` });
    if (notBefore > now) out.push({ key, file, message: `certificate "${c.subject.replace(/\n/g, ', ')}" is not valid before ${new Date(notBefore).toISOString()}: check this machine's clock` });
  }
  return out;
}

/**
 * Reads and checks the files of `mqtt.tls`; throws CONFIG_INVALID on the
 * first problem. Returns the contents for the MQTT client, and warnings to log.
 */
export function loadTlsFiles(tls: MqttConfig['tls'], now = Date.now()): { files: TlsFiles; warnings: TlsFileWarning[] } {
  const files: TlsFiles = {};
  const warnings: TlsFileWarning[] = [];
  if (!tls) return { files, warnings };
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    const [set, missing] = tls.certFile === undefined ? ['keyFile', 'certFile'] : ['certFile', 'keyFile'];
    throw new RackpilotError('CONFIG_INVALID', `mqtt.tls.${missing}: required when mqtt.tls.${set} is set (a client certificate needs its private key)`, { key: missing });
  }
  if (tls.caFile !== undefined) {
    files.ca = read('caFile', tls.caFile);
    warnings.push(...validity('caFile', tls.caFile, certificates('caFile', tls.caFile, files.ca), now));
  }
  if (tls.certFile !== undefined && tls.keyFile !== undefined) {
    files.cert = read('certFile', tls.certFile);
    const certs = certificates('certFile', tls.certFile, files.cert);
    warnings.push(...validity('certFile', tls.certFile, certs, now));
    files.key = read('keyFile', tls.keyFile);
    checkKeyMode(tls.keyFile);
    const key = privateKey(tls.keyFile, files.key);
    if (!(certs[0] as X509Certificate).checkPrivateKey(key)) {
      throw invalid('keyFile', tls.keyFile, `"${tls.keyFile}" does not match the certificate in mqtt.tls.certFile "${tls.certFile}"`);
    }
  }
  return { files, warnings };
}
