/** Schemas of everything the verifier accepts from the network: bodies and signed payloads. */
import * as s from '../schema';

const deviceId = s.string({ pattern: s.patterns.deviceId, format: 'device id (letters, digits, . _ : -, up to 128)' });
const hexDigest = s.string({ pattern: /^[0-9a-f]{64}$/, format: 'hex SHA-256 digest' });
const components = s.record(hexDigest, { maxKeys: 64, key: s.string({ minLength: 1, maxLength: 128 }) });
const seconds = s.number({ integer: true, min: 0, max: 1e11 });

export const registrationBody = s.object({ registration: s.string({ maxLength: 64 * 1024 }) });
export const challengeBody = s.object({ deviceId });
export const attestationBody = s.object({ attestation: s.string({ maxLength: 64 * 1024 }) });
export const introspectionBody = s.object({ token: s.string({ maxLength: 16 * 1024 }) });

export const keyChangeBody = s.object({ keyChange: s.string({ maxLength: 64 * 1024 }) });

/** What a device says of itself when it registers, and again when it changes its key. */
const deviceClaims = {
  deviceId,
  jwk: s.unknownValue(),
  fingerprint: s.object({ salt: s.string({ pattern: /^([0-9a-f]{2}){8,64}$/, format: 'hex salt' }), components }),
  metadata: s.optional(s.jsonValue({ maxDepth: 8, maxBytes: 16 * 1024 })),
  iat: seconds,
};

/** Signed by the new key; `previous` is the old key's consent (keyChangeConsent), a JWS itself. */
export const keyChangePayload = s.object({ ...deviceClaims, previous: s.string({ maxLength: 16 * 1024 }) });

/** Signed by the registered key: it hands the device over to the key with thumbprint `newKey`. */
export const keyChangeConsent = s.object({
  deviceId,
  newKey: s.string({ pattern: /^[A-Za-z0-9_-]{43}$/, format: 'RFC 7638 thumbprint' }),
  iat: seconds,
});

export const registrationPayload = s.object(deviceClaims);

export const attestationPayload = s.object({
  iss: deviceId,
  aud: s.string({ maxLength: 2048 }),
  nonce: s.string({ pattern: s.patterns.base64url, minLength: 16, maxLength: 128, format: 'base64url nonce' }),
  iat: seconds,
  evidence: s.optional(
    s.object({
      fingerprint: s.optional(
        s.object({ salt: s.optional(s.string({ pattern: s.patterns.hex, maxLength: 128 })), components }),
      ),
      // score null: the edge check ran but gave no score (warming up, out of distribution, ...).
      tinyml: s.optional(
        s.object({
          score: s.nullable(s.number({ min: 0, max: 1 })),
          model: s.string({ maxLength: 128 }),
          trusted: s.optional(s.boolean()),
          reason: s.optional(s.string({ maxLength: 64 })),
        }),
      ),
    }),
  ),
  // A client certificate for a TLS key (PKCS#10, base64url DER), issued only if this is approved.
  certificate: s.optional(
    s.object({
      csr: s.string({ pattern: s.patterns.base64url, minLength: 64, maxLength: 4096, format: 'base64url DER' }),
      lifetime: s.optional(s.number({ integer: true, min: 60, max: 1e9 })),
    }),
  ),
});

/** The admin API's webhook calls: path segments and query strings. */
export const subscriberIdSchema = s.string({ pattern: /^sub_[0-9a-f]{16}$/, format: 'subscriber id' });
export const deliveryIdSchema = s.string({ pattern: /^[1-9]\d{0,15}$/, format: 'delivery id' });
export const deliveryQuery = s.object({
  status: s.optional(s.literal('pending', 'delivered', 'dead')),
  limit: s.optional(s.string({ pattern: /^(?:[1-9]\d{0,2}|1000)$/, format: 'limit of 1-1000' })),
});

/** GET /v1/devices: a page of the fleet. */
export const deviceQuery = s.object({
  offset: s.optional(s.string({ pattern: /^(?:0|[1-9]\d{0,8})$/, format: 'offset of 0 or more' })),
  limit: s.optional(s.string({ pattern: /^(?:[1-9]\d{0,2}|1000)$/, format: 'limit of 1-1000' })),
  status: s.optional(s.literal('active', 'pending', 'revoked')),
  q: s.optional(s.string({ maxLength: 128 })),
});

/** The body of revoke, approve and reinstate: who (for the audit trail) and why, both optional. */
export const statusChangeBody = s.object({
  reason: s.optional(s.string({ maxLength: 500 })),
  actor: s.optional(s.string({ minLength: 1, maxLength: 128 })),
});

/** `--limits`: the unauthenticated calls' rate rules, each `{burst, perSecond}`. */
const rateRule = s.object({ burst: s.number({ min: 1, max: 1e9 }), perSecond: s.number({ min: 0, max: 1e9 }) });
export const limitsSchema = s.object({
  challengesPerDevice: s.optional(rateRule),
  challengesPerAddress: s.optional(rateRule),
  badSignaturesRecordedPerDevice: s.optional(rateRule),
  credentialFailuresPerAddress: s.optional(rateRule),
});

export { deviceId as deviceIdSchema };
