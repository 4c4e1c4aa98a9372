/**
 * Standard Webhooks (standardwebhooks.com), symmetric `v1` signatures: HMAC-SHA256 over
 * `{webhook-id}.{webhook-timestamp}.{body}` with the base64-decoded part of a `whsec_` secret,
 * sent as `v1,<base64>`, several space-separated during a secret rotation. Used by the verifier
 * to sign what it sends and by m2m-webhook-in to check what it receives.
 */
import * as crypto from 'node:crypto';
import { M2MError } from '../errors';

/** How far a signed timestamp may be from the receiver's clock, either way (the reference libraries' figure). */
export const TIMESTAMP_TOLERANCE_S = 300;

export const SECRET_PREFIX = 'whsec_';
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;

/** The HMAC key of a `whsec_` secret (the prefix is optional, as in the reference libraries); undefined when it is not base64. */
export function secretKey(secret: string): Buffer | undefined {
  const encoded = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
  if (!encoded || !BASE64.test(encoded)) return undefined;
  return Buffer.from(encoded, 'base64');
}

/** A new secret: 32 random bytes, inside the spec's 24-64. */
export function generateSecret(): string {
  return `${SECRET_PREFIX}${crypto.randomBytes(32).toString('base64')}`;
}

/** The `v1,<base64>` signature of one message. */
export function signature(key: Buffer, id: string, timestamp: number, body: Buffer | string): string {
  return `v1,${crypto.createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest('base64')}`;
}

/** The headers of a message: one signature per key, so receivers holding any of them can check it. */
export function signedHeaders(keys: Buffer[], id: string, timestamp: number, body: Buffer | string) {
  return {
    'webhook-id': id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': keys.map(key => signature(key, id, timestamp, body)).join(' '),
  };
}

export class WebhookError extends M2MError {
  constructor(code: 'missing_headers' | 'bad_signature' | 'stale_timestamp' | 'malformed_body', message: string) {
    super(code, message, code === 'malformed_body' ? 400 : 401);
  }
}

/** Equal without leaking where two digests differ. */
export function sameDigest(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

export function checkTimestamp(timestamp: number, nowMs: number): void {
  if (!Number.isSafeInteger(timestamp) || Math.abs(nowMs / 1000 - timestamp) > TIMESTAMP_TOLERANCE_S)
    throw new WebhookError('stale_timestamp', `signed timestamp is more than ${TIMESTAMP_TOLERANCE_S} s off`);
}

/**
 * Checks the three headers against `keys`; returns the message id. Throws WebhookError
 * (401) when the headers are missing, the timestamp is out of tolerance or no signature matches.
 */
export function verifyStandard(
  keys: Buffer[],
  body: Buffer,
  header: (name: string) => string | undefined,
  nowMs: number,
): { id: string; timestamp: number } {
  const id = header('webhook-id');
  const timestampText = header('webhook-timestamp');
  const signatures = header('webhook-signature');
  if (!id || !timestampText || !signatures)
    throw new WebhookError('missing_headers', 'webhook-id, webhook-timestamp and webhook-signature are required');
  if (!/^\d{1,12}$/.test(timestampText))
    throw new WebhookError('stale_timestamp', 'webhook-timestamp is not unix seconds');
  const timestamp = Number(timestampText);
  checkTimestamp(timestamp, nowMs);
  const presented = signatures
    .split(' ')
    .filter(entry => entry.startsWith('v1,'))
    .map(entry => Buffer.from(entry.slice(3), 'base64'));
  for (const key of keys) {
    const expected = Buffer.from(signature(key, id, timestamp, body).slice(3), 'base64');
    if (presented.some(candidate => sameDigest(candidate, expected))) return { id, timestamp };
  }
  throw new WebhookError('bad_signature', 'no webhook-signature matches a configured secret');
}
