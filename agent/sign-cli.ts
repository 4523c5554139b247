/**
 * `rackpilot sign`: signs a command for operators, with the same code
 * central control uses (protocol/signing.ts).
 *
 *   rackpilot sign [FILE|-] --key FILE --key-id ID [--target SITE/RACK] [--ttl MS]
 *     reads a command (JSON object) from FILE or stdin, adds `target`,
 *     `issuedAt`, `expiresAt` (now + ttl, default 60 s), `nonce` and an `id`
 *     when missing, checks it against the v1 schemas and prints it signed,
 *     one line, ready for `mosquitto_pub -s` (stdin) or `-m`.
 *   rackpilot sign --keygen --out FILE [--key-id ID]
 *     writes a new Ed25519 key pair: FILE (PKCS#8 PEM, mode 0600, for
 *     central control) and FILE.pub (SPKI PEM), refusing to overwrite, and
 *     prints the agent's `security.commandKeys` entry.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { commandEnvelopeSchema, commandParamsSchemas, COMMAND_NAMES, type CommandName } from '../protocol/messages.js';
import { generateSigningKeyPair, parsePrivateKey, prepareCommand, signCommand, type JsonObject } from '../protocol/signing.js';
import { formatPath } from './config.js';

export const SIGN_USAGE = `usage:
  rackpilot sign [FILE|-] --key FILE --key-id ID [--target SITE/RACK] [--ttl MS]
      sign a command (JSON from FILE or stdin); prints it signed, one line
  rackpilot sign --keygen --out FILE [--key-id ID]
      new Ed25519 key pair: FILE (private, 0600) and FILE.pub
`;

const MAX_INPUT = 64 * 1024;

export interface SignIo {
  stdin: AsyncIterable<Buffer | string> & { isTTY?: boolean };
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
  /** Wall clock (tests). */
  now?: () => number;
}

const defaultIo = (): SignIo => ({ stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });

/** Runs `rackpilot sign ARGS`; returns the exit code (0 ok, 1 failed, 2 usage). */
export async function runSign(args: string[], io: SignIo = defaultIo()): Promise<number> {
  let values: { key?: string | undefined; 'key-id'?: string | undefined; target?: string | undefined; ttl?: string | undefined; keygen?: boolean | undefined; out?: string | undefined; help?: boolean | undefined };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        key: { type: 'string' },
        'key-id': { type: 'string' },
        target: { type: 'string' },
        ttl: { type: 'string' },
        keygen: { type: 'boolean' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    io.stderr.write(`rackpilot sign: ${(err as Error).message}\n${SIGN_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(SIGN_USAGE);
    return 0;
  }
  const usage = (msg: string): number => {
    io.stderr.write(`rackpilot sign: ${msg}\n${SIGN_USAGE}`);
    return 2;
  };
  const keyId = values['key-id'];
  if (keyId !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(keyId)) return usage(`--key-id: expected 1-64 characters of A-Z a-z 0-9 _ . -, got "${keyId}"`);
  if (values.keygen) {
    if (!values.out) return usage('--keygen needs --out FILE (the private key; the public key goes to FILE.pub)');
    if (positionals.length > 0 || values.key !== undefined) return usage('--keygen takes only --out and --key-id');
    return keygen(values.out, keyId ?? defaultKeyId(values.out), io);
  }
  if (!values.key) return usage('--key FILE (the Ed25519 private key, PEM) is required');
  if (!keyId) return usage('--key-id ID (the id the agents know this key by) is required');
  if (positionals.length > 1) return usage('give at most one command FILE (or - for stdin)');
  if (values.target !== undefined && !/^[A-Za-z0-9_-]{1,64}\/[A-Za-z0-9_-]{1,64}$/.test(values.target)) return usage(`--target: expected SITE/RACK, got "${values.target}"`);
  let ttlMs: number | undefined;
  if (values.ttl !== undefined) {
    ttlMs = Number(values.ttl);
    if (!Number.isInteger(ttlMs) || ttlMs < 1000 || ttlMs > 86_400_000) return usage(`--ttl: expected milliseconds from 1000 to 86400000, got "${values.ttl}"`);
  }
  const fail = (msg: string): number => {
    io.stderr.write(`rackpilot sign: ${msg}\n`);
    return 1;
  };

  let key;
  try {
    key = parsePrivateKey(readFileSync(values.key, 'utf8'));
    if ((statSync(values.key).mode & 0o077) !== 0) io.stderr.write(`rackpilot sign: warning: ${values.key} is readable by group/others; chmod 600 it\n`);
  } catch (err) {
    return fail(`--key ${values.key}: ${(err as Error).message}`);
  }
  const file = positionals[0] ?? '-';
  let text: string;
  try {
    text = file === '-' ? await readStdin(io) : readFileSync(file, 'utf8');
  } catch (err) {
    return fail(`${file === '-' ? 'stdin' : file}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return fail(`${file === '-' ? 'stdin' : file}: not JSON: ${(err as Error).message}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return fail('the command must be a JSON object such as {"id":"c-1","command":"curtail"}');
  const input = raw as JsonObject;
  const target = values.target ?? (typeof input.target === 'string' ? input.target : undefined);
  if (target === undefined) return usage('--target SITE/RACK is required (the rack this command is for), unless the command has "target"');
  if (input.target !== undefined && input.target !== target) return fail(`the command's target ${JSON.stringify(input.target)} differs from --target ${target}`);
  const now = (io.now ?? Date.now)();
  const prepared = prepareCommand(input.id === undefined ? { id: `op-${now.toString(36)}-${randomBytes(3).toString('hex')}`, ...input } : input, {
    target,
    now,
    ...(ttlMs !== undefined ? { ttlMs } : {}),
  });
  const problems = check(prepared);
  if (problems.length > 0) return fail(`not a valid v1 command:\n  ${problems.join('\n  ')}`);
  let signed;
  try {
    signed = signCommand(prepared, key, keyId);
  } catch (err) {
    return fail((err as Error).message);
  }
  io.stdout.write(`${JSON.stringify(signed)}\n`);
  return 0;
}

/** Envelope and params errors, as the agent would report them (INVALID_COMMAND, UNKNOWN_COMMAND, INVALID_PARAMS). */
function check(cmd: JsonObject): string[] {
  const env = commandEnvelopeSchema.safeParse({ ...cmd, sig: undefined });
  if (!env.success) return env.error.issues.map((i) => `${formatPath(i.path)}: ${i.message.replace(/^Invalid input: /, '')}`);
  const name = env.data.command;
  if (!(COMMAND_NAMES as readonly string[]).includes(name)) return [`command: unknown command "${name}" (known: ${COMMAND_NAMES.join(', ')})`];
  const params = commandParamsSchemas[name as CommandName].safeParse(env.data.params ?? {});
  return params.success ? [] : params.error.issues.map((i) => `${formatPath(['params', ...i.path])}: ${i.message.replace(/^Invalid input: /, '')}`);
}

async function readStdin(io: SignIo): Promise<string> {
  if (io.stdin.isTTY) throw new Error('give the command FILE, or pipe the command JSON on stdin');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of io.stdin) {
    const b = typeof c === 'string' ? Buffer.from(c) : c;
    size += b.length;
    if (size > MAX_INPUT) throw new Error(`more than ${MAX_INPUT} bytes (the agent's command size limit)`);
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function defaultKeyId(out: string): string {
  const id = basename(out).replace(/\.(key|pem)$/, '').replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 64);
  return id.length > 0 ? id : 'central';
}

/** Creates `file` exclusively (never overwrites) with `mode`, and sets the mode again in case the umask changed it. */
function writeNew(file: string, text: string, mode: number): void {
  const fd = openSync(file, 'wx', mode);
  try {
    fchmodSync(fd, mode);
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

function keygen(out: string, keyId: string, io: SignIo): number {
  const pair = generateSigningKeyPair();
  try {
    writeNew(out, pair.privateKeyPem, 0o600);
  } catch (err) {
    io.stderr.write(`rackpilot sign: --out ${out}: ${(err as NodeJS.ErrnoException).code === 'EEXIST' ? 'exists already; not overwritten' : (err as Error).message}\n`);
    return 1;
  }
  try {
    writeNew(`${out}.pub`, pair.publicKeyPem, 0o644);
  } catch (err) {
    io.stderr.write(`rackpilot sign: ${out}.pub: ${(err as NodeJS.ErrnoException).code === 'EEXIST' ? 'exists already; not overwritten' : (err as Error).message} (the private key ${out} was written)\n`);
    return 1;
  }
  io.stdout.write(
    `wrote ${out} (private key, mode 0600: keep it with central control) and ${out}.pub\n` +
      `add to each agent's config (or append to commandKeys when rotating):\n` +
      `security:\n  commandKeys:\n    - id: ${keyId}\n      publicKey: ${pair.publicKeyRaw}\n` +
      `sign with: rackpilot sign CMD.json --key ${out} --key-id ${keyId} --target SITE/RACK\n`,
  );
  return 0;
}
