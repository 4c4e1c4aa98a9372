/**
 * Per-message proof of possession, in the spirit of RFC 9449 (DPoP): a token alone is a bearer
 * credential that anyone who sees one MQTT message could replay, so each stamped message also
 * carries a compact JWS signed with the device key that binds it to the token and to the message.
 *
 *   header  {alg: "EdDSA" | "ES256", typ: "m2m-pop+jwt", jwk: {...}}   the device's public key
 *   payload {jti, iat, ath, dig, tgt}
 *     jti  unique id (a receiver remembers the ones it has seen)
 *     iat  seconds
 *     ath  base64url SHA-256 of the token (as in DPoP)
 *     dig  base64url SHA-256 of the payload's bytes (a Buffer as is, a string as UTF-8, anything
 *          else as its JSON, which is what mqtt out and http request send)
 *     tgt  where the message goes: the MQTT topic, or the path of the HTTP URL
 *
 * The receiver accepts the proof when the key's RFC 7638 thumbprint is the token's `cnf.jkt`.
 */
import * as crypto from 'node:crypto';
import { type PublicJwk, type PublicKey, type Signer, publicKeyFromJwk } from './crypto/keys';
import { decodeJws, signJws, verifyDecoded } from './crypto/jws';
import { isPlainObject } from './schema';

export const PROOF_TYPE = 'm2m-pop+jwt';

export function sha256(bytes: Buffer | string): string {
  return crypto.createHash('sha256').update(bytes).digest('base64url');
}

/** The bytes a payload travels as (see the header): what `dig` is computed over. */
export function payloadBytes(payload: unknown): Buffer {
  if (Buffer.isBuffer(payload)) return payload;
  if (typeof payload === 'string') return Buffer.from(payload, 'utf8');
  return Buffer.from(JSON.stringify(payload) ?? '', 'utf8');
}

/** The target of a message: an HTTP URL's path, else the topic as it is. */
export function targetOf(destination: string): string {
  if (!/^https?:\/\//i.test(destination)) return destination;
  try {
    return new URL(destination).pathname;
  } catch {
    return destination;
  }
}

/** Proof ids: a random prefix per process and a counter, unique without a random draw per message. */
const jtiPrefix = crypto.randomBytes(12).toString('base64url');
let jtiCounter = 0;

/** The token's `ath`, computed once per token rather than once per message. */
const tokenHashes = new Map<string, string>();
function tokenHash(token: string): string {
  let hash = tokenHashes.get(token);
  if (!hash) {
    hash = sha256(token);
    if (tokenHashes.size >= 16) tokenHashes.delete(tokenHashes.keys().next().value!);
    tokenHashes.set(token, hash);
  }
  return hash;
}

export interface ProofInput {
  token: string;
  payload: unknown;
  /** MQTT topic or HTTP URL. */
  target: string;
  now?: number;
}

export function createProof(key: Signer, input: ProofInput): string {
  const header = { jwk: key.publicKey.toJwk() };
  const payload = {
    jti: `${jtiPrefix}.${(jtiCounter++).toString(36)}`,
    iat: Math.floor((input.now ?? Date.now()) / 1000),
    ath: tokenHash(input.token),
    dig: sha256(payloadBytes(input.payload)),
    tgt: targetOf(input.target),
  };
  return signJws(payload, PROOF_TYPE, key, undefined, { jwk: header.jwk });
}

export type ProofFailure =
  | 'proof_malformed'
  | 'proof_wrong_key'
  | 'proof_bad_signature'
  | 'proof_wrong_token'
  | 'proof_payload_mismatch'
  | 'proof_wrong_target'
  | 'proof_stale'
  | 'proof_future';

export interface CheckedProof {
  jti: string;
  iat: number;
}

export interface ProofExpectations {
  /** The token's `cnf.jkt`: the thumbprint the proof's key must have. */
  jkt: string;
  /** SHA-256 of the token (`ath`), computed once per token by the caller. */
  tokenHash: string;
  payload: unknown;
  target: string;
  now: number;
  /** How old a proof may be, and how far ahead of this clock (s). */
  maxAgeSeconds: number;
  maxAheadSeconds: number;
  /** Parsed keys by thumbprint: decoding a point costs as much as the check itself. */
  keys: Map<string, PublicKey>;
}

/** The members of a public JWK that name the key (RFC 7638's), nothing else a header carries. */
function publicMembers(jwk: Record<string, unknown>): Record<string, unknown> {
  const { kty, crv, x, y } = jwk;
  return kty === 'EC' ? { kty, crv, x, y } : { kty, crv, x };
}

function sameKey(jwk: Record<string, unknown>, known: PublicJwk): boolean {
  return Object.entries(known).every(([member, value]) => jwk[member] === value);
}

/** Checks a proof against its token and message; a failure reason, or what a replay cache needs. */
export function checkProof(
  proof: unknown,
  expected: ProofExpectations,
): { ok: true; proof: CheckedProof } | { ok: false; reason: ProofFailure } {
  let decoded: ReturnType<typeof decodeJws>;
  try {
    decoded = decodeJws(proof, PROOF_TYPE);
  } catch {
    return { ok: false, reason: 'proof_malformed' };
  }
  const { jwk } = decoded.header;
  const { jti, iat, ath, dig, tgt } = decoded.payload;
  if (
    !isPlainObject(jwk) ||
    typeof jti !== 'string' ||
    jti.length > 128 ||
    typeof iat !== 'number' ||
    typeof ath !== 'string' ||
    typeof dig !== 'string' ||
    typeof tgt !== 'string'
  ) {
    return { ok: false, reason: 'proof_malformed' };
  }
  let key = expected.keys.get(expected.jkt);
  if (!key) {
    try {
      key = publicKeyFromJwk(publicMembers(jwk));
    } catch {
      return { ok: false, reason: 'proof_wrong_key' };
    }
    if (key.thumbprint() !== expected.jkt) return { ok: false, reason: 'proof_wrong_key' };
    if (expected.keys.size >= 10_000) expected.keys.delete(expected.keys.keys().next().value!);
    expected.keys.set(expected.jkt, key);
  } else if (!sameKey(jwk, key.toJwk())) {
    return { ok: false, reason: 'proof_wrong_key' };
  }
  if (!verifyDecoded(decoded, key)) return { ok: false, reason: 'proof_bad_signature' };
  if (ath !== expected.tokenHash) return { ok: false, reason: 'proof_wrong_token' };
  if (dig !== sha256(payloadBytes(expected.payload))) return { ok: false, reason: 'proof_payload_mismatch' };
  if (tgt !== targetOf(expected.target)) return { ok: false, reason: 'proof_wrong_target' };
  const age = expected.now / 1000 - iat;
  if (age > expected.maxAgeSeconds) return { ok: false, reason: 'proof_stale' };
  if (age < -expected.maxAheadSeconds) return { ok: false, reason: 'proof_future' };
  return { ok: true, proof: { jti, iat } };
}
