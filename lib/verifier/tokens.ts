/**
 * Access tokens: JWTs (RFC 9068 `at+jwt`) signed by the verifier's own key, EdDSA by default or
 * ES256 for brokers and stacks that know no EdDSA, published as a JWKS, and introspected per
 * RFC 7662. The signing key lives in the store so tokens outlive a restart and several processes
 * sharing a store agree on it. The key rotates (planRotation), also to another algorithm.
 */
import * as crypto from 'node:crypto';
import * as jose from 'jose';
import { ALGS, type Alg, newStoredKey, type Signer, storedKey } from '../crypto/keys';
import { isCanonicalCompact, JWS_TYPES, signJws } from '../crypto/jws';
import type { KeyRotation, SigningKeyRecord, VerifierStore } from './store/types';

/** Seconds a device's or relying party's clock may be off (iat checks, key retirement). */
export const MAX_CLOCK_SKEW_S = 300;

export interface TokenClaims {
  sub: string;
  jkt: string;
  amr: string[];
  workflow: string[];
  score?: number;
  sessionId: string;
  /** The device's generation (revocations so far): introspection refuses tokens of an older one. */
  generation: number;
  /** `x5t#S256` of the client certificate issued with the token, if one was. */
  certificateThumbprint?: string;
}

export interface IssuedToken {
  token: string;
  jti: string;
  expiresAt: number;
}

export interface KeyRotationOptions {
  /** What new keys sign tokens with (EdDSA unless told otherwise). */
  alg: Alg;
  /** A new key takes over signing this often. */
  periodMs: number;
  /** A new key is in the JWKS this long before it signs, so relying parties' caches learn it first. */
  publishAheadMs: number;
  /** How often each process re-reads the keys (and rotates when due). */
  refreshMs: number;
}

export const DEFAULT_KEY_PERIOD_MS = 30 * 86_400_000;

/** The defaults for a period: published an hour ahead (a quarter period if shorter), re-read a quarter of that. */
export function keyRotationOptions(options: Partial<KeyRotationOptions> = {}): KeyRotationOptions {
  const periodMs = options.periodMs ?? DEFAULT_KEY_PERIOD_MS;
  const publishAheadMs = options.publishAheadMs ?? Math.min(3_600_000, periodMs / 4);
  return {
    alg: options.alg ?? 'EdDSA',
    periodMs,
    publishAheadMs,
    refreshMs: options.refreshMs ?? Math.min(60_000, publishAheadMs / 4),
  };
}

function newKeyRecord(now: number, signsFrom: number, alg: Alg): SigningKeyRecord {
  const { key, secret } = newStoredKey(alg);
  return { kid: key.publicKey.thumbprint(), alg, seed: Buffer.from(secret).toString('hex'), createdAt: now, signsFrom };
}

/** A stored key as a signer: its algorithm decides how its 32 secret bytes are read. */
function loadKey(record: SigningKeyRecord): Signer {
  return storedKey(record.alg, new Uint8Array(Buffer.from(record.seed, 'hex')));
}

/** The key that signs at `now`: the newest whose time has come. Keys come oldest first. */
function signingKeyAt<K extends { signsFrom: number }>(keys: K[], now: number): K | undefined {
  let signing = keys[0];
  for (const key of keys) if (key.signsFrom <= now) signing = key;
  return signing;
}

/**
 * What a rotation does with the keys the store holds at `now`. The first key signs at once (no
 * one can have cached a JWKS yet); later ones are added `publishAheadMs` before their turn; a key
 * is removed once the key after it has signed for `retireAfterMs` (the token lifetime plus clock
 * skew), when no token of its own can still be valid. A verifier told to sign with another
 * algorithm rotates to a key of it at once, published ahead like any other.
 */
export function planRotation(
  keys: SigningKeyRecord[],
  now: number,
  rotation: Pick<KeyRotationOptions, 'periodMs' | 'publishAheadMs'> & { retireAfterMs: number; alg: Alg },
): KeyRotation {
  if (!keys.length) return { add: newKeyRecord(now, now, rotation.alg) };
  const current = signingKeyAt(keys, now)!;
  const next = keys.find(key => key.signsFrom > now);
  const due = current.signsFrom + rotation.periodMs - rotation.publishAheadMs <= now;
  const otherAlg = current.alg !== rotation.alg && (!next || next.alg !== rotation.alg);
  const add =
    otherAlg || (!next && due)
      ? newKeyRecord(
          now,
          otherAlg
            ? now + rotation.publishAheadMs
            : Math.max(now + rotation.publishAheadMs, current.signsFrom + rotation.periodMs),
          rotation.alg,
        )
      : undefined;
  const remove = keys
    .filter((_key, i) => i + 1 < keys.length && keys[i + 1].signsFrom + rotation.retireAfterMs <= now)
    .map(key => key.kid);
  return { ...(add ? { add } : {}), ...(remove.length ? { remove } : {}) };
}

interface LoadedKey {
  kid: string;
  signsFrom: number;
  key: Signer;
}

export class TokenService {
  private readonly store: VerifierStore;
  private readonly issuer: string;
  private readonly audience: string;
  readonly ttlSeconds: number;
  readonly rotation: KeyRotationOptions;
  private keys: LoadedKey[] = [];
  private keySet!: ReturnType<typeof jose.createLocalJWKSet>;

  private constructor(
    store: VerifierStore,
    issuer: string,
    audience: string,
    ttlSeconds: number,
    rotation: KeyRotationOptions,
  ) {
    this.store = store;
    this.issuer = issuer;
    this.audience = audience;
    this.ttlSeconds = ttlSeconds;
    this.rotation = rotation;
  }

  static async open(
    store: VerifierStore,
    issuer: string,
    audience: string,
    ttlSeconds: number,
    rotation: KeyRotationOptions,
    now: number,
  ): Promise<TokenService> {
    const service = new TokenService(store, issuer, audience, ttlSeconds, rotation);
    await service.refresh(now);
    return service;
  }

  /** Re-reads the keys every process shares, rotating them when due; runs on the verifier's timer. */
  async refresh(now: number): Promise<void> {
    const records = await this.store.rotateSigningKeys(keys =>
      planRotation(keys, now, { ...this.rotation, retireAfterMs: (this.ttlSeconds + MAX_CLOCK_SKEW_S) * 1000 }),
    );
    const known = new Map(this.keys.map(loaded => [loaded.kid, loaded.key]));
    this.keys = records.map(record => ({
      kid: record.kid,
      signsFrom: record.signsFrom,
      key: known.get(record.kid) ?? loadKey(record),
    }));
    this.keySet = jose.createLocalJWKSet(this.jwks());
  }

  /** The kid that signs at `now`. */
  kidAt(now: number): string {
    return signingKeyAt(this.keys, now)!.kid;
  }

  /** Every key a token may be signed with now or soon: the current one, the next one, and those whose tokens live on. */
  jwks(): { keys: Array<Record<string, string>> } {
    return {
      keys: this.keys.map(({ kid, key }) => ({ ...key.publicKey.toJwk(), kid, alg: key.alg, use: 'sig' })),
    };
  }

  issue(claims: TokenClaims, nowMs: number): IssuedToken {
    const iat = Math.floor(nowMs / 1000);
    const exp = iat + this.ttlSeconds;
    const jti = crypto.randomUUID();
    const signing = signingKeyAt(this.keys, nowMs)!;
    const token = signJws(
      {
        iss: this.issuer,
        aud: this.audience,
        sub: claims.sub,
        iat,
        exp,
        jti,
        client_id: claims.sub,
        // RFC 8705: a token issued with a client certificate is bound to that certificate too.
        cnf: claims.certificateThumbprint
          ? { jkt: claims.jkt, 'x5t#S256': claims.certificateThumbprint }
          : { jkt: claims.jkt },
        amr: claims.amr,
        m2m: {
          workflow: claims.workflow,
          score: claims.score,
          sessionId: claims.sessionId,
          generation: claims.generation,
        },
      },
      JWS_TYPES.token,
      signing.key,
      signing.kid,
    );
    return { token, jti, expiresAt: exp * 1000 };
  }

  /** Any other document the verifier vouches for (the revocation list), signed like its tokens. */
  signDocument(payload: Record<string, unknown>, typ: string, nowMs: number): string {
    const signing = signingKeyAt(this.keys, nowMs)!;
    return signJws({ iss: this.issuer, iat: Math.floor(nowMs / 1000), ...payload }, typ, signing.key, signing.kid);
  }

  /** The verified claims, or undefined for any token that is not one of ours and current. */
  async verify(token: string, nowMs: number): Promise<jose.JWTPayload | undefined> {
    if (!isCanonicalCompact(token)) return undefined;
    try {
      const { payload } = await jose.jwtVerify(token, this.keySet, {
        issuer: this.issuer,
        audience: this.audience,
        algorithms: [...ALGS],
        typ: JWS_TYPES.token,
        currentDate: new Date(nowMs),
      });
      return payload;
    } catch {
      return undefined;
    }
  }
}
