/**
 * The device side of identity API v1: the signed registration and the challenge-response
 * attestation, built from a keystore identity and a fingerprint. Framework-free, used by the
 * provision and attest nodes and by the end-to-end tests.
 */
import { JWS_TYPES, signJws } from '../crypto/jws';
import type { TinymlEvidence } from '../verifier/workflow';
import { ApiError, type AttestAnswer, type IdentityApiClient, type RegisterAnswer } from './api-client';
import { digestComponents, type Fingerprint } from './fingerprint';
import type { DeviceIdentity } from './keystore';

export type { TinymlEvidence } from '../verifier/workflow';

/** What a registration (or a key change) states of the device: its key, fingerprint and metadata. */
function deviceClaims(
  identity: DeviceIdentity,
  rawComponents: Record<string, string>,
  metadata: Record<string, unknown>,
  now: number,
) {
  const fingerprint: Fingerprint = digestComponents(identity.fingerprintSalt, rawComponents);
  return {
    deviceId: identity.deviceId,
    jwk: identity.privateKey.publicKey.toJwk(),
    fingerprint,
    // Where the key lives, in the device's own words (the fleet shows it; a workflow may ask for hardware).
    metadata: { ...metadata, keyStorage: identity.storage },
    iat: Math.floor(now / 1000),
  };
}

export function buildRegistration(
  identity: DeviceIdentity,
  rawComponents: Record<string, string>,
  metadata: Record<string, unknown> = {},
  now = Date.now(),
): string {
  return signJws(deviceClaims(identity, rawComponents, metadata, now), JWS_TYPES.registration, identity.privateKey);
}

/**
 * A key change (POST /v1/devices/{id}/key): the new key signs the device's claims, and inside
 * them the registered key signs its consent to exactly that new key.
 */
export function buildKeyChange(
  previous: DeviceIdentity,
  next: DeviceIdentity,
  rawComponents: Record<string, string>,
  metadata: Record<string, unknown> = {},
  now = Date.now(),
): string {
  const consent = signJws(
    { deviceId: previous.deviceId, newKey: next.privateKey.publicKey.thumbprint(), iat: Math.floor(now / 1000) },
    JWS_TYPES.keyChange,
    previous.privateKey,
  );
  return signJws(
    { ...deviceClaims(next, rawComponents, metadata, now), previous: consent },
    JWS_TYPES.keyChange,
    next.privateKey,
  );
}

export interface AttestationInput {
  /** The verifier's base URL (no trailing slash): the attestation's audience. */
  audience: string;
  nonce: string;
  rawComponents: Record<string, string>;
  tinyml?: TinymlEvidence;
  /** A client certificate to ask for: a PKCS#10 request for a TLS key (DER), issued only with an approval. */
  certificateRequest?: Uint8Array;
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
      ...(input.certificateRequest
        ? { certificate: { csr: Buffer.from(input.certificateRequest).toString('base64url') } }
        : {}),
    },
    JWS_TYPES.attestation,
    identity.privateKey,
  );
}

/**
 * Register the device; idempotent (the verifier answers 200 for the same key again). A device
 * whose key moved (a file key into a TPM or an HSM) names the `previous` identity: when the
 * verifier still knows that key, both sign the change and the device keeps its registration.
 */
export async function provisionDevice(
  client: IdentityApiClient,
  identity: DeviceIdentity,
  rawComponents: Record<string, string>,
  metadata?: Record<string, unknown>,
  previous?: DeviceIdentity,
): Promise<RegisterAnswer & { keyChanged?: boolean }> {
  try {
    return await client.register(buildRegistration(identity, rawComponents, metadata));
  } catch (err) {
    if (!previous || !(err instanceof ApiError) || err.code !== 'key_conflict') throw err;
    const changed = await client.changeKey(
      identity.deviceId,
      buildKeyChange(previous, identity, rawComponents, metadata),
    );
    return { ...changed, created: false, keyChanged: true };
  }
}

/** Challenge → signed attestation → decision (+ token when approved). */
export async function attestDevice(
  client: IdentityApiClient,
  identity: DeviceIdentity,
  rawComponents: Record<string, string>,
  tinyml?: TinymlEvidence,
  certificateRequest?: Uint8Array,
): Promise<AttestAnswer> {
  const { nonce } = await client.challenge(identity.deviceId);
  return client.attest(
    buildAttestation(identity, { audience: client.audience, nonce, rawComponents, tinyml, certificateRequest }),
  );
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
