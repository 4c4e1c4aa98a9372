/**
 * Ed25519 (RFC 8032) keys, signing and verification.
 *
 * node:crypto is the default engine: it is 9-14x faster than pure JS here. Where the runtime's
 * crypto has no Ed25519 (FIPS builds of OpenSSL), @noble/ed25519 takes over transparently; tests
 * also use it to cross-check node:crypto. Keys are created once and reused, because building a
 * KeyObject per call would cost as much as the signature itself.
 */
import * as crypto from 'node:crypto';
import * as ed from '@noble/ed25519';
import { SignatureError } from '../errors';

// noble's synchronous API needs a SHA-512; node:crypto's hash is available even where its Ed25519 is not.
ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(crypto.createHash('sha512').update(message).digest());

export type Ed25519Engine = 'node' | 'noble';

/** RFC 8037 public key in JWK form. */
export interface OkpPublicJwk {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
}

// DER prefixes (RFC 8410) that turn a raw 32-byte seed / public key into PKCS#8 / SPKI.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

function nodeHasEd25519(): boolean {
  try {
    const { privateKey } = crypto.generateKeyPairSync('ed25519');
    crypto.sign(null, Buffer.alloc(1), privateKey);
    return true;
  } catch {
    return false;
  }
}

/** The engine used when none is named: node:crypto if it can do Ed25519, else noble. */
export const defaultEngine: Ed25519Engine =
  process.env.M2M_ED25519_ENGINE === 'noble' || !nodeHasEd25519() ? 'noble' : 'node';

function exactBytes(bytes: Uint8Array, length: number, what: string): Uint8Array {
  if (!(bytes instanceof Uint8Array) || bytes.length !== length) {
    throw new SignatureError('bad_key', `${what} must be ${length} bytes`);
  }
  return bytes;
}

function decodePoint(bytes: Uint8Array): ed.Point {
  let point: ed.Point;
  try {
    point = ed.Point.fromBytes(bytes, false);
  } catch {
    throw new SignatureError('bad_key', 'not a canonical encoding of an Ed25519 point');
  }
  // Strict decoding already refuses y >= p; a byte-exact re-encoding leaves no other form.
  if (!point.toBytes().every((byte, i) => byte === bytes[i]))
    throw new SignatureError('bad_key', 'not a canonical encoding of an Ed25519 point');
  return point;
}

export class Ed25519PublicKey {
  readonly alg = 'EdDSA' as const;
  readonly raw: Uint8Array;
  readonly engine: Ed25519Engine;
  private readonly keyObject?: crypto.KeyObject;

  private encoded: string | undefined;

  private constructor(raw: Uint8Array, engine: Ed25519Engine) {
    this.raw = raw;
    this.engine = engine;
    if (engine === 'node') {
      try {
        this.keyObject = crypto.createPublicKey({
          key: Buffer.concat([SPKI_PREFIX, raw]),
          format: 'der',
          type: 'spki',
        });
      } catch {
        throw new SignatureError('bad_key', 'not a valid Ed25519 public key');
      }
    }
  }

  /**
   * Refuses what no honest key generator produces and what lets one signature fit many messages:
   * encodings that are not canonical (y >= p, x = 0 with the sign bit set; RFC 8032 §5.1.3) and
   * points of small order (the identity among them: node:crypto accepts one fixed signature for
   * every message under it), as libsodium and noble's strict mode do.
   */
  static fromRaw(raw: Uint8Array, engine: Ed25519Engine = defaultEngine): Ed25519PublicKey {
    const bytes = Uint8Array.from(exactBytes(raw, 32, 'an Ed25519 public key'));
    const point = decodePoint(bytes);
    if (point.isSmallOrder()) throw new SignatureError('bad_key', 'an Ed25519 public key of small order signs nothing');
    return new Ed25519PublicKey(bytes, engine);
  }

  /**
   * Whether the key has no small-order component. Honest keys never do; a mixed-order key is
   * where node:crypto (cofactorless) and noble (cofactored) can disagree on a crafted signature.
   * A full scalar multiplication (~3 ms), so it is checked where keys enter a registry.
   */
  isPrimeOrder(): boolean {
    return decodePoint(this.raw).isTorsionFree();
  }

  static fromJwk(jwk: unknown, engine: Ed25519Engine = defaultEngine): Ed25519PublicKey {
    const candidate = jwk as Partial<OkpPublicJwk & { d: unknown }> | null;
    if (
      typeof candidate !== 'object' ||
      candidate === null ||
      candidate.kty !== 'OKP' ||
      candidate.crv !== 'Ed25519' ||
      typeof candidate.x !== 'string' ||
      !/^[A-Za-z0-9_-]{43}$/.test(candidate.x)
    ) {
      throw new SignatureError('bad_key', 'jwk must be an RFC 8037 OKP Ed25519 public key');
    }
    if ('d' in candidate) throw new SignatureError('bad_key', 'jwk must not contain a private key');
    return Ed25519PublicKey.fromRaw(new Uint8Array(Buffer.from(candidate.x, 'base64url')), engine);
  }

  /** The key's base64url encoding: its JWK `x`. */
  get x(): string {
    this.encoded ??= Buffer.from(this.raw).toString('base64url');
    return this.encoded;
  }

  toJwk(): OkpPublicJwk {
    return { kty: 'OKP', crv: 'Ed25519', x: this.x };
  }

  /** RFC 7638 thumbprint (base64url SHA-256 over the canonical JWK members, in lexical order). */
  thumbprint(): string {
    const { crv, kty, x } = this.toJwk();
    return crypto.createHash('sha256').update(JSON.stringify({ crv, kty, x })).digest('base64url');
  }

  /** Strict RFC 8032 verification; false for any bad signature, never throws on attacker input. */
  verify(message: Uint8Array, signature: Uint8Array): boolean {
    if (!(signature instanceof Uint8Array) || signature.length !== 64) return false;
    try {
      return this.keyObject
        ? crypto.verify(null, message, this.keyObject, signature)
        : ed.verify(signature, message, this.raw, { zip215: false });
    } catch {
      return false;
    }
  }
}

export class Ed25519PrivateKey {
  readonly alg = 'EdDSA' as const;
  readonly publicKey: Ed25519PublicKey;
  readonly engine: Ed25519Engine;
  private readonly seed: Uint8Array;
  private readonly keyObject?: crypto.KeyObject;

  private constructor(seed: Uint8Array, engine: Ed25519Engine) {
    this.seed = seed;
    this.engine = engine;
    if (engine === 'node') {
      this.keyObject = crypto.createPrivateKey({
        key: Buffer.concat([PKCS8_PREFIX, seed]),
        format: 'der',
        type: 'pkcs8',
      });
      const spki = crypto.createPublicKey(this.keyObject).export({ format: 'der', type: 'spki' });
      this.publicKey = Ed25519PublicKey.fromRaw(new Uint8Array(spki.subarray(SPKI_PREFIX.length)), engine);
    } else {
      this.publicKey = Ed25519PublicKey.fromRaw(ed.getPublicKey(seed), engine);
    }
  }

  static generate(engine: Ed25519Engine = defaultEngine): Ed25519PrivateKey {
    return new Ed25519PrivateKey(new Uint8Array(crypto.randomBytes(32)), engine);
  }

  /** From the 32-byte RFC 8032 private key (the seed). */
  static fromSeed(seed: Uint8Array, engine: Ed25519Engine = defaultEngine): Ed25519PrivateKey {
    return new Ed25519PrivateKey(Uint8Array.from(exactBytes(seed, 32, 'an Ed25519 private key')), engine);
  }

  sign(message: Uint8Array): Uint8Array {
    return this.keyObject ? new Uint8Array(crypto.sign(null, message, this.keyObject)) : ed.sign(message, this.seed);
  }

  /** The seed, for the keystore only: it is the one place a private key may be written. */
  exportSeed(): Uint8Array {
    return Uint8Array.from(this.seed);
  }

  // A private key must never end up in a log line or a msg by accident.
  toJSON(): { publicKey: OkpPublicJwk } {
    return { publicKey: this.publicKey.toJwk() };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `Ed25519PrivateKey { publicKey: ${this.publicKey.toJwk().x} }`;
  }
}
