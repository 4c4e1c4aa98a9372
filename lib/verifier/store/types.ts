/**
 * What the verifier needs from a database. Methods are async so a networked store (PostgreSQL)
 * can implement the same interface; the SQLite store answers synchronously underneath.
 */
import type { Alg } from '../../crypto/keys';
import type {
  DeviceKey,
  DeviceRecord,
  DeviceState,
  DeviceStatus,
  NonceOutcome,
  NonceRecord,
  OutboxEvent,
  SessionRecord,
} from '../types';

export interface SigningKeyRecord {
  kid: string;
  /** What the key signs tokens with. */
  alg: Alg;
  /** hex of the 32-byte Ed25519 seed or P-256 scalar: the verifier's own secret, never served. */
  seed: string;
  /** Published in the JWKS from here on. */
  createdAt: number;
  /** Signs tokens from here on (until a newer key's `signsFrom`): later than `createdAt` so caches learn it first. */
  signsFrom: number;
}

/** The verifier's certificate authority as the store keeps it, so every process issues with one CA. */
export interface AuthorityRecord {
  /** `generated`, or `pkcs11:<thumbprint>` for a CA key held in an HSM. */
  id: string;
  alg: Alg;
  /** hex of the CA key's 32 secret bytes when the verifier made and keeps it; null when the key is elsewhere. */
  secret: string | null;
  /** DER, base64. */
  certificate: string;
  createdAt: number;
}

/** A certificate the verifier issued: the CRL lists those still valid whose device is revoked. */
export interface CertificateRecord {
  serial: string;
  deviceId: string;
  sessionId: string;
  issuedAt: number;
  notAfter: number;
}

/** What a key rotation changes, decided from the keys the store holds at that moment. */
export interface KeyRotation {
  add?: SigningKeyRecord;
  /** Kids of keys whose last token has expired. */
  remove?: string[];
}

/** Work waiting in the outbox, for metrics. */
export interface OutboxStats {
  /** Events not yet turned into deliveries. */
  unfanned: number;
  pending: number;
  dead: number;
}

export interface PurgeBefore {
  noncesExpired: number;
  /** Certificates that expired before then (a CRL lists only valid ones). */
  certificatesExpired: number;
  sessions: number;
  /** Events with no delivery still pending, and their delivered deliveries. */
  deliveredEvents: number;
  /** Deliveries that ran out of attempts, kept for an operator to replay until then. */
  deadDeliveries: number;
}

export interface PurgeCounts {
  nonces: number;
  certificates: number;
  sessions: number;
  events: number;
  deliveries: number;
}

/** A device's standing for token checks: tokens of an older generation, or any while revoked, are dead. */
export interface RevocationRecord {
  deviceId: string;
  status: DeviceStatus;
  generation: number;
}

/** Who changed a device's status, and why: kept with the device and sent with the event. */
export interface AuditEntry {
  /** The Node-RED user, or `admin-api` for a call with the admin key. */
  actor: string;
  reason?: string;
}

/** What the audit trail records: a status a device was set to, or a change of its key. */
export type AuditAction = DeviceStatus | 'rekey_allowed' | 'rekeyed' | 'key_changed';

export interface AuditRecord extends AuditEntry {
  deviceId: string;
  action: AuditAction;
  at: number;
}

export interface DeviceQuery {
  offset: number;
  limit: number;
  status?: DeviceStatus;
  /** A part of the device id. */
  search?: string;
}

/** A device with its latest attestation, for a fleet view. */
export interface DeviceSummary extends DeviceRecord {
  lastSession?: SessionRecord;
}

export type SubscriberStatus = 'active' | 'disabled';

/** A webhook receiver the verifier delivers its events to. Its secret lives in configuration, not here. */
export interface SubscriberRecord {
  /** Derived from the URL, stable across restarts. */
  id: string;
  url: string;
  status: SubscriberStatus;
  /** Why delivery stopped (it answered 410 Gone). */
  disabledReason?: string;
  /** Still in the verifier's configuration. */
  configured: boolean;
  createdAt: number;
  updatedAt: number;
}

export type DeliveryStatus = 'pending' | 'delivered' | 'dead';

/** One event on its way to one subscriber. */
export interface DeliveryRecord {
  id: number;
  eventId: string;
  type: string;
  subscriberId: string;
  status: DeliveryStatus;
  attempts: number;
  nextAttemptAt: number;
  lastError?: string;
  lastStatus?: number;
  createdAt: number;
  deliveredAt?: number;
}

/** A delivery leased to one sender, with what it needs to send. */
export interface ClaimedDelivery extends DeliveryRecord {
  url: string;
  /** The event body, as stored: the exact bytes every attempt sends. */
  body: string;
}

export interface DeliveryOutcome {
  status: DeliveryStatus;
  /** When `status` is pending: the next attempt. */
  nextAttemptAt?: number;
  error?: string;
  httpStatus?: number;
}

/**
 * Every event of a device carries `data.deviceSeq`, one more than the device's previous event
 * (gaps allowed), written in the transaction that writes the event: receivers order a device's
 * events by it whatever order deliveries arrive in. Stores set it on the event they are given.
 */
export interface VerifierStore {
  /** Inserts the device unless the id exists; false when it did. Writes the event in the same transaction. */
  insertDevice(device: DeviceRecord, event: OutboxEvent): Promise<boolean>;
  getDevice(deviceId: string): Promise<DeviceRecord | undefined>;
  /** A page of devices by id, with the total that match. */
  listDevices(query: DeviceQuery): Promise<{ total: number; devices: DeviceSummary[] }>;
  /** The device's latest sessions and status changes, newest first. */
  deviceHistory(deviceId: string, limit: number): Promise<{ sessions: SessionRecord[]; audit: AuditRecord[] }>;
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
    audit?: AuditEntry,
  ): Promise<boolean>;

  /**
   * Opens a re-key window until `until` for a device that is not revoked: its next registration
   * with another key replaces the key. False when there is no such device, or it is revoked.
   */
  allowRekey(deviceId: string, until: number, event: OutboxEvent, now: number, audit: AuditEntry): Promise<boolean>;
  /**
   * Replaces the key of a device that still has `oldThumbprint`, is not revoked and (with
   * `inWindow`) has an open re-key window, and closes the window; bumps the generation, so every
   * token of the old key is dead. False when any of that does not hold.
   */
  replaceDeviceKey(
    deviceId: string,
    oldThumbprint: string,
    key: DeviceKey,
    options: { inWindow: boolean },
    event: OutboxEvent,
    now: number,
    audit: AuditEntry & { action: AuditAction },
  ): Promise<boolean>;
  /** Devices that are revoked or ever were (generation above 0): what tokens' revocation depends on. */
  listRevocations(): Promise<RevocationRecord[]>;

  insertNonce(nonce: NonceRecord): Promise<void>;
  /**
   * The atomic heart of replay protection: consumes the nonce if it was issued to the device, is
   * unused and unexpired, and the device is still in `device`'s status and generation; in the same
   * transaction it records the session and event `decide` returns. Otherwise nothing is written
   * (a replay costs one failed update), and the answer says why: the nonce's outcome, or
   * `device_changed` when the device was revoked, reinstated or re-keyed since it was read.
   */
  consumeNonceAndRecord(
    nonce: string,
    device: DeviceState,
    now: number,
    decide: () => { session: SessionRecord; event: OutboxEvent },
  ): Promise<{ outcome: NonceOutcome | 'device_changed'; session?: SessionRecord }>;
  /** Records a session that consumed no nonce (bad signature, unknown device). */
  recordSession(session: SessionRecord, event: OutboxEvent): Promise<void>;

  /** Deletes nonces that expired, sessions and delivered events created before the given times. */
  purge(before: PurgeBefore): Promise<PurgeCounts>;

  /**
   * Reads every token-signing key and applies what `plan` makes of them, in one transaction that
   * excludes every other process's rotation (so N processes starting at once create one key).
   * Returns the keys after the change, oldest `signsFrom` first.
   */
  rotateSigningKeys(plan: (keys: SigningKeyRecord[]) => KeyRotation): Promise<SigningKeyRecord[]>;

  /** The authority stored under `record.id`, stored now as `record` if there is none (first writer wins). */
  ensureAuthority(record: AuthorityRecord): Promise<AuthorityRecord>;
  recordCertificate(certificate: CertificateRecord): Promise<void>;
  /** Certificates still valid at `now` whose device is revoked, with when it was revoked (its last change). */
  revokedCertificates(now: number): Promise<Array<{ serial: string; revokedAt: number }>>;

  /** Makes `subscribers` the configured set: new ones are added active, absent ones kept (with their history) but unconfigured. */
  syncSubscribers(subscribers: Array<{ id: string; url: string }>, now: number): Promise<void>;
  listSubscribers(): Promise<SubscriberRecord[]>;
  /** False when there is no such subscriber. */
  setSubscriberStatus(id: string, status: SubscriberStatus, reason: string | null, now: number): Promise<boolean>;
  /**
   * Turns up to `limit` outbox events not yet fanned out into one pending delivery per active,
   * configured subscriber; returns how many events it took.
   */
  fanOut(limit: number, now: number): Promise<number>;
  /**
   * Leases up to `limit` due deliveries (pending, next attempt reached, no live lease) to the
   * caller until `now + leaseMs`, counting the attempt. Several processes may claim at once; each
   * delivery goes to one of them, and comes back after the lease if its sender died. `skip`:
   * subscriber ids whose deliveries wait (their receiver is failing).
   */
  claimDeliveries(now: number, limit: number, leaseMs: number, skip?: string[]): Promise<ClaimedDelivery[]>;
  /** Records attempts' outcomes, several in one transaction. */
  finishDeliveries(outcomes: Array<{ id: number; outcome: DeliveryOutcome }>, now: number): Promise<void>;
  /** The earliest next attempt of a delivery no one holds a lease on, if any, `skip`ping those subscribers. */
  nextDeliveryAt(now: number, skip?: string[]): Promise<number | undefined>;
  listDeliveries(filter: { status?: DeliveryStatus; limit: number }): Promise<DeliveryRecord[]>;
  /** Makes a subscriber's pending deliveries due now (it answers again after failing); how many. */
  expediteDeliveries(subscriberId: string, now: number): Promise<number>;
  /** Sends a dead (or delivered) delivery again, from its first attempt; false when there is none such. */
  replayDelivery(id: number, now: number): Promise<boolean>;

  outboxStats(): Promise<OutboxStats>;

  /** The database answers and holds the schema version this code was written for; throws otherwise. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
