/**
 * The two kinds of key this package signs with, behind one shape: Ed25519 (JWS `EdDSA`, the
 * default, in files) and P-256 (`ES256`, what TPMs and most secure elements hold). The algorithm
 * follows from the key, never from a header (DESIGN.md §2): `algOf` and `publicKeyFromJwk` are
 * the one place that pairing is made.
 */
import * as crypto from 'node:crypto';
import { SignatureError } from '../errors';
import { Ed25519PrivateKey, Ed25519PublicKey, type OkpPublicJwk } from './ed25519';
import { type EcPublicJwk, P256PrivateKey, P256PublicKey } from './p256';

export type Alg = 'EdDSA' | 'ES256';
export const ALGS: readonly Alg[] = ['EdDSA', 'ES256'];

export type PublicJwk = OkpPublicJwk | EcPublicJwk;

export interface PublicKey {
  readonly alg: Alg;
  toJwk(): PublicJwk;
  /** RFC 7638. */
  thumbprint(): string;
  /** False for any bad signature; never throws on attacker input. */
  verify(message: Uint8Array, signature: Uint8Array): boolean;
}

/** What signs: a file key in memory, or a key in a token that never leaves it. */
export interface Signer {
  readonly alg: Alg;
  readonly publicKey: PublicKey;
  /** A raw JWS signature: 64 bytes for Ed25519, r‖s for ES256. */
  sign(message: Uint8Array): Uint8Array;
}

/** The public key a JWK names, Ed25519 or P-256, checked (canonical, on the curve, no private part). */
export function publicKeyFromJwk(jwk: unknown): PublicKey {
  const kty = (jwk as { kty?: unknown } | null)?.kty;
  if (kty === 'OKP') return Ed25519PublicKey.fromJwk(jwk);
  if (kty === 'EC') return P256PublicKey.fromJwk(jwk);
  throw new SignatureError('bad_key', 'jwk must be an OKP Ed25519 or an EC P-256 public key');
}

/** The algorithm a JWK's key signs with, or undefined for any other key. */
export function algOf(jwk: unknown): Alg | undefined {
  const { kty, crv } = (jwk ?? {}) as { kty?: unknown; crv?: unknown };
  if (kty === 'OKP' && crv === 'Ed25519') return 'EdDSA';
  if (kty === 'EC' && crv === 'P-256') return 'ES256';
  return undefined;
}

/** A new private key of `alg`, with the 32 secret bytes (Ed25519 seed, P-256 scalar) a store keeps. */
export function newStoredKey(alg: Alg): { key: Signer; secret: Uint8Array } {
  if (alg === 'ES256') {
    const key = P256PrivateKey.generate();
    return { key, secret: key.exportScalar() };
  }
  const key = Ed25519PrivateKey.generate();
  return { key, secret: key.exportSeed() };
}

/** The key a store kept as `newStoredKey`'s secret bytes. */
export function storedKey(alg: Alg, secret: Uint8Array): Signer {
  return alg === 'ES256' ? P256PrivateKey.fromScalar(secret) : Ed25519PrivateKey.fromSeed(secret);
}

/** A PEM or DER private key (PKCS#8, SEC1), Ed25519 or P-256, as a signer; bad_key for any other. */
export function signerFromPrivateKey(key: string | Buffer): Signer {
  let jwk: { kty?: string; crv?: string; d?: string };
  try {
    jwk = crypto.createPrivateKey(key).export({ format: 'jwk' }) as typeof jwk;
  } catch (err) {
    throw new SignatureError('bad_key', `not a private key: ${(err as Error).message}`);
  }
  const alg = algOf(jwk);
  if (!alg || !jwk.d) throw new SignatureError('bad_key', 'the private key must be Ed25519 or P-256');
  return storedKey(alg, new Uint8Array(Buffer.from(jwk.d, 'base64url')));
}

/** The DER SubjectPublicKeyInfo of a public key, as certificates and CSRs carry it. */
export function spkiOf(publicKey: PublicKey): Buffer {
  return crypto
    .createPublicKey({ key: publicKey.toJwk() as crypto.JsonWebKey, format: 'jwk' })
    .export({ type: 'spki', format: 'der' });
}
