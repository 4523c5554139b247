/**
 * A strict parser of the Prometheus text exposition format (0.0.4) for tests:
 * every line must be a HELP/TYPE comment or a sample of a declared family,
 * with valid names, well-escaped label values and a numeric value; anything
 * else throws, naming the line.
 */

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PromFamily {
  name: string;
  type: string;
  help: string;
}

export interface PromText {
  families: Map<string, PromFamily>;
  samples: PromSample[];
  /** The value of the one sample with this name whose labels include `labels`; undefined when none; throws when several. */
  value(name: string, labels?: Record<string, string>): number | undefined;
  /** Every sample with this name whose labels include `labels`. */
  find(name: string, labels?: Record<string, string>): PromSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
/** Sample-name suffixes that belong to a histogram or summary family. */
const SUFFIXES = ['_bucket', '_sum', '_count'];

/** Like Prometheus (Go's strconv.ParseFloat): Inf, +Inf, -Inf and NaN in any case (prom-client writes "Nan"). */
function parseValue(text: string, line: number): number {
  const inf = /^([+-]?)inf(inity)?$/i.exec(text);
  if (inf) return inf[1] === '-' ? -Infinity : Infinity;
  if (/^nan$/i.test(text)) return NaN;
  const v = Number(text);
  if (text === '' || Number.isNaN(v)) throw new Error(`line ${line}: "${text}" is not a number`);
  return v;
}

function parseLabels(text: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`line ${line}: label without "="`);
    const name = text.slice(i, eq).trim();
    if (!LABEL.test(name)) throw new Error(`line ${line}: bad label name "${name}"`);
    if (text[eq + 1] !== '"') throw new Error(`line ${line}: label ${name} value is not quoted`);
    let j = eq + 2;
    let value = '';
    for (;;) {
      const c = text[j];
      if (c === undefined) throw new Error(`line ${line}: unterminated value of label ${name}`);
      if (c === '"') break;
      if (c === '\\') {
        const n = text[j + 1];
        if (n === 'n') value += '\n';
        else if (n === '\\' || n === '"') value += n;
        else throw new Error(`line ${line}: bad escape in label ${name}`);
        j += 2;
        continue;
      }
      value += c;
      j++;
    }
    if (name in labels) throw new Error(`line ${line}: label ${name} twice`);
    labels[name] = value;
    i = j + 1;
    if (text[i] === ',') i++;
    else if (i < text.length) throw new Error(`line ${line}: expected "," after label ${name}`);
  }
  return labels;
}

function includes(labels: Record<string, string>, want: Record<string, string>): boolean {
  return Object.entries(want).every(([k, v]) => labels[k] === v);
}

export function parsePromText(text: string): PromText {
  const families = new Map<string, PromFamily>();
  const samples: PromSample[] = [];
  text.split('\n').forEach((raw, idx) => {
    const line = idx + 1;
    if (raw.trim() === '') return;
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(raw);
      if (!m) return; // other comments are allowed
      const [, kind, name = '', rest = ''] = m;
      if (!NAME.test(name)) throw new Error(`line ${line}: bad metric name "${name}"`);
      const f = families.get(name) ?? { name, type: 'untyped', help: '' };
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`line ${line}: unknown type "${rest}"`);
        f.type = rest;
      } else f.help = rest;
      families.set(name, f);
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(raw);
    if (!m) throw new Error(`line ${line}: not a sample: ${raw}`);
    const [, name = '', labelText = '', value = ''] = m;
    const family = families.get(name) ?? families.get(SUFFIXES.reduce((n, s) => (n.endsWith(s) ? n.slice(0, -s.length) : n), name));
    if (!family) throw new Error(`line ${line}: sample ${name} has no # TYPE`);
    samples.push({ name, labels: parseLabels(labelText, line), value: parseValue(value, line) });
  });
  const find = (name: string, labels: Record<string, string> = {}): PromSample[] => samples.filter((s) => s.name === name && includes(s.labels, labels));
  return {
    families,
    samples,
    find,
    value: (name, labels) => {
      const found = find(name, labels);
      if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels ?? {})}`);
      return found[0]?.value;
    },
  };
}
