/**
 * The MQTT client options every connection of the agent shares (the bridge,
 * the Sparkplug edge node, `rackpilot doctor`): one clean session, no
 * automatic reconnect (agent/reconnect.ts decides), credentials and TLS from
 * the `mqtt` config. Callers add the protocol version, the Will and their
 * own properties.
 */
import type { IClientOptions } from 'mqtt';
import type { MqttConfig } from './config.js';

export interface ClientOptionsInput {
  clientId: string;
  /** The files read from `mqtt.tls` (agent/tls-files.ts); ignored without a `tls` block. */
  tlsFiles: Pick<IClientOptions, 'ca' | 'cert' | 'key'> | undefined;
  /** Default `mqtt.connectTimeoutMs`. */
  connectTimeoutMs?: number;
  /** Default `mqtt.username` / `mqtt.password` (the Sparkplug node may have its own). */
  username?: string | undefined;
  password?: string | undefined;
}

export function baseClientOptions(m: MqttConfig, o: ClientOptionsInput): IClientOptions {
  const username = o.username ?? m.username;
  const password = o.password ?? m.password;
  return {
    clientId: o.clientId,
    clean: true,
    keepalive: m.keepaliveS,
    connectTimeout: o.connectTimeoutMs ?? m.connectTimeoutMs,
    reconnectPeriod: 0,
    queueQoSZero: false,
    // mqtt-packet otherwise precomputes 65 536 two-byte Buffers on the first write (~6 MB of heap, for good)
    writeCache: false,
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(m.tls ? { rejectUnauthorized: m.tls.rejectUnauthorized, ...(o.tlsFiles ?? {}) } : {}),
  };
}
