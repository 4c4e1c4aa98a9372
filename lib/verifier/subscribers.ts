/**
 * Webhook subscribers as configured (CLI environment, the node's dialog): a URL and its secret,
 * checked once at start-up so a typo is an error there, not a silent delivery failure later.
 */
import * as crypto from 'node:crypto';
import { M2MError } from '../errors';
import { secretKey } from '../webhooks/standard';

export interface SubscriberConfig {
  url: string;
  /** `whsec_` secret; several separated by spaces during a rotation (every one signs, the first also signs X-Signature). */
  secret: string;
}

export interface Subscriber {
  id: string;
  url: string;
  /** HMAC keys of the Standard Webhooks signatures, one per secret. */
  keys: Buffer[];
  /** The secret Didit-style receivers check X-Signature with (its UTF-8 bytes are the key). */
  diditSecret: string;
}

/** A stable id per URL, so a subscriber keeps its deliveries and status across restarts. */
export function subscriberId(url: string): string {
  return `sub_${crypto.createHash('sha256').update(url).digest('hex').slice(0, 16)}`;
}

function badConfig(message: string): M2MError {
  return new M2MError('bad_config', message, 500);
}

export function toSubscriber(config: SubscriberConfig): Subscriber {
  let url: URL;
  try {
    url = new URL(config.url);
  } catch {
    throw badConfig(`webhook URL ${JSON.stringify(config.url)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw badConfig(`webhook URL ${url.origin} must be http or https`);
  const secrets = (config.secret ?? '').split(/\s+/).filter(Boolean);
  if (!secrets.length) throw badConfig(`webhook ${url.origin}${url.pathname} has no secret`);
  const keys = secrets.map(secret => {
    const key = secretKey(secret);
    // The spec asks for 24 to 64 random bytes; fewer is a password, not a key.
    if (!key || key.length < 24)
      throw badConfig(
        `the secret of webhook ${url.origin}${url.pathname} is not a whsec_ secret of 24-64 bytes (m2m-verifier --new-webhook-secret makes one)`,
      );
    return key;
  });
  return { id: subscriberId(url.href), url: url.href, keys, diditSecret: secrets[0] };
}

/** `[{url, secret}, ...]` from JSON text (the M2M_WEBHOOKS variable). */
export function parseSubscribers(json: string): SubscriberConfig[] {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    throw badConfig('M2M_WEBHOOKS is not JSON: expected [{"url": "...", "secret": "whsec_..."}]');
  }
  if (
    !Array.isArray(value) ||
    !value.every(item => item && typeof item.url === 'string' && typeof item.secret === 'string')
  )
    throw badConfig('M2M_WEBHOOKS must be a JSON array of {"url": "...", "secret": "whsec_..."}');
  return value.map(({ url, secret }) => ({ url, secret }));
}
