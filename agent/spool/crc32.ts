/**
 * CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320: the one of zlib, gzip
 * and PNG; check value crc32("123456789") = 0xCBF43926).
 *
 * node:zlib's native `crc32` is used where the runtime has it (Node 20.15+,
 * 22.2+); older Node 20 releases get the classic byte-wise table-driven
 * version (Sarwate; 1 KB table built once), which computes the same value
 * (tested against zlib's), so files written by either are read by either.
 * CRC-32 rather than a cryptographic hash: it detects every burst error up to
 * 32 bits and every odd number of flipped bits, which is what torn writes and
 * bit rot produce, at memory speed; nobody forges a local buffer file.
 */
import * as zlib from 'node:zlib';

const TABLE = /* @__PURE__ */ (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** The table-driven version (exported for the test that checks it against zlib's). */
export function crc32Table(data: Uint8Array, initial = 0): number {
  let c = (initial ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) c = (TABLE[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

type Crc32 = (data: Uint8Array, initial?: number) => number;
const native = (zlib as { crc32?: Crc32 }).crc32;

/** CRC-32 of `data`, continuing from `initial` (the CRC of what came before). */
export const crc32: Crc32 = typeof native === 'function' ? native : crc32Table;
