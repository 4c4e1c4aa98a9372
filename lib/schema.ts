/**
 * A small schema language for untrusted input at the edges (HTTP bodies, JWS payloads, files,
 * msgs). Each schema both validates and narrows the type, so code behind the edge works on
 * trusted, typed data. Kept in-house because a validator library would be a seventh runtime
 * dependency, over the Flow Library scorecard's limit.
 */
import { M2MError, ValidationError } from './errors';

export interface Schema<T> {
  parse(value: unknown, path?: string): T;
}

export type Infer<S> = S extends Schema<infer T> ? T : never;

function fail(path: string, expected: string, value: unknown): never {
  const got = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  throw new ValidationError(`${path || 'value'}: expected ${expected}, got ${got}`, { path, expected });
}

export interface StringRules {
  minLength?: number;
  maxLength?: number;
  pattern?: RegExp;
  /** Human name of the pattern for error messages, e.g. "base64url". */
  format?: string;
}

export function string(rules: StringRules = {}): Schema<string> {
  const { minLength = 0, maxLength = 4096, pattern, format } = rules;
  return {
    parse(value, path = '') {
      if (typeof value !== 'string') fail(path, 'a string', value);
      if (value.length < minLength || value.length > maxLength) {
        throw new ValidationError(`${path || 'value'}: length must be ${minLength}..${maxLength}`, { path });
      }
      if (pattern && !pattern.test(value)) {
        throw new ValidationError(`${path || 'value'}: not a valid ${format ?? pattern.source}`, { path });
      }
      return value;
    },
  };
}

export function number(rules: { min?: number; max?: number; integer?: boolean } = {}): Schema<number> {
  const { min = -Infinity, max = Infinity, integer = false } = rules;
  return {
    parse(value, path = '') {
      if (typeof value !== 'number' || !Number.isFinite(value)) fail(path, 'a finite number', value);
      if (integer && !Number.isInteger(value)) fail(path, 'an integer', value);
      if (value < min || value > max) {
        throw new ValidationError(`${path || 'value'}: must be within ${min}..${max}`, { path });
      }
      return value;
    },
  };
}

export function boolean(): Schema<boolean> {
  return {
    parse(value, path = '') {
      if (typeof value !== 'boolean') fail(path, 'a boolean', value);
      return value;
    },
  };
}

export function literal<const T extends string | number | boolean>(...allowed: T[]): Schema<T> {
  return {
    parse(value, path = '') {
      if (!allowed.includes(value as T)) fail(path, `one of ${allowed.map(a => JSON.stringify(a)).join(', ')}`, value);
      return value as T;
    },
  };
}

export function array<T>(item: Schema<T>, rules: { maxItems?: number } = {}): Schema<T[]> {
  const { maxItems = 1000 } = rules;
  return {
    parse(value, path = '') {
      if (!Array.isArray(value)) fail(path, 'an array', value);
      if (value.length > maxItems) throw new ValidationError(`${path || 'value'}: at most ${maxItems} items`, { path });
      return value.map((v, i) => item.parse(v, `${path}[${i}]`));
    },
  };
}

/** A plain JSON object with string keys and values of one schema (e.g. fingerprint components). */
export function record<T>(
  valueSchema: Schema<T>,
  rules: { maxKeys?: number; key?: Schema<string> } = {},
): Schema<Record<string, T>> {
  const { maxKeys = 256, key } = rules;
  return {
    parse(value, path = '') {
      if (!isPlainObject(value)) fail(path, 'an object', value);
      const entries = Object.entries(value);
      if (entries.length > maxKeys) throw new ValidationError(`${path || 'value'}: at most ${maxKeys} keys`, { path });
      const out: Record<string, T> = Object.create(null);
      for (const [k, v] of entries) {
        key?.parse(k, `${path}.${k} (key)`);
        out[k] = valueSchema.parse(v, `${path}.${k}`);
      }
      return out;
    },
  };
}

/** Any JSON value, passed through untouched. Size is bounded by the body limit. */
export function unknownValue(): Schema<unknown> {
  return { parse: value => value };
}

/**
 * Free-form JSON that gets stored and served again (device metadata, vendor data): bounded in
 * nesting, so no later JSON.stringify or recursive walk can overflow the stack, and in size.
 */
export function jsonValue(rules: { maxDepth?: number; maxBytes?: number } = {}): Schema<unknown> {
  const { maxDepth = 8, maxBytes = 16 * 1024 } = rules;
  const depthOf = (value: unknown, depth: number): void => {
    if (depth > maxDepth) throw new ValidationError(`nested deeper than ${maxDepth} levels`);
    if (typeof value === 'object' && value !== null) for (const item of Object.values(value)) depthOf(item, depth + 1);
  };
  return {
    parse(value, path = '') {
      try {
        depthOf(value, 0);
      } catch (err) {
        throw new ValidationError(`${path || 'value'}: ${(err as Error).message}`, { path });
      }
      if (Buffer.byteLength(JSON.stringify(value) ?? '') > maxBytes)
        throw new ValidationError(`${path || 'value'}: over ${maxBytes} bytes`, { path });
      return value;
    },
  };
}

export function nullable<T>(inner: Schema<T>): Schema<T | null> {
  return {
    parse(value, path = '') {
      return value === null ? null : inner.parse(value, path);
    },
  };
}

type Shape = Record<string, Schema<unknown>>;
type OptionalKeys<S extends Shape> = { [K in keyof S]: S[K] extends Optional<unknown> ? K : never }[keyof S];
type RequiredKeys<S extends Shape> = Exclude<keyof S, OptionalKeys<S>>;
export type ObjectOf<S extends Shape> = { [K in RequiredKeys<S>]: Infer<S[K]> } & {
  [K in OptionalKeys<S>]?: Infer<S[K]>;
};

export interface Optional<T> extends Schema<T | undefined> {
  readonly optional: true;
}

export function optional<T>(inner: Schema<T>): Optional<T> {
  return {
    optional: true,
    parse(value, path = '') {
      return value === undefined ? undefined : inner.parse(value, path);
    },
  };
}

/**
 * An object with known keys. Unknown keys are dropped (not rejected) so newer clients can add
 * fields, but nothing unvalidated reaches the caller.
 */
export function object<S extends Shape>(shape: S): Schema<ObjectOf<S>> {
  return {
    parse(value, path = '') {
      if (!isPlainObject(value)) fail(path, 'an object', value);
      const out: Record<string, unknown> = {};
      for (const [key, schema] of Object.entries(shape)) {
        const parsed = schema.parse(value[key], path ? `${path}.${key}` : key);
        if (parsed !== undefined) out[key] = parsed;
      }
      return out as ObjectOf<S>;
    },
  };
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** How deep JSON from the network may nest: far beyond any body or payload of ours. */
export const MAX_JSON_DEPTH = 32;

/**
 * The deepest nesting of `[` and `{` in JSON text, counted outside strings, stopping early once
 * past `limit`. A linear scan: JSON.parse of a megabyte of `[` costs a hundred times more, before
 * any schema could refuse it.
 */
export function jsonDepthExceeds(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/**
 * Whether a value (an object graph, not text) nests deeper than `limit`, found without recursion:
 * JSON.stringify and Node-RED's message copy recurse, and a few thousand levels overflow them.
 * A cycle counts as too deep.
 */
export function valueDepthExceeds(value: unknown, limit: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length) {
    const [current, depth] = stack.pop()!;
    if (typeof current !== 'object' || current === null || ArrayBuffer.isView(current)) continue;
    if (depth >= limit) return true;
    for (const child of Object.values(current)) stack.push([child, depth + 1]);
  }
  return false;
}

/** Parse JSON text, turning syntax errors and nesting past `maxDepth` into a ValidationError. */
export function parseJson(text: string, what = 'body', maxDepth = MAX_JSON_DEPTH): unknown {
  if (jsonDepthExceeds(text, maxDepth))
    throw new M2MError('nested_too_deep', `${what} is nested deeper than ${maxDepth} levels`, 400);
  try {
    return JSON.parse(text);
  } catch {
    throw new ValidationError(`${what} is not valid JSON`);
  }
}

export const patterns = {
  base64url: /^[A-Za-z0-9_-]*$/,
  hex: /^[0-9a-f]*$/,
  /** Device ids: printable, no slashes, so they sit safely in URLs, file names and topics. */
  deviceId: /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/,
} as const;
