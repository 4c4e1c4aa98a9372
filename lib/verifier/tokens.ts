/**
 * Access tokens: EdDSA JWTs (RFC 9068 `at+jwt`) signed by the verifier's own key, published as a
 * JWKS, and introspected per RFC 7662. The signing key lives in the store so tokens outlive a
 * restart and several processes sharing a store agree on it.
 */
import * as crypto from 'node:crypto';
import * as jose from 'jose';
import { Ed25519PrivateKey } from '../crypto/ed25519';
import { JWS_TYPES, signJws } from '../crypto/jws';
import type { VerifierStore } from './store/types';

export interface TokenClaims {
  sub: string;
  jkt: string;
  amr: string[];
  workflow: string[];
  score?: number;
  sessionId: string;
  /** The device's generation (revocations so far): introspection refuses tokens of an older one. */
  generation: number;
}

export interface IssuedToken {
  token: string;
  jti: string;
  expiresAt: number;
}

export class TokenService {
  private readonly key: Ed25519PrivateKey;
  readonly kid: string;
  private readonly issuer: string;
  private readonly audience: string;
  private readonly ttlSeconds: number;
  private readonly keySet: ReturnType<typeof jose.createLocalJWKSet>;

  private constructor(key: Ed25519PrivateKey, kid: string, issuer: string, audience: string, ttlSeconds: number) {
    this.key = key;
    this.kid = kid;
    this.issuer = issuer;
    this.audience = audience;
    this.ttlSeconds = ttlSeconds;
    this.keySet = jose.createLocalJWKSet(this.jwks());
  }

  static async open(store: VerifierStore, issuer: string, audience: string, ttlSeconds: number): Promise<TokenService> {
    const record = await store.getOrCreateSigningKey(() => {
      const key = Ed25519PrivateKey.generate();
      return {
        kid: key.publicKey.thumbprint(),
        seed: Buffer.from(key.exportSeed()).toString('hex'),
        createdAt: Date.now(),
      };
    });
    const key = Ed25519PrivateKey.fromSeed(new Uint8Array(Buffer.from(record.seed, 'hex')));
    return new TokenService(key, record.kid, issuer, audience, ttlSeconds);
  }

  jwks(): { keys: Array<Record<string, string>> } {
    return { keys: [{ ...this.key.publicKey.toJwk(), kid: this.kid, alg: 'EdDSA', use: 'sig' }] };
  }

  issue(claims: TokenClaims, nowMs: number): IssuedToken {
    const iat = Math.floor(nowMs / 1000);
    const exp = iat + this.ttlSeconds;
    const jti = crypto.randomUUID();
    const token = signJws(
      {
        iss: this.issuer,
        aud: this.audience,
        sub: claims.sub,
        iat,
        exp,
        jti,
        client_id: claims.sub,
        cnf: { jkt: claims.jkt },
        amr: claims.amr,
        m2m: {
          workflow: claims.workflow,
          score: claims.score,
          sessionId: claims.sessionId,
          generation: claims.generation,
        },
      },
      JWS_TYPES.token,
      this.key,
      this.kid,
    );
    return { token, jti, expiresAt: exp * 1000 };
  }

  /** The verified claims, or undefined for any token that is not one of ours and current. */
  async verify(token: string, nowMs: number): Promise<jose.JWTPayload | undefined> {
    try {
      const { payload } = await jose.jwtVerify(token, this.keySet, {
        issuer: this.issuer,
        audience: this.audience,
        algorithms: ['EdDSA'],
        typ: JWS_TYPES.token,
        currentDate: new Date(nowMs),
      });
      return payload;
    } catch {
      return undefined;
    }
  }
}
