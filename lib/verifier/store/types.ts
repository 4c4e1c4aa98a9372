/**
 * What the verifier needs from a database. Methods are async so a networked store (PostgreSQL)
 * can implement the same interface; the SQLite store answers synchronously underneath.
 */
import type { DeviceRecord, DeviceStatus, NonceOutcome, NonceRecord, OutboxEvent, SessionRecord } from '../types';

export interface SigningKeyRecord {
  kid: string;
  /** hex of the 32-byte Ed25519 seed: the verifier's own secret, never served. */
  seed: string;
  createdAt: number;
}

export interface PurgeBefore {
  noncesExpired: number;
  sessions: number;
  deliveredEvents: number;
}

export interface PurgeCounts {
  nonces: number;
  sessions: number;
  events: number;
}

export interface VerifierStore {
  /** Inserts the device unless the id exists; false when it did. Writes the event in the same transaction. */
  insertDevice(device: DeviceRecord, event: OutboxEvent): Promise<boolean>;
  getDevice(deviceId: string): Promise<DeviceRecord | undefined>;
  listDevices(): Promise<DeviceRecord[]>;
  /**
   * Sets the status when the current one is in `from`; false when the device is absent or in
   * another status. Setting `revoked` also bumps the device's generation.
   */
  setDeviceStatus(
    deviceId: string,
    status: DeviceStatus,
    from: DeviceStatus[],
    event: OutboxEvent,
    now: number,
  ): Promise<boolean>;

  insertNonce(nonce: NonceRecord): Promise<void>;
  /**
   * The atomic heart of replay protection: consumes the nonce if it was issued to `deviceId`, is
   * unused and unexpired, and in the same transaction records the session and its event. When the
   * nonce cannot be consumed nothing is consumed, and `decide` is told why so that the session it
   * records is declined with that reason.
   */
  consumeNonceAndRecord(
    nonce: string,
    deviceId: string,
    now: number,
    decide: (outcome: NonceOutcome) => { session: SessionRecord; event: OutboxEvent },
  ): Promise<{ outcome: NonceOutcome; session: SessionRecord }>;
  /** Records a session that consumed no nonce (bad signature, unknown device). */
  recordSession(session: SessionRecord, event: OutboxEvent): Promise<void>;

  /** Deletes nonces that expired, sessions and delivered events created before the given times. */
  purge(before: PurgeBefore): Promise<PurgeCounts>;

  getOrCreateSigningKey(create: () => SigningKeyRecord): Promise<SigningKeyRecord>;
  pendingEvents(limit: number): Promise<OutboxEvent[]>;
  /** Liveness of the database itself. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
