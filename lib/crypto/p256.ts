/**
 * ECDSA on P-256 with SHA-256 (JWS `ES256`, RFC 7518 §3.4): the curve TPMs and most secure
 * elements hold, where Ed25519 is not to be had. Signatures travel raw, r‖s of 32 bytes each
 * (node:crypto's `ieee-p1363` encoding), never DER. A signature's r and s must lie in [1, n−1];
 * a high s is valid ECDSA (OpenSSL and tokens make them half the time) and verifies, since
 * nothing in this package keys on a signature's bytes (ECDSA signatures are malleable: (r, s) and
 * (r, n−s) both verify).
 */
import * as crypto from 'node:crypto';
import { SignatureError } from '../errors';

/** RFC 7518 public key in JWK form. */
export interface EcPublicJwk {
  kty: 'EC';
  crv: 'P-256';
  x: string;
  y: string;
}

/** The order of P-256's base point. */
const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

function scalar(bytes: Uint8Array): bigint {
  return BigInt(`0x${Buffer.from(bytes).toString('hex') || '0'}`);
}

/** Whether a raw r‖s signature is of the one length and its halves in range. */
export function wellFormedEs256(signature: Uint8Array): boolean {
  if (!(signature instanceof Uint8Array) || signature.length !== 64) return false;
  const r = scalar(signature.subarray(0, 32));
  const s = scalar(signature.subarray(32));
  return r > 0n && r < N && s > 0n && s < N;
}

const COORDINATE = /^[A-Za-z0-9_-]{43}$/;

export class P256PublicKey {
  readonly alg = 'ES256' as const;
  private readonly keyObject: crypto.KeyObject;

  private constructor(
    private readonly jwk: EcPublicJwk,
    keyObject: crypto.KeyObject,
  ) {
    this.keyObject = keyObject;
  }

  /** From a JWK: coordinates of 32 bytes, canonical base64url, a point on the curve (OpenSSL checks it). */
  static fromJwk(jwk: unknown): P256PublicKey {
    const candidate = jwk as Partial<EcPublicJwk & { d: unknown }> | null;
    if (
      typeof candidate !== 'object' ||
      candidate === null ||
      candidate.kty !== 'EC' ||
      candidate.crv !== 'P-256' ||
      typeof candidate.x !== 'string' ||
      typeof candidate.y !== 'string' ||
      !COORDINATE.test(candidate.x) ||
      !COORDINATE.test(candidate.y)
    )
      throw new SignatureError('bad_key', 'jwk must be an RFC 7518 EC P-256 public key');
    if ('d' in candidate) throw new SignatureError('bad_key', 'jwk must not contain a private key');
    const clean: EcPublicJwk = { kty: 'EC', crv: 'P-256', x: candidate.x, y: candidate.y };
    for (const coordinate of [clean.x, clean.y])
      if (Buffer.from(coordinate, 'base64url').toString('base64url') !== coordinate)
        throw new SignatureError('bad_key', 'the key is not in canonical base64url');
    let keyObject: crypto.KeyObject;
    try {
      keyObject = crypto.createPublicKey({ key: { ...clean }, format: 'jwk' });
    } catch {
      throw new SignatureError('bad_key', 'not a point on P-256');
    }
    return new P256PublicKey(clean, keyObject);
  }

  /** From an uncompressed SEC 1 point (0x04‖X‖Y), as PKCS#11 tokens hand it out. */
  static fromUncompressed(point: Uint8Array): P256PublicKey {
    if (point.length !== 65 || point[0] !== 4)
      throw new SignatureError('bad_key', 'an uncompressed P-256 point is 65 bytes starting 0x04');
    return P256PublicKey.fromJwk({
      kty: 'EC',
      crv: 'P-256',
      x: Buffer.from(point.subarray(1, 33)).toString('base64url'),
      y: Buffer.from(point.subarray(33)).toString('base64url'),
    });
  }

  toJwk(): EcPublicJwk {
    return { ...this.jwk };
  }

  /** RFC 7638 thumbprint (crv, kty, x, y in lexical order). */
  thumbprint(): string {
    const { crv, kty, x, y } = this.jwk;
    return crypto.createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest('base64url');
  }

  /** False for any signature that is not 64 raw bytes with r, s in [1, n−1], or does not verify. */
  verify(message: Uint8Array, signature: Uint8Array): boolean {
    if (!wellFormedEs256(signature)) return false;
    try {
      return crypto.verify('sha256', message, { key: this.keyObject, dsaEncoding: 'ieee-p1363' }, signature);
    } catch {
      return false;
    }
  }
}

export class P256PrivateKey {
  readonly alg = 'ES256' as const;
  readonly publicKey: P256PublicKey;

  private constructor(private readonly keyObject: crypto.KeyObject) {
    const { kty, crv, x, y } = keyObject.export({ format: 'jwk' }) as unknown as EcPublicJwk;
    this.publicKey = P256PublicKey.fromJwk({ kty, crv, x, y });
  }

  static generate(): P256PrivateKey {
    return new P256PrivateKey(crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
  }

  /** From the 32-byte private scalar d, as the verifier stores its token keys. */
  static fromScalar(d: Uint8Array): P256PrivateKey {
    if (d.length !== 32) throw new SignatureError('bad_key', 'a P-256 private key is 32 bytes');
    const ecdh = crypto.createECDH('prime256v1');
    ecdh.setPrivateKey(Buffer.from(d));
    const point = ecdh.getPublicKey();
    const jwk = {
      kty: 'EC',
      crv: 'P-256',
      d: Buffer.from(d).toString('base64url'),
      x: point.subarray(1, 33).toString('base64url'),
      y: point.subarray(33).toString('base64url'),
    };
    return new P256PrivateKey(crypto.createPrivateKey({ key: jwk, format: 'jwk' }));
  }

  /** The scalar d, for the verifier's store only. */
  exportScalar(): Uint8Array {
    const { d } = this.keyObject.export({ format: 'jwk' }) as { d: string };
    return new Uint8Array(Buffer.from(d, 'base64url'));
  }

  /** Raw r‖s over SHA-256 of `message`. */
  sign(message: Uint8Array): Uint8Array {
    return new Uint8Array(crypto.sign('sha256', message, { key: this.keyObject, dsaEncoding: 'ieee-p1363' }));
  }

  toJSON(): { publicKey: EcPublicJwk } {
    return { publicKey: this.publicKey.toJwk() };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `P256PrivateKey { publicKey: ${this.publicKey.thumbprint()} }`;
  }
}
