/**
 * Detection: which firmware family runs on a host, from the registry's
 * `fingerprint` data (drivers/contract.ts Fingerprint). Three kinds of probe
 * run in parallel, each under its own deadline, and every socket is closed
 * when detect() settles:
 *   api   the cgminer-family API (default port 4028): `version` and
 *         `devdetails`, one connection each, whole reply searched for
 *         `fingerprint.api` strings (case-insensitive);
 *   web   `GET /` on the HTTP port (default 80): WWW-Authenticate realm,
 *         body substrings, redirect Location (`fingerprint.web`); when the
 *         API port answers HTTP instead of the cgminer API (e.g. ePIC's HTTP
 *         API on 4028), `GET /` is also tried there;
 *   port  each family port (`fingerprint.ports`, e.g. 4433, 50051):
 *         connect-only.
 * Conflicts are resolved by specificity: a firmware marker (LUXminer, VNISH,
 * BOSminer...) beats a hardware or generic marker (Antminer, bmminer...),
 * which in turn beats an open port alone. See pickWinner().
 */
import net from 'node:net';
import type { DriverDefinition } from './contract.js';
import { DRIVERS } from './registry.js';
import { cgminerExchange } from './lib/cgminer/client.js';
import { parseTolerantJson } from './lib/cgminer/tolerant-json.js';
import { withDeadline } from './lib/deadline.js';
import { lpjsonExchange } from './lib/lpjson.js';
import { RackpilotError, toRackpilotError } from './lib/errors.js';
import { HttpClient } from './lib/http.js';

export const DEFAULT_API_PORT = 4028;
export const DEFAULT_HTTP_PORT = 80;

/**
 * Markers that name hardware or a firmware that other families derive from:
 * Vnish and LuxOS run on Antminers (their replies say "Antminer"), and
 * bmminer/cgminer strings survive in derived firmwares. A match on one of
 * these only wins when no family matched a firmware-specific marker.
 */
export const GENERIC_MARKERS: readonly string[] = ['antminer', 'bitmain', 'bmminer', 'cgminer', 'whatsminer', 'microbt', 'avalon', 'avalonminer', 'canaan'];

export interface DetectOptions {
  host: string;
  apiPort?: number;
  httpPort?: number;
  /** Family ports as seen from here: canonical port -> actual port (tests, port forwarding). */
  portMap?: Readonly<Record<number, number>>;
  /** Deadline of each probe, connect included (default 2000 ms). */
  probeTimeoutMs?: number;
  /** TCP connect deadline of each probe (default min(1000, probeTimeoutMs)). */
  connectTimeoutMs?: number;
  /** Largest reply read from any probe (default 256 KiB). */
  maxResponseBytes?: number;
  signal?: AbortSignal;
  /** The families to consider (default: the registry). */
  drivers?: readonly DriverDefinition[];
}

export type ProbeKind = 'api' | 'web' | 'port';

/** What one probe saw, for the report (and for "unknown" answers). */
export interface ProbeReport {
  probe: string;
  kind: ProbeKind;
  port: number;
  /** Whether something answered (for `port`: accepted the connection). */
  answered: boolean;
  /** Short human summary: what came back, or the error code and message. */
  saw: string;
}

export type EvidenceStrength = 'firmware' | 'generic' | 'port';

export interface Evidence {
  driver: string;
  probe: string;
  strength: EvidenceStrength;
  /** e.g. `api version: "LUXminer"`, `web realm: "antMiner Configuration"`. */
  detail: string;
}

export interface Detection {
  /** The family's driver id, or null when no family matched ("unknown"). */
  driver: string | null;
  model: string | null;
  firmware: string | null;
  /** 'high': a firmware marker (or an uncontested generic one); 'medium': generic markers other families also matched; 'low': only an open family port. */
  confidence: 'high' | 'medium' | 'low' | null;
  host: string;
  apiPort: number;
  httpPort: number;
  evidence: Evidence[];
  /** Other families that also matched, best first (ambiguity is visible). */
  alternatives: string[];
  probes: ProbeReport[];
}

interface ApiAnswer {
  text: string;
  json: unknown;
}

interface WebAnswer {
  status: number;
  realm: string;
  location: string;
  body: string;
  title: string;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: string };

async function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  try {
    return { ok: true, value: await p };
  } catch (err) {
    const e = toRackpilotError(err);
    return { ok: false, error: `${e.code}: ${e.message}` };
  }
}

function clip(s: string, n = 120): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > n ? `${t.slice(0, n)}…` : t;
}

/** Runs a probe under its deadline; a cancel caused by our own deadline (not the caller's) reads as DEADLINE_EXCEEDED. */
async function bounded<T>(what: string, ms: number, work: (signal: AbortSignal) => Promise<T>, parent?: AbortSignal): Promise<T> {
  try {
    return await withDeadline(what, ms, work, parent);
  } catch (err) {
    const e = toRackpilotError(err);
    if (e.code === 'CANCELLED' && !parent?.aborted) throw new RackpilotError('DEADLINE_EXCEEDED', `${what}: no answer within ${ms} ms`, { deadlineMs: ms });
    throw e;
  }
}

async function apiProbe(host: string, port: number, command: string, o: Required<Pick<DetectOptions, 'probeTimeoutMs' | 'connectTimeoutMs' | 'maxResponseBytes'>>, parent?: AbortSignal): Promise<ApiAnswer> {
  const text = await bounded(
    `${host}:${port} ${command}`,
    o.probeTimeoutMs,
    (signal) =>
      cgminerExchange(
        { host, port, connectTimeoutMs: o.connectTimeoutMs, readTimeoutMs: o.probeTimeoutMs, maxResponseBytes: o.maxResponseBytes },
        JSON.stringify({ command }),
        signal,
      ),
    parent,
  );
  let json: unknown;
  try {
    json = text.startsWith('{') ? parseTolerantJson(text, `${host}:${port} ${command}`) : undefined;
  } catch {
    json = undefined;
  }
  return { text, json };
}

async function webProbe(host: string, port: number, o: Required<Pick<DetectOptions, 'probeTimeoutMs' | 'connectTimeoutMs' | 'maxResponseBytes'>>, parent?: AbortSignal): Promise<WebAnswer> {
  const client = new HttpClient({ host, port, connectTimeoutMs: o.connectTimeoutMs, readTimeoutMs: o.probeTimeoutMs, maxResponseBytes: o.maxResponseBytes, maxSockets: 1 });
  try {
    const res = await bounded(
      `GET http://${host}:${port}/`,
      o.probeTimeoutMs,
      (signal) => client.request({ path: '/', headers: { accept: 'text/html,application/json;q=0.9,*/*;q=0.5', connection: 'close' }, signal }),
      parent,
    );
    const auth = res.headers['www-authenticate'];
    const authText = Array.isArray(auth) ? auth.join(', ') : (auth ?? '');
    const realm = /realm="([^"]*)"/i.exec(authText)?.[1] ?? '';
    const body = res.text();
    const title = /<title[^>]*>([^<]*)<\/title>/i.exec(body)?.[1]?.trim() ?? '';
    return { status: res.status, realm, location: String(res.headers.location ?? ''), body, title };
  } finally {
    client.close();
  }
}

/** One request in length-prefixed JSON frames; the reply as compact JSON text. */
function framedProbe(
  host: string,
  port: number,
  request: Record<string, unknown>,
  o: Required<Pick<DetectOptions, 'probeTimeoutMs' | 'connectTimeoutMs' | 'maxResponseBytes'>>,
  parent?: AbortSignal,
): Promise<string> {
  return bounded(
    `${host}:${port} framed`,
    o.probeTimeoutMs,
    async (signal) =>
      JSON.stringify(
        await lpjsonExchange({ host, port, connectTimeoutMs: o.connectTimeoutMs, readTimeoutMs: o.probeTimeoutMs, maxFrameBytes: o.maxResponseBytes }, request, signal),
      ),
    parent,
  );
}

function connectProbe(host: string, port: number, timeoutMs: number, parent?: AbortSignal): Promise<void> {
  return bounded(
    `${host}:${port} connect`,
    timeoutMs,
    (signal) =>
      new Promise<void>((resolve, reject) => {
        const s = net.createConnection({ host, port });
        const done = (err?: Error): void => {
          signal.removeEventListener('abort', onAbort);
          s.destroy();
          if (err) reject(err);
          else resolve();
        };
        const onAbort = (): void => done(new RackpilotError('CANCELLED', `${host}:${port}: cancelled`));
        signal.addEventListener('abort', onAbort, { once: true });
        s.once('connect', () => done());
        s.once('error', (e: NodeJS.ErrnoException) =>
          done(
            e.code === 'ECONNREFUSED'
              ? new RackpilotError('CONNECT_REFUSED', `${host}:${port}: connection refused`)
              : new RackpilotError('UNREACHABLE', `${host}:${port}: cannot connect (${e.code ?? e.message})`),
          ),
        );
      }),
    parent,
  );
}

const lower = (s: string): string => s.toLowerCase();

/** The registry's drivers, typed as plain definitions. */
function registered(): readonly DriverDefinition[] {
  return DRIVERS;
}

function isGeneric(marker: string): boolean {
  return GENERIC_MARKERS.includes(lower(marker));
}

/** Collects the evidence each family's fingerprint finds in what the probes saw. */
function match(drivers: readonly DriverDefinition[], api: { probe: string; text: string }[], web: { probe: string; answer: WebAnswer }[], openPorts: Map<number, string>): Evidence[] {
  const out: Evidence[] = [];
  for (const d of drivers) {
    const fp = d.fingerprint;
    if (!fp) continue;
    for (const m of fp.api ?? []) {
      const hit = api.find((a) => lower(a.text).includes(lower(m)));
      if (hit) out.push({ driver: d.id, probe: hit.probe, strength: isGeneric(m) ? 'generic' : 'firmware', detail: `${hit.probe}: "${m}"` });
    }
    for (const w of web) {
      const a = w.answer;
      if (fp.web?.realm && a.realm && lower(a.realm).includes(lower(fp.web.realm))) {
        out.push({ driver: d.id, probe: w.probe, strength: isGeneric(fp.web.realm) ? 'generic' : 'firmware', detail: `${w.probe} realm: "${a.realm}"` });
      }
      for (const m of fp.web?.bodyIncludes ?? []) {
        if (lower(a.body).includes(lower(m))) out.push({ driver: d.id, probe: w.probe, strength: isGeneric(m) ? 'generic' : 'firmware', detail: `${w.probe} body: "${m}"` });
      }
      for (const m of fp.web?.redirectIncludes ?? []) {
        if (a.location && lower(a.location).includes(lower(m))) {
          out.push({ driver: d.id, probe: w.probe, strength: isGeneric(m) ? 'generic' : 'firmware', detail: `${w.probe} redirect: "${a.location}"` });
        }
      }
    }
    for (const p of fp.ports ?? []) {
      const probe = openPorts.get(p);
      if (probe) out.push({ driver: d.id, probe, strength: 'port', detail: `${probe}: port ${p} accepts connections` });
    }
  }
  return out;
}

/**
 * Ranks families by (firmware markers, generic markers, open ports), each
 * counted once per distinct detail. A family with any firmware marker beats
 * one with only generic markers; ports only break ties or identify a host
 * nothing else answered on.
 */
function rank(evidence: Evidence[]): { driver: string; score: [number, number, number] }[] {
  const by = new Map<string, [number, number, number]>();
  for (const e of evidence) {
    const s = by.get(e.driver) ?? [0, 0, 0];
    s[e.strength === 'firmware' ? 0 : e.strength === 'generic' ? 1 : 2] += 1;
    by.set(e.driver, s);
  }
  return [...by.entries()]
    .map(([driver, score]) => ({ driver, score }))
    .sort((a, b) => b.score[0] - a.score[0] || b.score[1] - a.score[1] || b.score[2] - a.score[2]);
}

function firstItem(json: unknown, section: string): Record<string, unknown> | undefined {
  if (!json || typeof json !== 'object') return undefined;
  const v = (json as Record<string, unknown>)[section];
  const first: unknown = Array.isArray(v) ? v[0] : v;
  return first && typeof first === 'object' ? (first as Record<string, unknown>) : undefined;
}

function pick(obj: Record<string, unknown> | undefined, keys: readonly string[]): string | undefined {
  if (!obj) return undefined;
  for (const k of keys) {
    const key = Object.keys(obj).find((x) => lower(x) === lower(k));
    const v = key === undefined ? undefined : obj[key];
    if ((typeof v === 'string' && v.trim() !== '') || typeof v === 'number') return String(v).trim();
  }
  return undefined;
}

const MODEL_KEYS = ['Type', 'Model', 'PROD', 'minertype', 'miner_type', 'product', 'model_name'];
/** VERSION keys named after the firmware: reported as "<key> <value>". */
const FIRMWARE_NAMES = ['BOSminer', 'BOSminer+', 'BOSer', 'LUXminer', 'BTMiner', 'BMMiner', 'CGMiner'];
/** Plain version keys: reported as the value. */
const FIRMWARE_KEYS = ['fw_ver', 'firmware_version', 'Firmware', 'FW', 'CompileTime'];

/** Model and firmware version strings from the API answers (and the web page title as a last resort). */
function extract(version: ApiAnswer | undefined, devdetails: ApiAnswer | undefined, markers: readonly string[], web: WebAnswer | undefined): { model: string | null; firmware: string | null } {
  const v = firstItem(version?.json, 'VERSION');
  const vj = version?.json as Record<string, unknown> | undefined;
  // cgminer: STATUS is a section; Whatsminer API v2: STATUS is "S" and the status keys sit at the top level
  const st = vj && typeof vj.STATUS === 'string' ? vj : firstItem(vj, 'STATUS');
  // Whatsminer's API v2 puts its version object in STATUS.Msg
  const msg = st && typeof st.Msg === 'object' && st.Msg !== null ? (st.Msg as Record<string, unknown>) : undefined;
  const dd = firstItem(devdetails?.json, 'DEVDETAILS');
  const model = pick(v, MODEL_KEYS) ?? pick(msg, MODEL_KEYS) ?? pick(dd, ['Model', 'Name']) ?? null;
  let firmware: string | null = null;
  for (const m of markers) {
    const val = pick(v, [m]) ?? pick(msg, [m]);
    if (val) {
      const key = Object.keys(v ?? msg ?? {}).find((k) => lower(k) === lower(m)) ?? m;
      firmware = `${key} ${val}`;
      break;
    }
  }
  if (firmware === null) {
    const named = FIRMWARE_NAMES.find((k) => pick(v, [k]) !== undefined);
    firmware = named ? `${Object.keys(v ?? {}).find((k) => lower(k) === lower(named)) ?? named} ${pick(v, [named]) ?? ''}` : (pick(v, FIRMWARE_KEYS) ?? pick(msg, FIRMWARE_KEYS) ?? null);
  }
  if (firmware === null && typeof st?.Description === 'string' && st.Description.trim() !== '') firmware = st.Description.trim();
  return { model: model ?? (web?.title ? web.title : null), firmware };
}

/** Identifies the firmware family on `host`. Never throws for network trouble: an unreachable host is "unknown". */
export async function detect(opts: DetectOptions): Promise<Detection> {
  const drivers = opts.drivers ?? registered();
  const host = opts.host;
  const apiPort = opts.apiPort ?? DEFAULT_API_PORT;
  const httpPort = opts.httpPort ?? DEFAULT_HTTP_PORT;
  const probeTimeoutMs = opts.probeTimeoutMs ?? 2000;
  const o = { probeTimeoutMs, connectTimeoutMs: opts.connectTimeoutMs ?? Math.min(1000, probeTimeoutMs), maxResponseBytes: opts.maxResponseBytes ?? 256 * 1024 };
  const familyPorts = [...new Set(drivers.flatMap((d) => d.fingerprint?.ports ?? []))].filter((p) => p !== apiPort && p !== httpPort);
  const actual = (p: number): number => opts.portMap?.[p] ?? p;

  const framed = drivers.flatMap((d) => (d.fingerprint?.framed ? [{ driver: d.id, ...d.fingerprint.framed }] : []));
  const [[version, devdetails, web, ...ports], framedAnswers] = await Promise.all([
    Promise.all([
      settle(apiProbe(host, apiPort, 'version', o, opts.signal)),
      settle(apiProbe(host, apiPort, 'devdetails', o, opts.signal)),
      settle(webProbe(host, httpPort, o, opts.signal)),
      ...familyPorts.map((p) => settle(connectProbe(host, actual(p), probeTimeoutMs, opts.signal))),
    ]),
    Promise.all(framed.map((f) => settle(framedProbe(host, actual(f.port), f.request, o, opts.signal)))),
  ]);
  const probes: ProbeReport[] = [];
  const apiTexts: { probe: string; text: string }[] = [];
  for (const [name, r] of [['api version', version], ['api devdetails', devdetails]] as const) {
    if (r.ok) {
      apiTexts.push({ probe: name, text: r.value.text });
      probes.push({ probe: name, kind: 'api', port: apiPort, answered: true, saw: r.value.json ? clip(r.value.text) : `not the cgminer API: ${JSON.stringify(clip(r.value.text, 60))}` });
    } else probes.push({ probe: name, kind: 'api', port: apiPort, answered: false, saw: r.error });
  }
  const webs: { probe: string; answer: WebAnswer }[] = [];
  const report = (name: string, port: number, r: Settled<WebAnswer>): void => {
    if (r.ok) {
      webs.push({ probe: name, answer: r.value });
      const a = r.value;
      probes.push({
        probe: name,
        kind: 'web',
        port,
        answered: true,
        saw: `HTTP ${a.status}${a.realm ? ` realm "${a.realm}"` : ''}${a.location ? ` -> ${a.location}` : ''}${a.title ? ` title "${clip(a.title, 60)}"` : ''}`,
      });
    } else probes.push({ probe: name, kind: 'web', port, answered: false, saw: r.error });
  };
  report('web', httpPort, web);
  // an HTTP server on the API port (ePIC's API is HTTP on 4028): look at its page too
  if (version.ok && /^HTTP\/\d/.test(version.value.text) && apiPort !== httpPort) {
    report(`web:${apiPort}`, apiPort, await settle(webProbe(host, apiPort, o, opts.signal)));
  }
  const open = new Map<number, string>();
  familyPorts.forEach((p, i) => {
    const r = ports[i];
    const name = `port ${p}${actual(p) !== p ? ` (at ${actual(p)})` : ''}`;
    if (r?.ok) open.set(p, name);
    probes.push({ probe: name, kind: 'port', port: actual(p), answered: r?.ok ?? false, saw: r?.ok ? 'accepts connections' : (r?.error ?? 'not probed') });
  });

  const evidence = match(drivers, apiTexts, webs, open);
  framed.forEach((f, i) => {
    const r = framedAnswers[i];
    const name = `framed ${f.port}${actual(f.port) !== f.port ? ` (at ${actual(f.port)})` : ''}`;
    probes.push({ probe: name, kind: 'port', port: actual(f.port), answered: r?.ok ?? false, saw: r?.ok ? clip(r.value) : (r?.error ?? 'not probed') });
    const hit = r?.ok ? f.expect.find((m) => lower(r.value).includes(lower(m))) : undefined;
    if (hit) evidence.push({ driver: f.driver, probe: name, strength: 'firmware', detail: `${name}: ${JSON.stringify(hit)}` });
  });
  const ranked = rank(evidence);
  const best = ranked[0];
  const winner = best ? drivers.find((d) => d.id === best.driver) : undefined;
  const { model, firmware } = extract(
    version.ok ? version.value : undefined,
    devdetails.ok ? devdetails.value : undefined,
    winner?.fingerprint?.api ?? [],
    web.ok ? web.value : webs[0]?.answer,
  );
  return {
    driver: best?.driver ?? null,
    model,
    firmware,
    // a generic marker no other family contests (stock Antminer's "BMMiner") is as good as a firmware one
    confidence: best ? (best.score[0] > 0 || (best.score[1] > 0 && ranked.length === 1) ? 'high' : best.score[1] > 0 ? 'medium' : 'low') : null,
    host,
    apiPort,
    httpPort,
    evidence: best ? evidence.filter((e) => e.driver === best.driver) : [],
    alternatives: ranked.slice(1).map((r) => r.driver),
    probes,
  };
}

/** One line per probe, for "unknown" answers and verbose output. */
export function describeProbes(d: Detection): string[] {
  return d.probes.map((p) => `${p.probe} (port ${p.port}): ${p.saw}`);
}

/**
 * The cheap firmware check used to notice a firmware change (one `version`
 * request on the API port): the same model/firmware strings detect() reports.
 * Undefined when the API does not answer.
 */
export async function apiFirmware(opts: Pick<DetectOptions, 'host' | 'apiPort' | 'probeTimeoutMs' | 'signal' | 'drivers'>): Promise<{ model: string | null; firmware: string | null } | undefined> {
  const drivers = opts.drivers ?? registered();
  const t = opts.probeTimeoutMs ?? 2000;
  const r = await settle(apiProbe(opts.host, opts.apiPort ?? DEFAULT_API_PORT, 'version', { probeTimeoutMs: t, connectTimeoutMs: Math.min(1000, t), maxResponseBytes: 256 * 1024 }, opts.signal));
  if (!r.ok || !r.value.json) return undefined;
  const text = lower(r.value.text);
  const markers = drivers.flatMap((d) => d.fingerprint?.api ?? []).filter((m) => text.includes(lower(m)));
  return extract(r.value, undefined, markers, undefined);
}
