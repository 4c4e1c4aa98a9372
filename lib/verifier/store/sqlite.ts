/**
 * The embedded store: one SQLite file (WAL), zero set-up, through lib/sqlite (node:sqlite, or
 * better-sqlite3 on older Nodes). Nonce consumption, the session and its outbox event are
 * written in one IMMEDIATE transaction, so the database (not an in-process lock) decides which of
 * several concurrent attestations wins, also across processes sharing the file.
 */
import { type SqliteDatabase, openSqlite } from '../../sqlite';
import { stampDeviceSeq } from '../events';
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
import {
  DELIVERY_COLUMNS,
  type DeliveryRow,
  type DeviceRow,
  type AuditRow,
  type NonceRow,
  type SessionRow,
  toAudit,
  toSession,
  type SubscriberRow,
  toDelivery,
  toDevice,
  toSubscriber,
  whyNotConsumed,
} from './rows';
import { schemaMismatch } from './schema-version';
import type {
  AuditAction,
  AuditEntry,
  AuditRecord,
  ClaimedDelivery,
  DeviceQuery,
  DeviceSummary,
  KeyRotation,
  OutboxStats,
  DeliveryOutcome,
  DeliveryRecord,
  DeliveryStatus,
  PurgeBefore,
  PurgeCounts,
  RevocationRecord,
  SigningKeyRecord,
  AuthorityRecord,
  CertificateRecord,
  SubscriberRecord,
  SubscriberStatus,
  VerifierStore,
} from './types';

/**
 * Versioned migrations, applied in order and recorded in SQLite's user_version. A database
 * written before versions were kept has user_version 0 and the tables of version 1, which
 * version 1's IF NOT EXISTS statements leave as they are.
 */
const MIGRATIONS = [
  `CREATE TABLE IF NOT EXISTS devices (
  device_id TEXT PRIMARY KEY,
  jwk TEXT NOT NULL,
  thumbprint TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  metadata TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('active', 'pending', 'revoked')),
  workflow TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
  nonce TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  consumed_at INTEGER
);
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at);
CREATE TABLE IF NOT EXISTS sessions (
  session_id TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  decision TEXT NOT NULL,
  reasons TEXT NOT NULL,
  score REAL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id TEXT NOT NULL UNIQUE,
  webhook_type TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  delivered_at INTEGER
);
CREATE TABLE IF NOT EXISTS signing_keys (
  kid TEXT PRIMARY KEY,
  seed TEXT NOT NULL,
  created_at INTEGER NOT NULL
);`,
  `ALTER TABLE devices ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS sessions_created ON sessions (created_at);
CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox (delivered_at) WHERE delivered_at IS NOT NULL;`,
  `DROP INDEX outbox_delivered;
ALTER TABLE outbox DROP COLUMN delivered_at;
ALTER TABLE outbox ADD COLUMN fanned_out INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_unfanned ON outbox (seq) WHERE fanned_out = 0;
CREATE INDEX outbox_created ON outbox (created_at);
CREATE TABLE subscribers (
  id TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
  disabled_reason TEXT,
  configured INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id TEXT NOT NULL,
  subscriber_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  lease_until INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  last_status INTEGER,
  created_at INTEGER NOT NULL,
  delivered_at INTEGER,
  UNIQUE (event_id, subscriber_id)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_status ON deliveries (status, id);
CREATE INDEX deliveries_created ON deliveries (created_at);`,
  `ALTER TABLE signing_keys ADD COLUMN signs_from INTEGER NOT NULL DEFAULT 0;
UPDATE signing_keys SET signs_from = created_at;`,
  `CREATE TABLE device_audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  device_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  action TEXT NOT NULL,
  actor TEXT NOT NULL,
  reason TEXT
);
CREATE INDEX device_audit_device ON device_audit (device_id, at);
CREATE INDEX sessions_device ON sessions (device_id, created_at);`,
  `ALTER TABLE devices ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN rekey_until INTEGER;
ALTER TABLE signing_keys ADD COLUMN alg TEXT NOT NULL DEFAULT 'EdDSA';`,
  `CREATE TABLE certificate_authority (
  id TEXT PRIMARY KEY,
  alg TEXT NOT NULL,
  secret TEXT,
  certificate TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE certificates (
  serial TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  session_id TEXT NOT NULL,
  issued_at INTEGER NOT NULL,
  not_after INTEGER NOT NULL
);
CREATE INDEX certificates_device ON certificates (device_id, not_after);
CREATE INDEX certificates_expiry ON certificates (not_after);`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Brings the database to `upTo` (this code's version unless a test asks for an older one) in one
 * IMMEDIATE transaction: the first of several processes opening the file migrates, the others
 * wait on the lock and find nothing left to do.
 */
export function migrateSqlite(db: SqliteDatabase, upTo = SCHEMA_VERSION): void {
  db.transaction(() => {
    const version = db.pragma('user_version') as number;
    if (version > SCHEMA_VERSION) throw schemaMismatch(version, SCHEMA_VERSION);
    for (let v = version; v < upTo; v++) db.exec(MIGRATIONS[v]);
    if (version < upTo) db.pragma(`user_version = ${upTo}`);
  });
}

export class SqliteStore implements VerifierStore {
  private readonly db: SqliteDatabase;
  private readonly statements;
  private pending: Array<{ work: () => unknown; resolve: (value: unknown) => void; reject: (err: unknown) => void }> =
    [];

  /** @param file a path, or ':memory:' */
  constructor(file: string) {
    // The database holds the verifier's token-signing key: owner-only, like a key file.
    this.db = openSqlite(file, { mode: 0o600 });
    // FULL: each commit reaches the disk before its answer goes out. Under NORMAL a power loss
    // could take back an approval already answered, nonce and all, and the same attestation could
    // then be approved again. Group commit pays the sync once per event-loop turn, not per write.
    this.db.pragma('synchronous = FULL');
    migrateSqlite(this.db);
    const db = this.db;
    this.statements = {
      insertDevice:
        db.prepare(`INSERT INTO devices (device_id, jwk, thumbprint, fingerprint, metadata, status, workflow, created_at, updated_at, event_seq)
        VALUES (@deviceId, @jwk, @thumbprint, @fingerprint, @metadata, @status, @workflow, @createdAt, @updatedAt, 1) ON CONFLICT (device_id) DO NOTHING`),
      nextEventSeq: db.prepare('UPDATE devices SET event_seq = event_seq + 1 WHERE device_id = ? RETURNING event_seq'),
      getDevice: db.prepare('SELECT * FROM devices WHERE device_id = ?'),
      listDevices: db.prepare(`SELECT * FROM devices
        WHERE (@status IS NULL OR status = @status) AND (@search IS NULL OR instr(device_id, @search) > 0)
        ORDER BY device_id LIMIT @limit OFFSET @offset`),
      countDevices: db.prepare(`SELECT count(*) AS total FROM devices
        WHERE (@status IS NULL OR status = @status) AND (@search IS NULL OR instr(device_id, @search) > 0)`),
      sessionsOf: db.prepare(
        'SELECT * FROM sessions WHERE device_id = ? ORDER BY created_at DESC, session_id DESC LIMIT ?',
      ),
      auditOf: db.prepare(
        'SELECT device_id, at, action, actor, reason FROM device_audit WHERE device_id = ? ORDER BY at DESC, id DESC LIMIT ?',
      ),
      insertAudit: db.prepare(
        'INSERT INTO device_audit (device_id, at, action, actor, reason) VALUES (@deviceId, @at, @action, @actor, @reason)',
      ),
      setStatus: db.prepare(`UPDATE devices SET status = @status, updated_at = @now,
        generation = generation + (@status = 'revoked'), event_seq = event_seq + 1
        WHERE device_id = @deviceId AND status IN (SELECT value FROM json_each(@from)) RETURNING event_seq`),
      insertNonce: db.prepare('INSERT INTO nonces (nonce, device_id, expires_at) VALUES (?, ?, ?)'),
      consumeNonce: db.prepare(`UPDATE nonces SET consumed_at = @now
        WHERE nonce = @nonce AND device_id = @deviceId AND consumed_at IS NULL AND expires_at > @now
        AND EXISTS (SELECT 1 FROM devices WHERE device_id = @deviceId AND status = @status AND generation = @generation)`),
      deviceState: db.prepare('SELECT status, generation FROM devices WHERE device_id = ?'),
      allowRekey: db.prepare(`UPDATE devices SET rekey_until = @until, updated_at = @now, event_seq = event_seq + 1
        WHERE device_id = @deviceId AND status != 'revoked' RETURNING event_seq`),
      replaceKey: db.prepare(`UPDATE devices SET jwk = @jwk, thumbprint = @thumbprint, fingerprint = @fingerprint,
          metadata = @metadata, generation = generation + 1, rekey_until = NULL, updated_at = @now,
          event_seq = event_seq + 1
        WHERE device_id = @deviceId AND thumbprint = @oldThumbprint AND status != 'revoked'
          AND (@inWindow = 0 OR rekey_until >= @now)
        RETURNING event_seq`),
      revocations: db.prepare(
        "SELECT device_id, status, generation FROM devices WHERE generation > 0 OR status = 'revoked'",
      ),
      getNonce: db.prepare('SELECT device_id, expires_at, consumed_at FROM nonces WHERE nonce = ?'),
      purgeNonces: db.prepare('DELETE FROM nonces WHERE expires_at < ?'),
      purgeSessions: db.prepare('DELETE FROM sessions WHERE created_at < ?'),
      purgeDeliveries: db.prepare(
        `DELETE FROM deliveries WHERE (status = 'delivered' AND created_at < @delivered) OR created_at < @dead`,
      ),
      purgeEvents: db.prepare(
        `DELETE FROM outbox WHERE created_at < @delivered
        AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = outbox.event_id)`,
      ),
      insertSession: db.prepare(
        'INSERT INTO sessions (session_id, device_id, decision, reasons, score, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      ),
      insertEvent: db.prepare('INSERT INTO outbox (event_id, webhook_type, payload, created_at) VALUES (?, ?, ?, ?)'),
      syncSubscribersUnconfigure: db.prepare('UPDATE subscribers SET configured = 0'),
      syncSubscriber: db.prepare(`INSERT INTO subscribers (id, url, status, configured, created_at, updated_at)
        VALUES (@id, @url, 'active', 1, @now, @now) ON CONFLICT (id) DO UPDATE SET configured = 1, url = @url`),
      listSubscribers: db.prepare('SELECT * FROM subscribers ORDER BY created_at, id'),
      setSubscriberStatus: db.prepare(
        'UPDATE subscribers SET status = @status, disabled_reason = @reason, updated_at = @now WHERE id = @id',
      ),
      unfanned: db.prepare('SELECT seq, event_id FROM outbox WHERE fanned_out = 0 ORDER BY seq LIMIT ?'),
      fanOutEvent: db.prepare(`INSERT INTO deliveries (event_id, subscriber_id, status, next_attempt_at, created_at)
        SELECT @eventId, id, 'pending', @now, @now FROM subscribers WHERE status = 'active' AND configured = 1
        ON CONFLICT (event_id, subscriber_id) DO NOTHING`),
      markFanned: db.prepare('UPDATE outbox SET fanned_out = 1 WHERE seq = ?'),
      claim: db.prepare(`UPDATE deliveries SET lease_until = @leaseUntil, attempts = attempts + 1
        WHERE id IN (SELECT d.id FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
          WHERE d.status = 'pending' AND d.next_attempt_at <= @now AND d.lease_until <= @now
            AND s.status = 'active' AND s.configured = 1 AND s.id NOT IN (SELECT value FROM json_each(@skip))
          ORDER BY d.next_attempt_at LIMIT @limit)
        RETURNING id`),
      claimed: db.prepare(`SELECT ${DELIVERY_COLUMNS}, s.url, o.payload FROM deliveries d
        JOIN outbox o ON o.event_id = d.event_id JOIN subscribers s ON s.id = d.subscriber_id
        WHERE d.id IN (SELECT value FROM json_each(?))`),
      finish: db.prepare(`UPDATE deliveries SET status = @status, next_attempt_at = @nextAttemptAt, lease_until = 0,
        last_error = @error, last_status = @httpStatus, delivered_at = @deliveredAt WHERE id = @id`),
      nextDue:
        db.prepare(`SELECT d.next_attempt_at AS due FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
        WHERE d.status = 'pending' AND d.lease_until <= @now AND s.status = 'active' AND s.configured = 1
          AND s.id NOT IN (SELECT value FROM json_each(@skip))
        ORDER BY d.next_attempt_at LIMIT 1`),
      listDeliveries: db.prepare(`SELECT ${DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.event_id = d.event_id
        WHERE @status IS NULL OR d.status = @status ORDER BY d.id DESC LIMIT @limit`),
      expedite: db.prepare(`UPDATE deliveries SET next_attempt_at = @now
        WHERE subscriber_id = @subscriberId AND status = 'pending' AND next_attempt_at > @now`),
      replay:
        db.prepare(`UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = @now, lease_until = 0,
        delivered_at = NULL WHERE id = @id AND status IN ('dead', 'delivered')`),
      listKeys: db.prepare(
        'SELECT kid, alg, seed, created_at AS createdAt, signs_from AS signsFrom FROM signing_keys ORDER BY signs_from, kid',
      ),
      insertKey: db.prepare(
        'INSERT INTO signing_keys (kid, alg, seed, created_at, signs_from) VALUES (@kid, @alg, @seed, @createdAt, @signsFrom)',
      ),
      removeKey: db.prepare('DELETE FROM signing_keys WHERE kid = ?'),
      insertAuthority: db.prepare(`INSERT INTO certificate_authority (id, alg, secret, certificate, created_at)
        VALUES (@id, @alg, @secret, @certificate, @createdAt) ON CONFLICT (id) DO NOTHING`),
      getAuthority: db.prepare(
        'SELECT id, alg, secret, certificate, created_at AS createdAt FROM certificate_authority WHERE id = ?',
      ),
      insertCertificate: db.prepare(`INSERT INTO certificates (serial, device_id, session_id, issued_at, not_after)
        VALUES (@serial, @deviceId, @sessionId, @issuedAt, @notAfter)`),
      revokedCertificates: db.prepare(`SELECT c.serial, d.updated_at AS revokedAt FROM certificates c
        JOIN devices d ON d.device_id = c.device_id WHERE d.status = 'revoked' AND c.not_after > ? ORDER BY c.serial`),
      purgeCertificates: db.prepare('DELETE FROM certificates WHERE not_after < ?'),
      outboxStats: db.prepare(`SELECT (SELECT count(*) FROM outbox WHERE fanned_out = 0) AS unfanned,
        (SELECT count(*) FROM deliveries WHERE status = 'pending') AS pending,
        (SELECT count(*) FROM deliveries WHERE status = 'dead') AS dead`),
    };
  }

  private writeEvent(event: OutboxEvent): void {
    this.statements.insertEvent.run(event.eventId, event.webhookType, JSON.stringify(event.payload), event.createdAt);
  }

  /** Writes an event of `deviceId`, numbered after the device's previous one. */
  private writeDeviceEvent(deviceId: string, event: OutboxEvent): void {
    const row = this.statements.nextEventSeq.get(deviceId) as { event_seq: number } | undefined;
    this.writeEvent(stampDeviceSeq(event, row?.event_seq ?? 0));
  }

  private writeSession(session: SessionRecord): void {
    this.statements.insertSession.run(
      session.sessionId,
      session.deviceId,
      session.decision,
      JSON.stringify(session.reasons),
      session.score ?? null,
      session.createdAt,
    );
  }

  async insertDevice(device: DeviceRecord, event: OutboxEvent): Promise<boolean> {
    return this.db.transaction(() => {
      const { changes } = this.statements.insertDevice.run({
        deviceId: device.deviceId,
        jwk: JSON.stringify(device.jwk),
        thumbprint: device.thumbprint,
        fingerprint: JSON.stringify(device.fingerprint),
        metadata: JSON.stringify(device.metadata ?? {}),
        status: device.status,
        workflow: device.workflow ? JSON.stringify(device.workflow) : null,
        createdAt: device.createdAt,
        updatedAt: device.updatedAt,
      });
      if (changes === 1) this.writeEvent(stampDeviceSeq(event, 1));
      return changes === 1;
    });
  }

  async getDevice(deviceId: string): Promise<DeviceRecord | undefined> {
    const row = this.statements.getDevice.get(deviceId) as DeviceRow | undefined;
    return row && toDevice(row);
  }

  async listDevices(query: DeviceQuery): Promise<{ total: number; devices: DeviceSummary[] }> {
    const filter = { status: query.status ?? null, search: query.search || null };
    const rows = this.statements.listDevices.all({
      ...filter,
      limit: query.limit,
      offset: query.offset,
    }) as DeviceRow[];
    return {
      total: (this.statements.countDevices.get(filter) as { total: number }).total,
      devices: rows.map(row => {
        const last = this.statements.sessionsOf.get(row.device_id, 1) as SessionRow | undefined;
        return { ...toDevice(row), ...(last ? { lastSession: toSession(last) } : {}) };
      }),
    };
  }

  async deviceHistory(deviceId: string, limit: number): Promise<{ sessions: SessionRecord[]; audit: AuditRecord[] }> {
    return {
      sessions: (this.statements.sessionsOf.all(deviceId, limit) as SessionRow[]).map(toSession),
      audit: (this.statements.auditOf.all(deviceId, limit) as AuditRow[]).map(toAudit),
    };
  }

  async setDeviceStatus(
    deviceId: string,
    status: DeviceStatus,
    from: DeviceStatus[],
    event: OutboxEvent,
    now: number,
    audit?: AuditEntry,
  ): Promise<boolean> {
    return this.db.transaction(() => {
      const changed = this.statements.setStatus.get({ status, now, deviceId, from: JSON.stringify(from) }) as
        | { event_seq: number }
        | undefined;
      if (!changed) return false;
      this.writeEvent(stampDeviceSeq(event, changed.event_seq));
      if (audit) this.writeAudit(deviceId, now, status, audit);
      return true;
    });
  }

  async allowRekey(
    deviceId: string,
    until: number,
    event: OutboxEvent,
    now: number,
    audit: AuditEntry,
  ): Promise<boolean> {
    return this.db.transaction(() => {
      const changed = this.statements.allowRekey.get({ deviceId, until, now }) as { event_seq: number } | undefined;
      if (!changed) return false;
      this.writeEvent(stampDeviceSeq(event, changed.event_seq));
      this.writeAudit(deviceId, now, 'rekey_allowed', audit);
      return true;
    });
  }

  async replaceDeviceKey(
    deviceId: string,
    oldThumbprint: string,
    key: DeviceKey,
    options: { inWindow: boolean },
    event: OutboxEvent,
    now: number,
    audit: AuditEntry & { action: AuditAction },
  ): Promise<boolean> {
    return this.db.transaction(() => {
      const changed = this.statements.replaceKey.get({
        deviceId,
        oldThumbprint,
        jwk: JSON.stringify(key.jwk),
        thumbprint: key.thumbprint,
        fingerprint: JSON.stringify(key.fingerprint),
        metadata: JSON.stringify(key.metadata ?? {}),
        inWindow: options.inWindow ? 1 : 0,
        now,
      }) as { event_seq: number } | undefined;
      if (!changed) return false;
      this.writeEvent(stampDeviceSeq(event, changed.event_seq));
      this.writeAudit(deviceId, now, audit.action, audit);
      return true;
    });
  }

  private writeAudit(deviceId: string, at: number, action: AuditAction, audit: AuditEntry): void {
    this.statements.insertAudit.run({ deviceId, at, action, actor: audit.actor, reason: audit.reason ?? null });
  }

  async listRevocations(): Promise<RevocationRecord[]> {
    return (this.statements.revocations.all() as Array<DeviceRow>).map(row => ({
      deviceId: row.device_id,
      status: row.status,
      generation: row.generation,
    }));
  }

  async insertNonce(nonce: NonceRecord): Promise<void> {
    await this.groupCommit(() => this.statements.insertNonce.run(nonce.nonce, nonce.deviceId, nonce.expiresAt));
  }

  async purge(before: PurgeBefore): Promise<PurgeCounts> {
    return this.db.transaction(() => ({
      nonces: this.statements.purgeNonces.run(before.noncesExpired).changes,
      certificates: this.statements.purgeCertificates.run(before.certificatesExpired).changes,
      sessions: this.statements.purgeSessions.run(before.sessions).changes,
      deliveries: this.statements.purgeDeliveries.run({
        delivered: before.deliveredEvents,
        dead: before.deadDeliveries,
      }).changes,
      events: this.statements.purgeEvents.run({ delivered: before.deliveredEvents }).changes,
    }));
  }

  async consumeNonceAndRecord(
    nonce: string,
    device: DeviceState,
    now: number,
    decide: () => { session: SessionRecord; event: OutboxEvent },
  ): Promise<{ outcome: NonceOutcome | 'device_changed'; session?: SessionRecord }> {
    return this.groupCommit(() => {
      const { deviceId, status, generation } = device;
      const { changes } = this.statements.consumeNonce.run({ now, nonce, deviceId, status, generation });
      if (changes === 0) {
        const current = this.statements.deviceState.get(deviceId) as DeviceRow | undefined;
        return {
          outcome: whyNotConsumed(this.statements.getNonce.get(nonce) as NonceRow | undefined, device, current, now),
        };
      }
      const { session, event } = decide();
      this.writeSession(session);
      this.writeDeviceEvent(deviceId, event);
      return { outcome: 'consumed' as const, session };
    });
  }

  async recordSession(session: SessionRecord, event: OutboxEvent): Promise<void> {
    await this.groupCommit(() => {
      this.writeSession(session);
      this.writeDeviceEvent(session.deviceId, event);
    });
  }

  /**
   * Group commit for the writes on every device's path (challenges, decisions): those queued
   * during one turn of the event loop share one IMMEDIATE transaction, each in a savepoint of its
   * own, so one failing undoes only itself. A commit per write appends every touched page to the
   * WAL again; a busy verifier grouping its writes appends each page once a turn. Each promise
   * settles once its group is committed, so nothing is reported that could still be lost.
   */
  private groupCommit<T>(work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const settle = resolve as (value: unknown) => void;
      if (this.pending.push({ work, resolve: settle, reject }) === 1) setImmediate(() => this.commitPending());
    });
  }

  private commitPending(): void {
    const group = this.pending;
    this.pending = [];
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      this.db.transaction(() => {
        for (const { work } of group) {
          try {
            outcomes.push({ ok: true, value: this.db.transaction(work) });
          } catch (error) {
            outcomes.push({ ok: false, error });
          }
        }
      });
    } catch (error) {
      // The commit itself failed (disk full, a lock past busy_timeout): nothing of the group stands.
      for (const { reject } of group) reject(error);
      return;
    }
    group.forEach(({ resolve, reject }, i) => {
      const outcome = outcomes[i];
      if (outcome.ok) resolve(outcome.value);
      else reject(outcome.error);
    });
  }

  async rotateSigningKeys(plan: (keys: SigningKeyRecord[]) => KeyRotation): Promise<SigningKeyRecord[]> {
    return this.db.transaction(() => {
      const { add, remove = [] } = plan(this.statements.listKeys.all() as SigningKeyRecord[]);
      if (add) this.statements.insertKey.run({ ...add });
      for (const kid of remove) this.statements.removeKey.run(kid);
      return this.statements.listKeys.all() as SigningKeyRecord[];
    });
  }

  async ensureAuthority(record: AuthorityRecord): Promise<AuthorityRecord> {
    this.statements.insertAuthority.run({ ...record });
    return this.statements.getAuthority.get(record.id) as AuthorityRecord;
  }

  async recordCertificate(certificate: CertificateRecord): Promise<void> {
    await this.groupCommit(() => {
      this.statements.insertCertificate.run({ ...certificate });
    });
  }

  async revokedCertificates(now: number): Promise<Array<{ serial: string; revokedAt: number }>> {
    return this.statements.revokedCertificates.all(now) as Array<{ serial: string; revokedAt: number }>;
  }

  async outboxStats(): Promise<OutboxStats> {
    return this.statements.outboxStats.get() as OutboxStats;
  }

  async syncSubscribers(subscribers: Array<{ id: string; url: string }>, now: number): Promise<void> {
    this.db.transaction(() => {
      this.statements.syncSubscribersUnconfigure.run();
      for (const { id, url } of subscribers) this.statements.syncSubscriber.run({ id, url, now });
    });
  }

  async listSubscribers(): Promise<SubscriberRecord[]> {
    return (this.statements.listSubscribers.all() as SubscriberRow[]).map(toSubscriber);
  }

  async setSubscriberStatus(
    id: string,
    status: SubscriberStatus,
    reason: string | null,
    now: number,
  ): Promise<boolean> {
    return this.statements.setSubscriberStatus.run({ id, status, reason, now }).changes === 1;
  }

  async fanOut(limit: number, now: number): Promise<number> {
    return this.db.transaction(() => {
      const events = this.statements.unfanned.all(limit) as Array<{ seq: number; event_id: string }>;
      for (const { seq, event_id } of events) {
        this.statements.fanOutEvent.run({ eventId: event_id, now });
        this.statements.markFanned.run(seq);
      }
      return events.length;
    });
  }

  async claimDeliveries(now: number, limit: number, leaseMs: number, skip: string[] = []): Promise<ClaimedDelivery[]> {
    return this.db.transaction(() => {
      const claim = { now, limit, leaseUntil: now + leaseMs, skip: JSON.stringify(skip) };
      const ids = (this.statements.claim.all(claim) as Array<{ id: number }>).map(row => row.id);
      if (!ids.length) return [];
      return (
        this.statements.claimed.all(JSON.stringify(ids)) as Array<DeliveryRow & { url: string; payload: string }>
      ).map(row => ({ ...toDelivery(row), url: row.url, body: row.payload }));
    });
  }

  async finishDeliveries(outcomes: Array<{ id: number; outcome: DeliveryOutcome }>, now: number): Promise<void> {
    this.db.transaction(() => {
      for (const { id, outcome } of outcomes)
        this.statements.finish.run({
          id,
          status: outcome.status,
          nextAttemptAt: outcome.nextAttemptAt ?? now,
          error: outcome.error ?? null,
          httpStatus: outcome.httpStatus ?? null,
          deliveredAt: outcome.status === 'delivered' ? now : null,
        });
    });
  }

  async nextDeliveryAt(now: number, skip: string[] = []): Promise<number | undefined> {
    return (this.statements.nextDue.get({ now, skip: JSON.stringify(skip) }) as { due: number } | undefined)?.due;
  }

  async listDeliveries(filter: { status?: DeliveryStatus; limit: number }): Promise<DeliveryRecord[]> {
    return (
      this.statements.listDeliveries.all({ status: filter.status ?? null, limit: filter.limit }) as DeliveryRow[]
    ).map(toDelivery);
  }

  async expediteDeliveries(subscriberId: string, now: number): Promise<number> {
    return this.statements.expedite.run({ subscriberId, now }).changes;
  }

  async replayDelivery(id: number, now: number): Promise<boolean> {
    return this.statements.replay.run({ id, now }).changes === 1;
  }

  async ping(): Promise<void> {
    const version = this.db.pragma('user_version') as number;
    if (version !== SCHEMA_VERSION) throw schemaMismatch(version, SCHEMA_VERSION);
  }

  async close(): Promise<void> {
    if (this.pending.length && this.db.isOpen) this.commitPending();
    this.db.close();
  }
}
