/**
 * Python's `json.dumps(shorten_floats(json.loads(text)), sort_keys=True, separators=(",", ":"),
 * ensure_ascii=…)`, byte for byte, from the raw JSON text: the canonical form Didit signs its
 * webhooks over (DESIGN.md §4). JSON.parse + JSON.stringify cannot reproduce it: they lose integers
 * above 2^53, write 1e-07 as 1e-7, and move integer-like keys ("2", "10") to the front of an
 * object. So the text is parsed here with number literals kept as written and objects kept as
 * ordered entries, and printed by Python's rules.
 */
import { ValidationError } from '../errors';

interface NumberLiteral {
  readonly literal: string;
}
export type JsonValue = null | boolean | string | NumberLiteral | JsonValue[] | Map<string, JsonValue>;

const MAX_DEPTH = 64;
const WHITESPACE = /[ \t\n\r]*/y;
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
// biome-ignore lint/suspicious/noControlCharactersInRegex: JSON forbids raw control characters in strings
const STRING = /"(?:[^"\\\u0000-\u001f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/y;

/** Parses JSON keeping each number's literal text; throws ValidationError on anything json.loads refuses. */
export function parseLossless(text: string): JsonValue {
  let at = 0;
  const fail = (): never => {
    throw new ValidationError(`body is not valid JSON (at character ${at})`);
  };
  const skipWhitespace = () => {
    WHITESPACE.lastIndex = at;
    WHITESPACE.exec(text);
    at = WHITESPACE.lastIndex;
  };
  const token = (pattern: RegExp): string => {
    pattern.lastIndex = at;
    const match = pattern.exec(text);
    if (!match) return fail();
    at = pattern.lastIndex;
    return match[0];
  };
  // JSON.parse of one string token decodes its escapes exactly as json.loads does.
  const string = () => JSON.parse(token(STRING)) as string;
  const expect = (char: string) => {
    skipWhitespace();
    if (text[at++] !== char) fail();
  };
  /** Items separated by commas up to `close`; `item` reads one. */
  const items = (close: string, item: () => void) => {
    skipWhitespace();
    if (text[at] === close) {
      at++;
      return;
    }
    for (;;) {
      item();
      skipWhitespace();
      const next = text[at++];
      if (next === close) return;
      if (next !== ',') fail();
    }
  };
  const value = (depth: number): JsonValue => {
    if (depth > MAX_DEPTH) throw new ValidationError(`body nests deeper than ${MAX_DEPTH} levels`);
    skipWhitespace();
    const char = text[at];
    if (char === '{') {
      at++;
      const entries = new Map<string, JsonValue>();
      items('}', () => {
        skipWhitespace();
        const key = string();
        expect(':');
        // A duplicate key: like a Python dict, the last value wins.
        entries.set(key, value(depth + 1));
      });
      return entries;
    }
    if (char === '[') {
      at++;
      const list: JsonValue[] = [];
      items(']', () => list.push(value(depth + 1)));
      return list;
    }
    if (char === '"') return string();
    for (const [word, result] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (text.startsWith(word, at)) {
        at += word.length;
        return result;
      }
    }
    return { literal: token(NUMBER) };
  };
  const result = value(0);
  skipWhitespace();
  if (at !== text.length) fail();
  return result;
}

/** Python's repr() of a finite float: shortest round-trip digits, exponent form outside 1e-4 <= |x| < 1e16. */
export function pythonFloatRepr(x: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'NaN' : x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  // toExponential() without an argument gives the same shortest digits as repr().
  const [mantissa, exponentText] = x.toExponential().split('e');
  const exponent = Number(exponentText);
  const sign = mantissa.startsWith('-') ? '-' : '';
  const digits = mantissa.replace(/[-.]/g, '');
  if (exponent < -4 || exponent >= 16) {
    const significand = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${significand}e${exponent < 0 ? '-' : '+'}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  if (exponent < 0) return `${sign}0.${'0'.repeat(-exponent - 1)}${digits}`;
  return `${sign}${digits.slice(0, exponent + 1).padEnd(exponent + 1, '0')}.${digits.slice(exponent + 1) || '0'}`;
}

/**
 * A literal as Python prints the number json.loads made of it: an int literal exactly as written
 * (Python ints have no size limit), a float by repr(); after shorten_floats a whole float is the
 * exact integer value of the double.
 */
function pythonNumber(literal: string, shortenFloats: boolean): string {
  if (!/[.eE]/.test(literal)) return literal === '-0' ? '0' : literal;
  const x = Number(literal);
  return shortenFloats && Number.isFinite(x) && Number.isInteger(x) ? BigInt(x).toString() : pythonFloatRepr(x);
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function pythonString(text: string, ensureAscii: boolean): string {
  // JSON.stringify escapes exactly what Python does with ensure_ascii=False, for well-formed text.
  const quoted = JSON.stringify(text);
  if (ensureAscii)
    return quoted.replace(/[\u007f-\uffff]/g, char => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
  // Python writes a lone surrogate raw and then fails to encode it as UTF-8: no signature can match.
  if (LONE_SURROGATE.test(text)) throw new ValidationError('body holds a lone UTF-16 surrogate');
  return quoted;
}

/** Python compares str keys by code point; JS's default sort compares UTF-16 code units. */
function byCodePoint(a: string, b: string): number {
  const left = a[Symbol.iterator]();
  const right = b[Symbol.iterator]();
  for (;;) {
    const x = left.next();
    const y = right.next();
    if (x.done || y.done) return (x.done ? 0 : 1) - (y.done ? 0 : 1);
    const difference = x.value.codePointAt(0)! - y.value.codePointAt(0)!;
    if (difference !== 0) return difference;
  }
}

export interface PythonDumpOptions {
  /** Python's default: escape everything outside printable ASCII. Didit's body is sent this way; its V2 form is not. */
  ensureAscii: boolean;
}

export function pythonDumps(value: JsonValue, { ensureAscii }: PythonDumpOptions): string {
  const encode = (item: JsonValue): string => {
    if (item === null) return 'null';
    if (typeof item === 'boolean') return String(item);
    if (typeof item === 'string') return pythonString(item, ensureAscii);
    if (Array.isArray(item)) return `[${item.map(encode).join(',')}]`;
    if (item instanceof Map) {
      const keys = [...item.keys()].sort(byCodePoint);
      return `{${keys.map(key => `${pythonString(key, ensureAscii)}:${encode(item.get(key)!)}`).join(',')}}`;
    }
    return pythonNumber(item.literal, true);
  };
  return encode(value);
}

/**
 * Python's str() of a value json.loads produced (no shorten_floats: Didit's simple signature
 * formats the parsed body's fields as they are); undefined (a missing key) is ''. Containers
 * have no form a sender would sign and give undefined.
 */
export function pythonStr(value: JsonValue | undefined): string | undefined {
  if (value === undefined) return '';
  if (value === null) return 'None';
  if (typeof value === 'boolean') return value ? 'True' : 'False';
  if (typeof value === 'string') return value;
  if (Array.isArray(value) || value instanceof Map) return undefined;
  return pythonNumber(value.literal, false);
}

/** The text Didit's X-Signature-V2 is an HMAC of, from any JSON encoding of the same body. */
export function diditCanonicalV2(body: string): string {
  return pythonDumps(parseLossless(body), { ensureAscii: false });
}
