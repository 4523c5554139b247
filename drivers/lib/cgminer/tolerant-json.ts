/**
 * Parses JSON as cgminer-family firmwares actually send it. Repairs, outside
 * string literals only, the shapes seen in the field (shared/reference/asic-miners.md):
 *  - trailing commas `,}` `,]` (btminer)
 *  - objects glued together `}{` (bmminer `stats`)
 *  - a comma right after an opening bracket `[,{` `{,` and a leading `,`
 *  - bare `inf`, `-inf`, `nan` (Avalon) -> null
 *  - raw control characters inside strings -> escaped
 * A truncated buffer is not guessed at: it is reported as truncated.
 */
import { RackpilotError } from '../errors.js';

const BAREWORDS = /^-?(?:inf(?:inity)?|nan)(?![A-Za-z0-9_])/i;

export function parseTolerantJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // fall through to the repair pass
  }
  const repaired = repair(text);
  try {
    return JSON.parse(repaired) as unknown;
  } catch (err) {
    const depth = openDepth(repaired);
    const snippet = text.length > 80 ? `${text.slice(0, 80)}…` : text;
    if (depth > 0 && /^\s*[[{]/.test(text)) {
      throw new RackpilotError(
        'MALFORMED_RESPONSE',
        `${where}: reply is truncated (${text.length} bytes, ${depth} unclosed bracket(s)): ${JSON.stringify(snippet)}`,
        { bytes: text.length },
      );
    }
    throw new RackpilotError(
      'MALFORMED_RESPONSE',
      `${where}: reply is not JSON even after repairs (${(err as Error).message}): ${JSON.stringify(snippet)}`,
      { bytes: text.length },
    );
  }
}

/** One linear pass; `out` holds output pieces, `sig` the index of the last non-whitespace piece. */
function repair(text: string): string {
  const out: string[] = [];
  let sig = -1;
  let inString = false;
  const push = (piece: string): void => {
    out.push(piece);
    sig = out.length - 1;
  };
  const last = (): string | undefined => (sig >= 0 ? out[sig] : undefined);
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (inString) {
      if (ch === '\\') {
        out.push(ch, text[i + 1] ?? '');
        i++;
      } else if (ch === '"') {
        inString = false;
        out.push(ch);
      } else if (ch.charCodeAt(0) < 0x20) {
        out.push(`\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
      } else {
        out.push(ch);
      }
      sig = out.length - 1;
      continue;
    }
    if (ch === ' ' || ch === '\n' || ch === '\r' || ch === '\t') {
      out.push(ch);
      continue;
    }
    if (ch === '"') {
      inString = true;
      push(ch);
      continue;
    }
    if (ch === '}' || ch === ']') {
      // a trailing comma before a closing bracket carries no value
      if (last() === ',') out[sig] = '';
      push(ch);
      continue;
    }
    if (ch === ',') {
      const prev = last();
      // leading comma, `[,` `{,` and doubled commas carry no value: drop them
      if (prev === undefined || prev === '[' || prev === '{' || prev === ',') continue;
      push(ch);
      continue;
    }
    if (ch === '{' && last() === '}') {
      push(',');
      push(ch);
      continue;
    }
    if (ch === '-' || ch === 'i' || ch === 'I' || ch === 'n' || ch === 'N') {
      const m = BAREWORDS.exec(text.slice(i, i + 10));
      if (m) {
        push('null');
        i += m[0].length - 1;
        continue;
      }
    }
    push(ch);
  }
  return out.join('');
}

function openDepth(text: string): number {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === '{' || ch === '[') depth++;
    else if (ch === '}' || ch === ']') depth--;
  }
  return depth + (inString ? 1 : 0);
}
