/**
 * HTTP/1.1 on a bare socket, for prepared requests (PreparedRequest in
 * http.ts): the request encoded once into the bytes Node's http client would
 * send, and the answer parsed with http-parser-js into an HttpExchange.
 *
 * Why not Node's parser: llhttp is reachable only through ClientRequest,
 * whose construction costs tens of microseconds per request, the cost an
 * armed curtail exists to avoid. http-parser-js is the pure-JS replacement
 * for Node's parser binding that websocket-driver (faye) parses with: one
 * file, no dependencies, types included. It is lax in places (a chunk size
 * that is not hex ends the body; its header cap is checked only between
 * chunks), so the checks that matter here are ours: a numeric
 * Content-Length, a header size cap like Node's, and the answer size cap of
 * the exchange. Whatever it lets through still has to pass the drivers' own
 * checks of the body (JSON, status fields).
 */
import http from 'node:http';
import type net from 'node:net';
import { HTTPParser } from 'http-parser-js';
import type { HttpExchange } from './http-exchange.js';

/** Node's default cap on a response's header section (--max-http-header-size). */
const MAX_HEADER_BYTES = 16 * 1024;

/** Characters Node refuses in a request path (ERR_UNESCAPED_CHARACTERS). */
const INVALID_PATH = /[^\u0021-\u00ff]/;

export interface WireRequest {
  method: string;
  path: string;
  /** `host:port` as the Host header carries it. */
  host: string;
  headers: Readonly<Record<string, string>>;
  body: Buffer | undefined;
}

/**
 * The request's bytes, as Node's http client writes them (its headers, then
 * Host, Connection and Content-Length). Throws (TypeError) on a header or
 * path Node would refuse.
 */
export function encodeRequest(r: WireRequest): Buffer {
  if (INVALID_PATH.test(r.path)) throw new TypeError(`request path contains unescaped characters: ${JSON.stringify(r.path)}`);
  let head = `${r.method} ${r.path} HTTP/1.1\r\n`;
  let length = false;
  for (const [k, v] of Object.entries(r.headers)) {
    http.validateHeaderName(k);
    http.validateHeaderValue(k, v);
    if (k.toLowerCase() === 'content-length') length = true;
    head += `${k}: ${v}\r\n`;
  }
  head += `Host: ${r.host}\r\nConnection: keep-alive\r\n`;
  // Node sends Content-Length: 0 on a POST/PUT without a body; some embedded servers answer 411 without it
  if (!length && (r.body !== undefined || r.method === 'POST' || r.method === 'PUT')) head += `Content-Length: ${r.body?.length ?? 0}\r\n`;
  head += '\r\n';
  const bytes = Buffer.from(head, 'latin1');
  return r.body && r.body.length > 0 ? Buffer.concat([bytes, r.body]) : bytes;
}

/** Raw header list -> Node's header object (lower-case names; set-cookie an array; other repeats joined). */
function toHeaders(raw: string[]): http.IncomingHttpHeaders {
  const out: http.IncomingHttpHeaders = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = (raw[i] ?? '').toLowerCase();
    const v = raw[i + 1] ?? '';
    const prev = out[k];
    if (k === 'set-cookie') out[k] = Array.isArray(prev) ? [...prev, v] : [v];
    else out[k] = prev === undefined ? v : `${String(prev)}, ${v}`;
  }
  return out;
}

class BadAnswer extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/**
 * Reads the answer to a request written on `socket` into `x`. Listeners
 * only: the parser is made when the first bytes arrive. `onHead` sees the
 * headers first (keep-alive hints).
 */
export function readAnswer(socket: net.Socket, x: HttpExchange, onHead?: (h: http.IncomingHttpHeaders) => void): void {
  let parser: InstanceType<typeof HTTPParser> | undefined;
  let done = false;
  /** The final answer's headers are in. */
  let headed = false;
  /** An interim 1xx answer is being skipped. */
  let interim = false;
  const makeParser = (): InstanceType<typeof HTTPParser> => {
    const p = new HTTPParser(HTTPParser.RESPONSE);
    p.maxHeaderSize = MAX_HEADER_BYTES;
    p[HTTPParser.kOnHeadersComplete] = (info) => {
      if (info.statusCode >= 100 && info.statusCode < 200) {
        interim = true;
        return;
      }
      // http-parser-js checks its cap only when a chunk ends inside the headers: a whole answer in one chunk passes
      let headerBytes = 0;
      for (const h of info.headers) headerBytes += h.length + 2;
      if (headerBytes > MAX_HEADER_BYTES) throw new BadAnswer('HPE_HEADER_OVERFLOW');
      const headers = toHeaders(info.headers);
      const cl = headers['content-length'];
      if (cl !== undefined && !/^\s*\d+\s*$/.test(cl)) throw new BadAnswer('HPE_INVALID_CONTENT_LENGTH');
      headed = true;
      onHead?.(headers);
      x.head(info.statusCode, headers);
    };
    p[HTTPParser.kOnBody] = (chunk, offset, length) => {
      x.body(chunk.subarray(offset, offset + length));
    };
    p[HTTPParser.kOnMessageComplete] = () => {
      if (interim) {
        interim = false;
        return;
      }
      done = true;
      x.end(true);
    };
    return p;
  };
  const parseError = (err: unknown): void => {
    const code = err instanceof Error ? ((err as Error & { code?: string }).code ?? err.message) : String(err);
    x.malformed(code);
  };
  socket.on('data', (chunk: Buffer) => {
    if (done || x.settled) return;
    parser ??= makeParser();
    try {
      const r = parser.execute(chunk);
      if (r instanceof Error) parseError(r);
    } catch (err) {
      parseError(err);
    }
  });
  socket.on('end', () => {
    if (done || x.settled) return;
    if (parser === undefined || !headed) {
      // closed before a whole head: on a reused socket the keep-alive race (retried), else a hang-up
      x.fail(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
      return;
    }
    // an answer without a length ends with the connection (finish() completes it); any other was cut off
    try {
      parser.finish();
    } catch (err) {
      parseError(err);
      return;
    }
    if (!done) x.end(false);
  });
  socket.on('error', (err: NodeJS.ErrnoException) => {
    if (!done) x.fail(err);
  });
  socket.on('close', () => {
    // an error or a destroy without 'end'
    if (!done && !x.settled) x.fail(Object.assign(new Error('socket closed'), { code: 'ECONNRESET' }));
  });
}
