/**
 * The receiving side of continuous authentication, free of Node-RED: checks a message stamped by
 * m2m-reauth-timer. The token (an EdDSA at+jwt of the verifier) against the verifier's JWKS
 * (jose's remote key set: cached, refetched on an unknown kid with a cooldown), its issuer,
 * audience and expiry, and, when configured, its revocation by introspection (cached briefly);
 * then the per-message proof (lib/proof) against the token's `cnf.jkt`, with a replay cache of
 * proof ids. A verified token is cached until it expires, so a message costs one proof check.
 */
import * as jose from 'jose';
import { ALGS, type PublicKey } from '../crypto/keys';
import { isCanonicalCompact } from '../crypto/jws';
import { checkProof, type ProofFailure, sha256 } from '../proof';
import { MemoryReplayCache, type ReplayCache } from './replay-cache';

export type TokenFailure =
  | 'token_missing'
  | 'token_malformed'
  | 'token_bad_signature'
  | 'token_unknown_key'
  | 'token_expired'
  | 'token_wrong_issuer'
  | 'token_wrong_audience'
  | 'token_revoked'
  | 'jwks_unavailable'
  | 'introspection_unavailable'
  | 'revocations_unavailable'
  | 'proof_missing'
  | 'proof_replayed'
  | 'replay_cache_full'
  | ProofFailure;

export interface TokenClaims extends jose.JWTPayload {
  sub: string;
  exp: number;
  cnf: { jkt: string };
}

export type CheckResult =
  | { valid: true; deviceId: string; claims: TokenClaims; proof?: { jti: string; iat: number } }
  | { valid: false; reason: TokenFailure; deviceId?: string };

export interface CheckInput {
  token?: string;
  proof?: string;
  payload: unknown;
  /** MQTT topic or HTTP path the message arrived on. */
  target: string;
}

export interface TokenCheckOptions {
  /** The verifier's JWKS, or (for tests and in-process use) a key set function. */
  jwks: URL | jose.JWTVerifyGetKey;
  issuer: string;
  audience: string;
  /** Resolves whether the verifier still considers the token active (RFC 7662). */
  introspect?: (token: string) => Promise<boolean>;
  /**
   * The verifier's revocation list as this receiver knows it (lib/revocation-watch): whether a
   * token of a device and generation is revoked, undefined while the list is not current.
   */
  revocations?: { ready: Promise<void>; isRevoked(deviceId: string, generation: number): boolean | undefined };
  /** What a token gets while the revocation list is not current: refused (the default) or accepted. */
  whenRevocationsUnknown?: 'refuse' | 'accept';
  /** Where accepted proof ids are kept (./replay-cache); in memory by default. */
  replayCache?: ReplayCache;
  requireProof: boolean;
  /** How old a proof may be (s), and how far ahead of this clock. */
  proofMaxAgeSeconds?: number;
  proofMaxAheadSeconds?: number;
  /** How long an introspection answer is trusted (ms). */
  introspectionCacheMs?: number;
  clockToleranceSeconds?: number;
  now?: () => number;
}

interface VerifiedToken {
  claims: TokenClaims;
  tokenHash: string;
}

const MAX_CACHED_TOKENS = 10_000;

/** jose's error codes as our reasons. */
function tokenFailure(err: unknown): TokenFailure {
  const code = (err as { code?: string }).code;
  const claim = (err as { claim?: string }).claim;
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return 'token_expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return claim === 'iss'
        ? 'token_wrong_issuer'
        : claim === 'aud'
          ? 'token_wrong_audience'
          : claim === 'nbf' || claim === 'iat'
            ? 'token_expired'
            : 'token_malformed';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'token_bad_signature';
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return 'token_unknown_key';
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
      return 'jwks_unavailable';
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return 'token_malformed';
    default:
      // A fetch that failed (connection refused, a garbage answer) has no jose code.
      return 'jwks_unavailable';
  }
}

export class TokenChecker {
  private readonly keySet: jose.JWTVerifyGetKey;
  private readonly verified = new Map<string, VerifiedToken>();
  private readonly introspected = new Map<string, { active: boolean; at: number }>();
  /** Look-ups under way, so a burst of messages with one new token costs one of each. */
  private readonly verifying = new Map<string, Promise<VerifiedToken | { reason: TokenFailure }>>();
  private readonly introspecting = new Map<string, Promise<boolean | undefined>>();
  private readonly replays: ReplayCache;
  private readonly keys = new Map<string, PublicKey>();
  private readonly now: () => number;

  constructor(private readonly options: TokenCheckOptions) {
    this.keySet =
      options.jwks instanceof URL
        ? jose.createRemoteJWKSet(options.jwks, {
            cooldownDuration: 30_000,
            cacheMaxAge: 10 * 60_000,
            timeoutDuration: 5000,
          })
        : options.jwks;
    this.now = options.now ?? Date.now;
    this.replays = options.replayCache ?? new MemoryReplayCache();
  }

  async check(input: CheckInput): Promise<CheckResult> {
    if (!input.token) return { valid: false, reason: 'token_missing' };
    const token = await this.verifyToken(input.token);
    if ('reason' in token) return { valid: false, reason: token.reason };
    const deviceId = token.claims.sub;
    if (this.options.revocations) {
      await this.options.revocations.ready;
      const generation = (token.claims.m2m as { generation?: unknown } | undefined)?.generation;
      const revoked = this.options.revocations.isRevoked(deviceId, typeof generation === 'number' ? generation : 0);
      if (revoked) return { valid: false, reason: 'token_revoked', deviceId };
      if (revoked === undefined && this.options.whenRevocationsUnknown !== 'accept')
        return { valid: false, reason: 'revocations_unavailable', deviceId };
    }
    if (this.options.introspect) {
      const active = await this.active(input.token);
      if (active === undefined) return { valid: false, reason: 'introspection_unavailable', deviceId };
      if (!active) return { valid: false, reason: 'token_revoked', deviceId };
    }
    if (input.proof === undefined) {
      return this.options.requireProof
        ? { valid: false, reason: 'proof_missing', deviceId }
        : { valid: true, deviceId, claims: token.claims };
    }
    const now = this.now();
    const maxAge = this.options.proofMaxAgeSeconds ?? 300;
    const maxAhead = this.options.proofMaxAheadSeconds ?? 60;
    const checked = checkProof(input.proof, {
      jkt: token.claims.cnf.jkt,
      tokenHash: token.tokenHash,
      payload: input.payload,
      target: input.target,
      now,
      maxAgeSeconds: maxAge,
      maxAheadSeconds: maxAhead,
      keys: this.keys,
    });
    if (!checked.ok) return { valid: false, reason: checked.reason, deviceId };
    // Remembered until the proof would be refused as too old anyway.
    const until = (checked.proof.iat + maxAge) * 1000 + 1000;
    const remembered = this.replays.remember(`${token.claims.cnf.jkt}:${checked.proof.jti}`, until, now);
    if (remembered === 'replay') return { valid: false, reason: 'proof_replayed', deviceId };
    if (remembered === 'full') return { valid: false, reason: 'replay_cache_full', deviceId };
    return { valid: true, deviceId, claims: token.claims, proof: checked.proof };
  }

  close(): void {
    this.replays.close();
  }

  /** The token's claims, from the cache while it lasts, else verified against the JWKS. */
  private async verifyToken(token: string): Promise<VerifiedToken | { reason: TokenFailure }> {
    if (!isCanonicalCompact(token)) return { reason: 'token_malformed' };
    const nowSeconds = this.now() / 1000;
    const cached = this.verified.get(token);
    if (cached) {
      if (cached.claims.exp + (this.options.clockToleranceSeconds ?? 30) >= nowSeconds) return cached;
      this.verified.delete(token);
      return { reason: 'token_expired' };
    }
    return coalesced(this.verifying, token, () => this.verifyAgainstKeys(token));
  }

  private async verifyAgainstKeys(token: string): Promise<VerifiedToken | { reason: TokenFailure }> {
    let payload: jose.JWTPayload;
    try {
      ({ payload } = await jose.jwtVerify(token, this.keySet, {
        issuer: this.options.issuer,
        audience: this.options.audience,
        algorithms: [...ALGS],
        typ: 'at+jwt',
        requiredClaims: ['sub', 'exp', 'cnf'],
        clockTolerance: this.options.clockToleranceSeconds ?? 30,
        currentDate: new Date(this.now()),
      }));
    } catch (err) {
      return { reason: tokenFailure(err) };
    }
    const jkt = (payload.cnf as { jkt?: unknown } | undefined)?.jkt;
    if (typeof payload.sub !== 'string' || typeof payload.exp !== 'number' || typeof jkt !== 'string')
      return { reason: 'token_malformed' };
    const entry = { claims: payload as TokenClaims, tokenHash: sha256(token) };
    if (this.verified.size >= MAX_CACHED_TOKENS) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(token, entry);
    return entry;
  }

  private async active(token: string): Promise<boolean | undefined> {
    const now = this.now();
    const cached = this.introspected.get(token);
    if (cached && now - cached.at < (this.options.introspectionCacheMs ?? 10_000)) return cached.active;
    return coalesced(this.introspecting, token, async () => {
      let active: boolean;
      try {
        active = await this.options.introspect!(token);
      } catch {
        return undefined;
      }
      if (this.introspected.size >= MAX_CACHED_TOKENS) this.introspected.delete(this.introspected.keys().next().value!);
      this.introspected.set(token, { active, at: now });
      return active;
    });
  }
}

/** One `work` per key at a time: callers that come while it runs share its answer. */
function coalesced<T>(running: Map<string, Promise<T>>, key: string, work: () => Promise<T>): Promise<T> {
  let pending = running.get(key);
  if (!pending) {
    pending = work().finally(() => running.delete(key));
    running.set(key, pending);
  }
  return pending;
}
