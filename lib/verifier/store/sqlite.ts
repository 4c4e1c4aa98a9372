/**
 * The embedded store: one SQLite file (WAL), zero set-up. Nonce consumption, the session and its
 * outbox event are written in one IMMEDIATE transaction, so the database (not an in-process
 * lock) decides which of several concurrent attestations wins, also across processes sharing
 * the file.
 */
import Database from 'better-sqlite3';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DeviceRecord, DeviceStatus, NonceOutcome, NonceRecord, OutboxEvent, SessionRecord } from '../types';
import type { PurgeBefore, PurgeCounts, SigningKeyRecord, VerifierStore } from './types';

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
];

export const SCHEMA_VERSION = MIGRATIONS.length;

function migrate(db: Database.Database): void {
  db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number;
    for (let v = version; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v]);
    if (version < MIGRATIONS.length) db.pragma(`user_version = ${MIGRATIONS.length}`);
  }).immediate();
}

interface DeviceRow {
  device_id: string;
  jwk: string;
  thumbprint: string;
  fingerprint: string;
  metadata: string;
  status: DeviceStatus;
  workflow: string | null;
  created_at: number;
  updated_at: number;
  generation: number;
}

function toDevice(row: DeviceRow): DeviceRecord {
  return {
    deviceId: row.device_id,
    jwk: JSON.parse(row.jwk),
    thumbprint: row.thumbprint,
    fingerprint: JSON.parse(row.fingerprint),
    metadata: JSON.parse(row.metadata),
    status: row.status,
    workflow: row.workflow ? JSON.parse(row.workflow) : undefined,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    generation: row.generation,
  };
}

export class SqliteStore implements VerifierStore {
  private readonly db: Database.Database;
  private readonly statements;

  /** @param file a path, or ':memory:' */
  constructor(file: string) {
    if (file !== ':memory:') {
      fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
      // The database holds the verifier's token-signing key: owner-only, like a key file. SQLite
      // gives its -wal and -shm files the database file's mode.
      fs.closeSync(fs.openSync(file, 'a', 0o600));
    }
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    migrate(this.db);
    const db = this.db;
    this.statements = {
      insertDevice:
        db.prepare(`INSERT INTO devices (device_id, jwk, thumbprint, fingerprint, metadata, status, workflow, created_at, updated_at)
        VALUES (@deviceId, @jwk, @thumbprint, @fingerprint, @metadata, @status, @workflow, @createdAt, @updatedAt) ON CONFLICT (device_id) DO NOTHING`),
      getDevice: db.prepare('SELECT * FROM devices WHERE device_id = ?'),
      listDevices: db.prepare('SELECT * FROM devices ORDER BY device_id'),
      setStatus:
        db.prepare(`UPDATE devices SET status = @status, updated_at = @now, generation = generation + (@status = 'revoked')
        WHERE device_id = @deviceId AND status IN (SELECT value FROM json_each(@from))`),
      insertNonce: db.prepare('INSERT INTO nonces (nonce, device_id, expires_at) VALUES (?, ?, ?)'),
      consumeNonce: db.prepare(
        'UPDATE nonces SET consumed_at = ? WHERE nonce = ? AND device_id = ? AND consumed_at IS NULL AND expires_at > ?',
      ),
      getNonce: db.prepare('SELECT device_id, expires_at, consumed_at FROM nonces WHERE nonce = ?'),
      purgeNonces: db.prepare('DELETE FROM nonces WHERE expires_at < ?'),
      purgeSessions: db.prepare('DELETE FROM sessions WHERE created_at < ?'),
      purgeEvents: db.prepare('DELETE FROM outbox WHERE delivered_at IS NOT NULL AND created_at < ?'),
      insertSession: db.prepare(
        'INSERT INTO sessions (session_id, device_id, decision, reasons, score, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      ),
      insertEvent: db.prepare('INSERT INTO outbox (event_id, webhook_type, payload, created_at) VALUES (?, ?, ?, ?)'),
      pendingEvents: db.prepare(
        'SELECT event_id, webhook_type, payload, created_at FROM outbox WHERE delivered_at IS NULL ORDER BY seq LIMIT ?',
      ),
      getKey: db.prepare('SELECT kid, seed, created_at FROM signing_keys ORDER BY created_at DESC LIMIT 1'),
      insertKey: db.prepare('INSERT INTO signing_keys (kid, seed, created_at) VALUES (?, ?, ?)'),
      ping: db.prepare('SELECT 1'),
    };
  }

  private writeEvent(event: OutboxEvent): void {
    this.statements.insertEvent.run(event.eventId, event.webhookType, JSON.stringify(event.payload), event.createdAt);
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
    return this.db
      .transaction(() => {
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
        if (changes === 1) this.writeEvent(event);
        return changes === 1;
      })
      .immediate();
  }

  async getDevice(deviceId: string): Promise<DeviceRecord | undefined> {
    const row = this.statements.getDevice.get(deviceId) as DeviceRow | undefined;
    return row && toDevice(row);
  }

  async listDevices(): Promise<DeviceRecord[]> {
    return (this.statements.listDevices.all() as DeviceRow[]).map(toDevice);
  }

  async setDeviceStatus(
    deviceId: string,
    status: DeviceStatus,
    from: DeviceStatus[],
    event: OutboxEvent,
    now: number,
  ): Promise<boolean> {
    return this.db
      .transaction(() => {
        const { changes } = this.statements.setStatus.run({ status, now, deviceId, from: JSON.stringify(from) });
        if (changes === 1) this.writeEvent(event);
        return changes === 1;
      })
      .immediate();
  }

  async insertNonce(nonce: NonceRecord): Promise<void> {
    this.statements.insertNonce.run(nonce.nonce, nonce.deviceId, nonce.expiresAt);
  }

  async purge(before: PurgeBefore): Promise<PurgeCounts> {
    return this.db
      .transaction(() => ({
        nonces: this.statements.purgeNonces.run(before.noncesExpired).changes,
        sessions: this.statements.purgeSessions.run(before.sessions).changes,
        events: this.statements.purgeEvents.run(before.deliveredEvents).changes,
      }))
      .immediate();
  }

  async consumeNonceAndRecord(
    nonce: string,
    deviceId: string,
    now: number,
    decide: (outcome: NonceOutcome) => { session: SessionRecord; event: OutboxEvent },
  ): Promise<{ outcome: NonceOutcome; session: SessionRecord }> {
    return this.db
      .transaction(() => {
        const { changes } = this.statements.consumeNonce.run(now, nonce, deviceId, now);
        const outcome = changes === 1 ? 'consumed' : this.whyNotConsumed(nonce, deviceId, now);
        const { session, event } = decide(outcome);
        this.writeSession(session);
        this.writeEvent(event);
        return { outcome, session };
      })
      .immediate();
  }

  private whyNotConsumed(nonce: string, deviceId: string, now: number): NonceOutcome {
    const row = this.statements.getNonce.get(nonce) as
      | { device_id: string; expires_at: number; consumed_at: number | null }
      | undefined;
    if (!row) return 'nonce_unknown';
    if (row.device_id !== deviceId) return 'nonce_other_device';
    if (row.consumed_at !== null) return 'nonce_reused';
    return row.expires_at <= now ? 'nonce_expired' : 'nonce_unknown';
  }

  async recordSession(session: SessionRecord, event: OutboxEvent): Promise<void> {
    this.db
      .transaction(() => {
        this.writeSession(session);
        this.writeEvent(event);
      })
      .immediate();
  }

  async getOrCreateSigningKey(create: () => SigningKeyRecord): Promise<SigningKeyRecord> {
    return this.db
      .transaction(() => {
        const row = this.statements.getKey.get() as { kid: string; seed: string; created_at: number } | undefined;
        if (row) return { kid: row.kid, seed: row.seed, createdAt: row.created_at };
        const key = create();
        this.statements.insertKey.run(key.kid, key.seed, key.createdAt);
        return key;
      })
      .immediate();
  }

  async pendingEvents(limit: number): Promise<OutboxEvent[]> {
    return (
      this.statements.pendingEvents.all(limit) as Array<{
        event_id: string;
        webhook_type: string;
        payload: string;
        created_at: number;
      }>
    ).map(row => ({
      eventId: row.event_id,
      webhookType: row.webhook_type,
      payload: JSON.parse(row.payload),
      createdAt: row.created_at,
    }));
  }

  async ping(): Promise<void> {
    this.statements.ping.get();
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
