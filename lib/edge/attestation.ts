/**
 * The device side of identity API v1: the signed registration and the challenge-response
 * attestation, built from a keystore identity and a fingerprint. Framework-free, used by the
 * provision and attest nodes and by the end-to-end tests.
 */
import { JWS_TYPES, signJws } from '../crypto/jws';
import type { TinymlEvidence } from '../verifier/workflow';
import type { AttestAnswer, IdentityApiClient, RegisterAnswer } from './api-client';
import { digestComponents, type Fingerprint } from './fingerprint';
import type { DeviceIdentity } from './keystore';

export type { TinymlEvidence } from '../verifier/workflow';

export function buildRegistration(
  identity: DeviceIdentity,
  rawComponents: Record<string, string>,
  metadata: Record<string, unknown> = {},
  now = Date.now(),
): string {
  const fingerprint: Fingerprint = digestComponents(identity.fingerprintSalt, rawComponents);
  return signJws(
    {
      deviceId: identity.deviceId,
      jwk: identity.privateKey.publicKey.toJwk(),
      fingerprint,
      metadata,
      iat: Math.floor(now / 1000),
    },
    JWS_TYPES.registration,
    identity.privateKey,
  );
}

export interface AttestationInput {
  /** The verifier's base URL (no trailing slash): the attestation's audience. */
  audience: string;
  nonce: string;
  rawComponents: Record<string, string>;
  tinyml?: TinymlEvidence;
  now?: number;
}

export function buildAttestation(identity: DeviceIdentity, input: AttestationInput): string {
  const evidence: Record<string, unknown> = {
    fingerprint: { components: digestComponents(identity.fingerprintSalt, input.rawComponents).components },
  };
  if (input.tinyml) evidence.tinyml = input.tinyml;
  return signJws(
    {
      iss: identity.deviceId,
      aud: input.audience,
      nonce: input.nonce,
      iat: Math.floor((input.now ?? Date.now()) / 1000),
      evidence,
    },
    JWS_TYPES.attestation,
    identity.privateKey,
  );
}

/** Register the device; idempotent (the verifier answers 200 for the same key again). */
export async function provisionDevice(
  client: IdentityApiClient,
  identity: DeviceIdentity,
  rawComponents: Record<string, string>,
  metadata?: Record<string, unknown>,
): Promise<RegisterAnswer> {
  return client.register(buildRegistration(identity, rawComponents, metadata));
}

/** Challenge → signed attestation → decision (+ token when approved). */
export async function attestDevice(
  client: IdentityApiClient,
  identity: DeviceIdentity,
  rawComponents: Record<string, string>,
  tinyml?: TinymlEvidence,
): Promise<AttestAnswer> {
  const { nonce } = await client.challenge(identity.deviceId);
  return client.attest(buildAttestation(identity, { audience: client.audience, nonce, rawComponents, tinyml }));
}

/**
 * msg.m2m.tinyml as attestation evidence. A check that ran and gave no score (warming up, out of
 * distribution, an invalid reading) is evidence too, sent with score null: dropping it would let
 * the verifier's workflow skip the step and approve (fail open).
 */
export function evidenceFrom(tinyml: unknown): TinymlEvidence | undefined {
  if (typeof tinyml !== 'object' || tinyml === null) return undefined;
  const { score, model, trusted, reason } = tinyml as Record<string, unknown>;
  // A behaviour check always names its model: anything else (`{}`, a flow's own object) is not
  // a check that ran, and must not make the device look unscored.
  if (typeof model !== 'string' || !model) return undefined;
  return {
    score: typeof score === 'number' && Number.isFinite(score) ? Math.min(1, Math.max(0, score)) : null,
    model: model.slice(0, 128),
    ...(typeof trusted === 'boolean' ? { trusted } : {}),
    ...(typeof reason === 'string' ? { reason: reason.slice(0, 64) } : {}),
  };
}
