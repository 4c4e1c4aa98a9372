/**
 * The verifier's revocation list, `GET /v1/revocations`: the protocol piece both sides share.
 * Every device that is revoked, or ever was, with its generation; a token is dead when its device
 * is revoked now or the token was issued in an older generation (before a revocation, even one
 * since reinstated). The list is a compact JWS signed with the verifier's token key, so a receiver
 * checks it against the JWKS it already trusts, and it names devices only by a digest of their
 * id: anyone may fetch it, no admin key sits in a receiving flow, and it lists no fleet.
 */
import * as crypto from 'node:crypto';
import * as s from './schema';

export const REVOCATIONS_TYP = 'm2m-revocations+jwt';

/** How a device is named in the list: 128 bits of SHA-256 over a label and its id, base64url. */
export function deviceHash(deviceId: string): string {
  return crypto
    .createHash('sha256')
    .update(`m2m-revocation\0${deviceId}`)
    .digest()
    .subarray(0, 16)
    .toString('base64url');
}

/** `[generation, revoked now: 1 or 0]` per device hash. */
export type RevocationEntries = Record<string, [number, 0 | 1]>;

export interface RevocationList {
  iss: string;
  /** When the verifier built it (seconds). */
  iat: number;
  devices: RevocationEntries;
}

export const revocationListSchema = s.object({
  iss: s.string({ maxLength: 2048 }),
  iat: s.number({ integer: true, min: 0, max: 1e11 }),
  devices: s.record(s.array(s.number({ integer: true, min: 0, max: 2 ** 31 }), { maxItems: 2 }), {
    maxKeys: 10_000_000,
    key: s.string({ pattern: /^[A-Za-z0-9_-]{22}$/, format: 'device hash' }),
  }),
});

export function revocationEntries(
  devices: ReadonlyArray<{ deviceId: string; status: string; generation: number }>,
): RevocationEntries {
  const entries: RevocationEntries = {};
  for (const device of devices)
    entries[deviceHash(device.deviceId)] = [device.generation, device.status === 'revoked' ? 1 : 0];
  return entries;
}

/** Whether a token of `deviceId` issued in `generation` is dead by this list. */
export function revokedBy(
  entries: Readonly<Record<string, readonly number[]>>,
  deviceId: string,
  generation: number,
): boolean {
  const entry = entries[deviceHash(deviceId)];
  return !!entry && (entry[1] === 1 || generation < entry[0]);
}
