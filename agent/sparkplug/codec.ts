/**
 * The Sparkplug B payload codec: the `sparkplug-payload` package (Eclipse
 * Tahu's encoder, generated from the official sparkplug_b.proto) behind a
 * small typed surface. Tests decode with an independent decoder
 * (protobufjs + hil/testing/sparkplug_b.proto).
 */
import { get } from 'sparkplug-payload';

const codec = get('spBv1.0');
if (!codec) throw new Error('sparkplug-payload has no spBv1.0 codec');
const { encodePayload, decodePayload } = codec;

/** The datatypes this edge node uses (Sparkplug B enum names). */
export type SparkplugType = 'Boolean' | 'Int32' | 'Int64' | 'Double' | 'String';

export type MetricValue = boolean | number | string | null;

export interface OutMetric {
  /** Births only; data messages carry the alias alone. */
  name?: string;
  alias?: number;
  type: SparkplugType;
  value: MetricValue;
  timestamp?: number;
}

export interface OutPayload {
  timestamp: number;
  /** Absent in NDEATH only. */
  seq?: number;
  metrics: OutMetric[];
}

export function encode(p: OutPayload): Buffer {
  const bytes = encodePayload({
    timestamp: p.timestamp,
    ...(p.seq !== undefined ? { seq: p.seq } : {}),
    metrics: p.metrics.map((m) => ({
      ...(m.name !== undefined ? { name: m.name } : {}),
      ...(m.alias !== undefined ? { alias: m.alias } : {}),
      ...(m.timestamp !== undefined ? { timestamp: m.timestamp } : {}),
      type: m.type,
      value: m.value,
    })),
  });
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A metric written by a host (NCMD/DCMD): by name or by alias. */
export interface InMetric {
  name: string | undefined;
  alias: number | undefined;
  value: unknown;
}

/** Decodes a command payload; throws on bytes that are not a Sparkplug B payload. */
export function decodeCommand(bytes: Buffer): { timestamp: number | undefined; metrics: InMetric[] } {
  const p = decodePayload(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  return {
    timestamp: toNumber(p.timestamp),
    metrics: (p.metrics ?? []).map((m) => {
      const v: unknown = m.value;
      return {
        name: typeof m.name === 'string' ? m.name : undefined,
        alias: toNumber(m.alias),
        value: typeof v === 'object' && v !== null ? toNumber(v) : v,
      };
    }),
  };
}

/** protobufjs gives uint64 as number or Long ({low, high, toNumber}). */
function toNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (v && typeof v === 'object' && typeof (v as { toNumber?: unknown }).toNumber === 'function') return (v as { toNumber(): number }).toNumber();
  return undefined;
}
