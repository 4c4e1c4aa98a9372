/**
 * Didit's webhook signatures (DESIGN.md §4; docs.didit.me "Webhooks"), key = the secret's UTF-8
 * bytes, lowercase hex HMAC-SHA256, checked in the order that trusts the most:
 *   X-Signature         over the raw body as received: every byte signed;
 *   X-Signature-V2      over Python's canonical re-serialisation of the body: every field signed,
 *                       whatever a proxy did to the encoding;
 *   X-Signature-Simple  over "{timestamp}:{session_id}:{status}:{webhook_type}": the envelope only,
 *                       so `decision`, `vendor_data` and `metadata` (and the rest) are unsigned.
 * Freshness is judged on the signed body's `timestamp` field (unix seconds), which a replayer
 * cannot move; never on the X-Timestamp header, which no signature covers. A body without one is
 * refused: nothing would tell an old delivery from a new one.
 */
import * as crypto from 'node:crypto';
import { type JsonValue, diditCanonicalV2, parseLossless, pythonStr } from './python-json';
import { WebhookError, checkTimestamp, sameDigest } from './standard';

export type DiditScheme = 'didit' | 'didit-v2' | 'didit-simple';

/** The fields X-Signature-Simple signs; every other field of a body checked by it alone is untrusted. */
export const SIMPLE_SIGNED_FIELDS = ['timestamp', 'session_id', 'status', 'webhook_type'] as const;

function hmacHex(secret: string, text: Buffer | string): Buffer {
  return crypto.createHmac('sha256', Buffer.from(secret, 'utf8')).update(text).digest();
}

function hexDigest(header: string | undefined): Buffer | undefined {
  return header && /^[0-9a-fA-F]{64}$/.test(header) ? Buffer.from(header, 'hex') : undefined;
}

function matches(secrets: string[], presented: Buffer | undefined, text: () => Buffer | string): boolean {
  if (!presented) return false;
  let signed: Buffer | string;
  try {
    signed = text();
  } catch {
    return false; // a body Python could not have serialised (a lone surrogate) was not signed this way
  }
  return secrets.some(secret => sameDigest(hmacHex(secret, signed), presented));
}

export function hasDiditHeaders(header: (name: string) => string | undefined): boolean {
  return !!(header('x-signature') || header('x-signature-v2') || header('x-signature-simple'));
}

/** The hex HMAC Didit puts in X-Signature: what our verifier adds for receivers built for Didit's scheme. */
export function diditSignature(secret: string, body: Buffer | string): string {
  return hmacHex(secret, body).toString('hex');
}

/** The scheme whose signature matches, trying the one that covers the most first. */
function signedBy(
  secrets: string[],
  body: Buffer,
  fields: Map<string, JsonValue> | undefined,
  header: (name: string) => string | undefined,
): DiditScheme | undefined {
  if (matches(secrets, hexDigest(header('x-signature')), () => body)) return 'didit';
  if (!fields) return undefined;
  if (matches(secrets, hexDigest(header('x-signature-v2')), () => diditCanonicalV2(body.toString('utf8'))))
    return 'didit-v2';
  const envelope = SIMPLE_SIGNED_FIELDS.map(name => pythonStr(fields.get(name)));
  if (
    !envelope.includes(undefined) &&
    matches(secrets, hexDigest(header('x-signature-simple')), () => envelope.join(':'))
  )
    return 'didit-simple';
  return undefined;
}

/**
 * Checks a Didit-style webhook; returns the scheme that verified it. Throws WebhookError: 401
 * when no signature matches or the signed timestamp is stale, 400 when a signed body is not a
 * JSON object.
 */
export function verifyDidit(
  secrets: string[],
  body: Buffer,
  header: (name: string) => string | undefined,
  nowMs: number,
): { scheme: DiditScheme; fields: Map<string, JsonValue> } {
  let fields: Map<string, JsonValue> | undefined;
  try {
    const parsed = parseLossless(body.toString('utf8'));
    if (parsed instanceof Map) fields = parsed;
  } catch {
    // Not JSON: only the raw signature can match, and then the body is refused below.
  }
  const scheme = signedBy(secrets, body, fields, header);
  if (!scheme) throw new WebhookError('bad_signature', 'no X-Signature header matches a configured secret');
  if (!fields) throw new WebhookError('malformed_body', 'body is not a JSON object');

  // A number or a string of digits: the Simple signature renders both alike, so both are signed.
  const signedTimestamp = fields.get('timestamp');
  const timestampText =
    typeof signedTimestamp === 'string'
      ? signedTimestamp
      : signedTimestamp && typeof signedTimestamp === 'object' && 'literal' in signedTimestamp
        ? signedTimestamp.literal
        : undefined;
  if (!timestampText || !/^\d{1,12}$/.test(timestampText))
    throw new WebhookError('stale_timestamp', 'the signed body has no unix-seconds timestamp field');
  checkTimestamp(Number(timestampText), nowMs);
  return { scheme, fields };
}
