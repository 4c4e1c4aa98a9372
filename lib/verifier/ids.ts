/**
 * Identifiers the verifier writes on every attestation. Time-ordered (RFC 9562 UUIDv7, and a
 * nonce with a 48-bit millisecond prefix before 208 random bits) so that inserts land at the right
 * edge of their index instead of on a random leaf: fewer pages touched per write, a smaller WAL.
 * Still unguessable: the random part is what a nonce's or id's secrecy rests on.
 */
import * as crypto from 'node:crypto';

const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let used = POOL_BYTES;

/**
 * `n` bytes from the CSPRNG, drawn from a 4 KiB pool refilled when spent: one call into OpenSSL
 * per 4 KiB rather than per id, as Node's own randomUUID does. Each byte is handed out once.
 */
function randomBytes(n: number): Buffer {
  if (used + n > POOL_BYTES) {
    crypto.randomFillSync(pool);
    used = 0;
  }
  const bytes = Buffer.from(pool.subarray(used, used + n));
  used += n;
  return bytes;
}

/** RFC 9562 §5.7: 48-bit Unix milliseconds, version 7, variant 10, 74 random bits. */
export function uuidv7(nowMs: number): string {
  const bytes = randomBytes(16);
  bytes.writeUIntBE(nowMs, 0, 6);
  bytes[6] = (bytes[6] & 0x0f) | 0x70;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A challenge nonce: 32 bytes, base64url, the first 6 the issue time. */
export function orderedNonce(nowMs: number): string {
  const bytes = randomBytes(32);
  bytes.writeUIntBE(nowMs, 0, 6);
  return bytes.toString('base64url');
}
