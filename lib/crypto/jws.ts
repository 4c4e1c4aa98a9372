/**
 * Compact JWS (RFC 7515) with EdDSA (RFC 8037) and ES256 (RFC 7518 §3.4) only.
 *
 * base64url is Node's own (native, several times jose's pure-JS codec); signatures go through
 * ./ed25519 and ./p256 so that signing and verifying use cached node:crypto keys synchronously.
 * Any other `alg` is refused before a key is looked at (`none`, HMAC-with-public-key), and a
 * signature verifies only under a key of its own algorithm: the header never picks the check.
 */
import { SignatureError } from '../errors';
import { MAX_JSON_DEPTH, isPlainObject, jsonDepthExceeds } from '../schema';
import { ALGS, type Alg, type PublicKey, type Signer } from './keys';

export const JWS_TYPES = {
  registration: 'm2m-registration+jwt',
  attestation: 'm2m-attestation+jwt',
  token: 'at+jwt',
  peerMessage: 'm2m-message+jwt',
  keyChange: 'm2m-key-change+jwt',
} as const;

export interface JwsHeader {
  alg: Alg;
  typ: string;
  kid?: string;
  /** A proof of possession's public key (lib/proof). */
  jwk?: unknown;
}

export interface DecodedJws {
  header: JwsHeader;
  payload: Record<string, unknown>;
  /** The bytes the signature covers: ASCII of `base64url(header).base64url(payload)`. */
  signingInput: Uint8Array;
  signature: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function signJws(
  payload: Record<string, unknown>,
  typ: string,
  key: Signer,
  kid?: string,
  /** Further protected header parameters (a proof's `jwk`). */
  extra: Record<string, unknown> = {},
): string {
  const header = { ...extra, ...(kid ? { alg: key.alg, typ, kid } : { alg: key.alg, typ }) };
  const signingInput = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  return `${signingInput}.${Buffer.from(key.sign(Buffer.from(signingInput, 'latin1'))).toString('base64url')}`;
}

/**
 * The bytes of `part` if it is their one base64url spelling. Decoders (Node's, jose's) skip
 * characters outside the alphabet and ignore the spare low bits of the last character, so one
 * signature has 16 spellings that all verify; anything keyed on a token's text (a cache, a deny
 * list, `ath`) would take each for a different token.
 */
function canonicalBytes(part: string): Buffer | undefined {
  const bytes = Buffer.from(part, 'base64url');
  return bytes.toString('base64url') === part ? bytes : undefined;
}

/** Whether every segment of a compact JWS is spelled canonically (see canonicalBytes). */
export function isCanonicalCompact(jws: string): boolean {
  return jws.split('.').every(part => canonicalBytes(part) !== undefined);
}

/** One base64url segment's bytes (Node's decoder: several times jose's pure-JS one). */
function segment(part: string): Uint8Array {
  const bytes = canonicalBytes(part);
  if (!bytes) throw new SignatureError('malformed_jws', 'not canonical base64url');
  return bytes;
}

/**
 * Parse a compact JWS without trusting it: checks shape, `alg` and `typ`, decodes the JSON
 * payload. The caller picks the key (it may come from the payload, as in a registration) and then
 * calls `verifyDecoded`.
 */
export function decodeJws(jws: unknown, expectedTyp: string): DecodedJws {
  if (typeof jws !== 'string' || !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(jws)) {
    throw new SignatureError('malformed_jws', 'not a compact JWS');
  }
  const [encodedHeader, encodedPayload, encodedSignature] = jws.split('.');
  let header: unknown;
  try {
    header = JSON.parse(decoder.decode(segment(encodedHeader)));
  } catch {
    throw new SignatureError('malformed_jws', 'JWS header is not base64url JSON');
  }
  if (!isPlainObject(header)) throw new SignatureError('malformed_jws', 'JWS header must be a JSON object');
  if (!ALGS.includes(header.alg as Alg))
    throw new SignatureError(
      'unsupported_alg',
      `alg ${JSON.stringify(header.alg)} is not supported, only ${ALGS.join(' and ')}`,
    );
  if (header.typ !== expectedTyp) throw new SignatureError('wrong_typ', `typ must be ${expectedTyp}`);
  // RFC 7515 §4.1.11: extensions we do not understand must make the JWS invalid.
  if ('crit' in header || 'b64' in header)
    throw new SignatureError('malformed_jws', 'crit/b64 header parameters are not supported');
  let text: string;
  try {
    text = decoder.decode(segment(encodedPayload));
  } catch {
    throw new SignatureError('malformed_jws', 'JWS payload is not base64url JSON');
  }
  if (jsonDepthExceeds(text, MAX_JSON_DEPTH))
    throw new SignatureError('malformed_jws', `JWS payload is nested deeper than ${MAX_JSON_DEPTH} levels`);
  let payload: unknown;
  try {
    payload = JSON.parse(text);
  } catch {
    throw new SignatureError('malformed_jws', 'JWS payload is not base64url JSON');
  }
  if (!isPlainObject(payload)) throw new SignatureError('malformed_jws', 'JWS payload must be a JSON object');
  let signature: Uint8Array;
  try {
    signature = segment(encodedSignature);
  } catch {
    throw new SignatureError('malformed_jws', 'JWS signature is not base64url');
  }
  return {
    header: header as unknown as JwsHeader,
    payload,
    signingInput: encoder.encode(`${encodedHeader}.${encodedPayload}`),
    signature,
  };
}

/** True when the signature verifies under `key`, in `key`'s own algorithm (whatever the header claims). */
export function verifyDecoded(decoded: DecodedJws, key: PublicKey): boolean {
  return decoded.header.alg === key.alg && key.verify(decoded.signingInput, decoded.signature);
}

/** Decode and verify in one step; throws SignatureError('bad_signature') when it does not check out. */
export function verifyJws(jws: unknown, expectedTyp: string, key: PublicKey): DecodedJws {
  const decoded = decodeJws(jws, expectedTyp);
  if (!verifyDecoded(decoded, key)) throw new SignatureError('bad_signature', 'JWS signature does not verify');
  return decoded;
}
