/**
 * The broker checks: the TLS files of `mqtt.tls` (agent/tls-files.ts, the
 * same checks the agent runs at start-up) and one MQTT connection with the
 * config's URL and credentials, reconnectPeriod 0 and connectTimeout =
 * --timeout. A failure says which kind: refused, unreachable, timeout,
 * rejected by the broker (the CONNACK reason) or TLS.
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { toRackpilotError } from '../../drivers/lib/errors.js';
import type { MqttConfig } from '../config.js';
import { redactUrl } from '../mqtt-bridge.js';
import { Reconnect } from '../reconnect.js';
import { loadTlsFiles, type TlsFiles } from '../tls-files.js';
import { errnoOf, fail, pass, skip, warn, type CheckResult } from './types.js';
import { baseClientOptions } from '../mqtt-options.js';

/** Result of the TLS files check; `files` go to the connection when usable. */
export interface TlsCheck {
  row: CheckResult;
  files: TlsFiles | undefined;
}

export function checkTlsFiles(cfg: MqttConfig, now = Date.now()): TlsCheck {
  const name = 'broker TLS files';
  if (!cfg.tls) {
    const tlsUrl = /^(mqtts|wss):/.test(cfg.url);
    return { row: skip(name, tlsUrl ? 'no mqtt.tls block: the system CA store verifies the broker' : 'no mqtt.tls block (plain connection)'), files: {} };
  }
  try {
    const { files, warnings } = loadTlsFiles(cfg.tls, now);
    const named = (['caFile', 'certFile', 'keyFile'] as const).filter((k) => cfg.tls?.[k] !== undefined).map((k) => `${k} ${cfg.tls?.[k] ?? ''}`);
    if (warnings.length > 0) return { row: warn(name, warnings.map((w) => `mqtt.tls.${w.key} ${w.file}: ${w.message}`).join('; ')), files };
    const noVerify = cfg.tls.rejectUnauthorized ? '' : '; rejectUnauthorized is false: the broker certificate is NOT verified';
    const row = cfg.tls.rejectUnauthorized ? pass(name, `${named.join(', ') || 'no files'}: readable, valid${noVerify}`) : warn(name, `${named.join(', ') || 'no files'}: readable, valid${noVerify}`);
    return { row, files };
  } catch (err) {
    return { row: fail(name, toRackpilotError(err).message), files: undefined };
  }
}

/** CONNACK reason codes that mean the broker refused our identity or credentials. */
const AUTH_CODES = new Set([4, 5, 134, 135, 138, 140]);
const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|UNABLE_TO_|CERT_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_MISMATCH|ERR_OSSL_)/;

type Attempt = { ok: true; version: 4 | 5 } | { ok: false; err: Error & { code?: string | number } ; timedOut: boolean };

function attempt(url: string, opts: IClientOptions, deadlineMs: number): Promise<Attempt> {
  return new Promise((resolve) => {
    let client: MqttClient | undefined;
    let settled = false;
    const done = (a: Attempt): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client?.removeAllListeners();
      client?.on('error', () => undefined);
      client?.end(true);
      resolve(a);
    };
    // our own deadline too: connectTimeout does not cover every stage in every version of MQTT.js
    const timer = setTimeout(() => done({ ok: false, err: new Error(`no CONNACK within ${deadlineMs} ms`), timedOut: true }), deadlineMs + 250);
    try {
      client = mqtt.connect(url, opts);
    } catch (err) {
      done({ ok: false, err: err instanceof Error ? err : new Error(String(err)), timedOut: false });
      return;
    }
    client.once('connect', () => done({ ok: true, version: opts.protocolVersion === 4 ? 4 : 5 }));
    client.on('error', (err: Error & { code?: string | number }) => done({ ok: false, err, timedOut: err.message === 'connack timeout' }));
    client.once('close', () => done({ ok: false, err: new Error('the broker closed the connection before CONNACK'), timedOut: false }));
  });
}

function describeFailure(a: Extract<Attempt, { ok: false }>, where: string, timeoutMs: number): { detail: string; kind: string } {
  const { err } = a;
  const code = err.code;
  if (a.timedOut) return { kind: 'timeout', detail: `timeout: no CONNACK from ${where} within ${timeoutMs} ms (a firewall dropping packets, or not an MQTT port): check the URL and the network` };
  if (typeof code === 'number') {
    if (AUTH_CODES.has(code)) {
      return { kind: 'auth', detail: `rejected by ${where}: ${err.message.replace(/^Connection refused: /, '')} (CONNACK ${code}): check mqtt.username/mqtt.password, the client certificate, and the broker's ACL for this client` };
    }
    return { kind: 'refused', detail: `refused by ${where}: ${err.message} (CONNACK ${code})` };
  }
  switch (code) {
    case 'ECONNREFUSED':
      return { kind: 'refused', detail: `connection refused by ${where}: is the broker running and listening on that port?` };
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
      return { kind: 'unreachable', detail: `${where} is unreachable (${code}): check the network route to the broker` };
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return { kind: 'unreachable', detail: `cannot resolve the broker's host name (${code}): check mqtt.url and DNS` };
    case 'ECONNRESET':
    case 'EPIPE':
      return { kind: 'refused', detail: `${where} reset the connection (${code}): a TLS port spoken to in plain MQTT (or the reverse), or the broker refused us` };
    case undefined:
    default:
      break;
  }
  if ((typeof code === 'string' && TLS_CODES.test(code)) || /certificate|ssl|tls/i.test(err.message)) {
    return { kind: 'tls', detail: `TLS error with ${where}: ${err.message}${typeof code === 'string' ? ` (${code})` : ''}: check mqtt.tls.caFile (the CA that signed the broker's certificate) and that the URL's host name is in that certificate` };
  }
  const errno = errnoOf(err);
  return { kind: 'error', detail: `cannot connect to ${where}: ${err.message}${errno ? ` (${errno})` : ''}` };
}

/** One connection to the broker; MQTT 5 first when `protocolVersion` is auto, then 3.1.1 when 5 is refused. */
export async function checkBroker(cfg: MqttConfig, tls: TlsFiles | undefined, timeoutMs: number, clientId: string): Promise<CheckResult> {
  const name = 'broker';
  const where = redactUrl(cfg.url);
  if (tls === undefined) return fail(name, `not tried: the TLS files in mqtt.tls are unusable (see "broker TLS files")`, { url: where });
  const base = baseClientOptions(cfg, { clientId, tlsFiles: tls, connectTimeoutMs: timeoutMs });
  const started = Date.now();
  const version: 4 | 5 = cfg.protocolVersion === 4 ? 4 : 5;
  let a = await attempt(cfg.url, { ...base, protocolVersion: version }, timeoutMs);
  let fellBack = false;
  if (!a.ok && cfg.protocolVersion === 'auto' && version === 5 && Reconnect.refusesV5(a.err)) {
    fellBack = true;
    a = await attempt(cfg.url, { ...base, protocolVersion: 4 }, Math.max(500, timeoutMs - (Date.now() - started)));
  }
  if (a.ok) {
    const v = a.version === 5 ? 'MQTT 5' : 'MQTT 3.1.1';
    return pass(name, `CONNACK ok from ${where} (${v}${fellBack ? ', after the broker refused MQTT 5' : ''})`, { url: where, protocolVersion: a.version });
  }
  const f = describeFailure(a, where, timeoutMs);
  return fail(name, f.detail, { url: where, reason: f.kind, ...(a.err.code !== undefined ? { code: a.err.code } : {}) });
}
