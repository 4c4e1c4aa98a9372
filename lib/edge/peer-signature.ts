/**
 * Signatures on messages between peers (a sensor gateway to its neighbour, a PLC to the edge),
 * checked against a local trust store of public keys, so they keep working while the identity
 * API is unreachable.
 *
 * `msg.m2m.signature` is a compact JWS (EdDSA, typ m2m-message+jwt, kid = the signer's key id in
 * the trust store) whose payload binds the message: `{iss, iat, sha256}` with sha256 the
 * base64url SHA-256 of msg.payload's bytes (a Buffer as is, a string as UTF-8, anything else as
 * its JSON.stringify).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { Ed25519PublicKey } from '../crypto/ed25519';
import { type PublicKey, type Signer, publicKeyFromJwk } from '../crypto/keys';
import { type DecodedJws, decodeJws, JWS_TYPES, signJws, verifyDecoded } from '../crypto/jws';
import { M2MError } from '../errors';
import { isPlainObject } from '../schema';

/** How old a signature may be, and how far ahead of this clock. */
const MAX_AGE_S = 300;
const MAX_SKEW_S = 60;

export type PeerSignatureResult =
  | { valid: true; kid: string }
  | {
      valid: false;
      kid?: string;
      reason:
        | 'unsigned'
        | 'malformed_signature'
        | 'unknown_key'
        | 'bad_signature'
        | 'payload_mismatch'
        | 'stale_signature';
    };

function payloadDigest(payload: unknown): string {
  const bytes = Buffer.isBuffer(payload)
    ? payload
    : Buffer.from(typeof payload === 'string' ? payload : (JSON.stringify(payload) ?? ''), 'utf8');
  return crypto.createHash('sha256').update(bytes).digest('base64url');
}

export function signPeerMessage(payload: unknown, key: Signer, kid: string, now = Date.now()): string {
  return signJws(
    { iss: kid, iat: Math.floor(now / 1000), sha256: payloadDigest(payload) },
    JWS_TYPES.peerMessage,
    key,
    kid,
  );
}

export class TrustStoreError extends M2MError {
  constructor(message: string) {
    super('trust_store_invalid', message, 500);
  }
}

/** Public keys by key id, from a JWKS file (`{"keys": [{kty, crv, x, kid}, ...]}`). */
export class TrustStore {
  private constructor(
    private readonly keys: Map<string, PublicKey>,
    readonly skipped: number,
  ) {}

  static empty(): TrustStore {
    return new TrustStore(new Map(), 0);
  }

  /** Reads `file`; a missing file is an empty store, an unreadable one an error. Bad keys are skipped and counted. */
  static load(file: string): TrustStore {
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return TrustStore.empty();
      throw new TrustStoreError(`${file}: ${(err as Error).message}`);
    }
    if (!isPlainObject(parsed) || !Array.isArray(parsed.keys))
      throw new TrustStoreError(`${file}: not a JWKS ({"keys": [...]})`);
    const keys = new Map<string, PublicKey>();
    let skipped = 0;
    for (const jwk of parsed.keys) {
      const kid = isPlainObject(jwk) && typeof jwk.kid === 'string' && jwk.kid ? jwk.kid : undefined;
      try {
        if (!kid) throw new Error('no kid');
        const { kty, crv, x, y } = jwk as Record<string, unknown>;
        const key = publicKeyFromJwk(kty === 'EC' ? { kty, crv, x, y } : { kty, crv, x });
        if (key instanceof Ed25519PublicKey && !key.isPrimeOrder()) throw new Error('small-order component');
        keys.set(kid, key);
      } catch {
        skipped++;
      }
    }
    return new TrustStore(keys, skipped);
  }

  get size(): number {
    return this.keys.size;
  }

  verify(signature: unknown, payload: unknown, now = Date.now()): PeerSignatureResult {
    let decoded: DecodedJws;
    try {
      decoded = decodeJws(signature, JWS_TYPES.peerMessage);
    } catch {
      return { valid: false, reason: 'malformed_signature' };
    }
    const kid = decoded.header.kid;
    const key = typeof kid === 'string' ? this.keys.get(kid) : undefined;
    if (!kid || !key) return { valid: false, kid, reason: 'unknown_key' };
    // The key's own algorithm only: an ES256 signature under an Ed25519 key, or the reverse, is bad.
    if (!verifyDecoded(decoded, key)) return { valid: false, kid, reason: 'bad_signature' };
    if (decoded.payload.sha256 !== payloadDigest(payload)) return { valid: false, kid, reason: 'payload_mismatch' };
    const iat = decoded.payload.iat;
    const age = now / 1000 - (typeof iat === 'number' ? iat : -Infinity);
    if (!(age <= MAX_AGE_S && age >= -MAX_SKEW_S)) return { valid: false, kid, reason: 'stale_signature' };
    return { valid: true, kid };
  }
}
