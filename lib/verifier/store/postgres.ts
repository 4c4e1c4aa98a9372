/**
 * The fleet store: one PostgreSQL database shared by any number of verifier processes on any
 * number of machines. Every guarantee is the database's, not a process's: a nonce is consumed by
 * one conditional UPDATE (its row lock makes a concurrent one wait and then find it used), key
 * rotation and migrations run under transaction-scoped advisory locks, and the outbox is claimed
 * with `FOR UPDATE SKIP LOCKED` plus a lease, so a crashed process's claims come back.
 *
 * `pg` is an optional peer dependency, loaded only when a PostgreSQL URL is given.
 */
import * as os from 'node:os';
import type * as pg from 'pg';
import type { Alg } from '../../crypto/keys';
import { M2MError } from '../../errors';
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
  DeliveryOutcome,
  DeliveryRecord,
  DeliveryStatus,
  KeyRotation,
  OutboxStats,
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

/** Versioned like SQLite's; version 1 is SQLite's version 3 (where PostgreSQL support began), 2 its 4, and so on. */
const MIGRATIONS = [
  `CREATE TABLE devices (
  device_id TEXT PRIMARY KEY,
  jwk TEXT NOT NULL,
  thumbprint TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  metadata TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('active', 'pending', 'revoked')),
  workflow TEXT,
  generation INTEGER NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE TABLE nonces (
  nonce TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  consumed_at BIGINT
);
CREATE INDEX nonces_expiry ON nonces (expires_at);
CREATE TABLE sessions (
  session_id TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  decision TEXT NOT NULL,
  reasons TEXT NOT NULL,
  score DOUBLE PRECISION,
  created_at BIGINT NOT NULL
);
CREATE INDEX sessions_created ON sessions (created_at);
CREATE TABLE outbox (
  seq BIGSERIAL PRIMARY KEY,
  event_id TEXT NOT NULL UNIQUE,
  webhook_type TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  fanned_out BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX outbox_unfanned ON outbox (seq) WHERE NOT fanned_out;
CREATE INDEX outbox_created ON outbox (created_at);
CREATE TABLE signing_keys (
  kid TEXT PRIMARY KEY,
  seed TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE subscribers (
  id TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
  disabled_reason TEXT,
  configured BOOLEAN NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE TABLE deliveries (
  id BIGSERIAL PRIMARY KEY,
  event_id TEXT NOT NULL,
  subscriber_id TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at BIGINT NOT NULL,
  lease_until BIGINT NOT NULL DEFAULT 0,
  last_error TEXT,
  last_status INTEGER,
  created_at BIGINT NOT NULL,
  delivered_at BIGINT,
  UNIQUE (event_id, subscriber_id)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_status ON deliveries (status, id);
CREATE INDEX deliveries_created ON deliveries (created_at);`,
  `ALTER TABLE signing_keys ADD COLUMN signs_from BIGINT NOT NULL DEFAULT 0;
UPDATE signing_keys SET signs_from = created_at;`,
  `CREATE TABLE device_audit (
  id BIGSERIAL PRIMARY KEY,
  device_id TEXT NOT NULL,
  at BIGINT NOT NULL,
  action TEXT NOT NULL,
  actor TEXT NOT NULL,
  reason TEXT
);
CREATE INDEX device_audit_device ON device_audit (device_id, at);
CREATE INDEX sessions_device ON sessions (device_id, created_at);`,
  `ALTER TABLE devices ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN rekey_until BIGINT;
ALTER TABLE signing_keys ADD COLUMN alg TEXT NOT NULL DEFAULT 'EdDSA';`,
  `CREATE TABLE certificate_authority (
  id TEXT PRIMARY KEY,
  alg TEXT NOT NULL,
  secret TEXT,
  certificate TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE certificates (
  serial TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  session_id TEXT NOT NULL,
  issued_at BIGINT NOT NULL,
  not_after BIGINT NOT NULL
);
CREATE INDEX certificates_device ON certificates (device_id, not_after);
CREATE INDEX certificates_expiry ON certificates (not_after);`,
];

export const PG_SCHEMA_VERSION = MIGRATIONS.length;

/** Advisory lock keys (any two fixed integers; the schema name keeps tenants of one database apart). */
const LOCKS = { migrate: 1, signingKeys: 2 } as const;

export interface PostgresOptions {
  /** postgres://user@host:port/database?sslmode=...: libpq's URL, as `pg` reads it. */
  connectionString: string;
  /** The PostgreSQL schema the tables live in, created if absent. */
  schema: string;
  /** Connections this process keeps at most. */
  poolMax: number;
  connectTimeoutMs: number;
  /** A statement running longer is cancelled: a stuck lock fails a request instead of hanging it. */
  statementTimeoutMs: number;
}

const OWN_PARAMETERS = {
  schema: 'schema',
  pool_max: 'poolMax',
  connect_timeout_ms: 'connectTimeoutMs',
  statement_timeout_ms: 'statementTimeoutMs',
} as const;

/**
 * Splits our parameters (`schema`, `pool_max`, `connect_timeout_ms`, `statement_timeout_ms`) off
 * a PostgreSQL URL; the rest, TLS settings included, is `pg`'s.
 */
export function parsePostgresUrl(spec: string): PostgresOptions {
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    throw new M2MError('bad_config', 'the PostgreSQL store URL is not a valid URL', 400);
  }
  const options: PostgresOptions = {
    connectionString: '',
    schema: 'm2m_identity',
    poolMax: 10,
    connectTimeoutMs: 10_000,
    statementTimeoutMs: 10_000,
  };
  for (const [parameter, key] of Object.entries(OWN_PARAMETERS)) {
    const value = url.searchParams.get(parameter);
    url.searchParams.delete(parameter);
    if (value === null) continue;
    if (key === 'schema') {
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(value))
        throw new M2MError(
          'bad_config',
          `schema must be a lower-case SQL identifier, not ${JSON.stringify(value)}`,
          400,
        );
      options.schema = value;
    } else {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 1)
        throw new M2MError('bad_config', `${parameter} must be a whole number of at least 1, not ${value}`, 400);
      options[key] = n;
    }
  }
  // With no user named, the operating system's, as libpq (psql) does: pg would read $USER, which
  // services often run without.
  if (!url.username && !process.env.PGUSER) url.username = os.userInfo().username;
  options.connectionString = url.toString();
  return options;
}

/** Required on first use, so SQLite users never load (or need) pg. */
function loadPg(): typeof pg {
  try {
    return require('pg');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    throw new M2MError(
      'store_unsupported',
      'the PostgreSQL store needs the pg package: run `npm install pg` where this package is installed',
      400,
    );
  }
}

type Queryable = Pick<pg.PoolClient, 'query'>;

/** Applies migrations up to `upTo` once, however many processes start at the same moment. */
export async function migratePostgres(client: Queryable, schema: string, upTo = PG_SCHEMA_VERSION): Promise<void> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCKS.migrate, schema]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await client.query(`CREATE TABLE IF NOT EXISTS ${schema}.schema_version (version INTEGER NOT NULL)`);
    const { rows } = await client.query<{ version: number }>(`SELECT version FROM ${schema}.schema_version`);
    const version = rows[0]?.version ?? 0;
    if (version > PG_SCHEMA_VERSION) throw schemaMismatch(version, PG_SCHEMA_VERSION);
    for (let v = version; v < upTo; v++) await client.query(MIGRATIONS[v]);
    if (!rows.length) await client.query(`INSERT INTO ${schema}.schema_version VALUES ($1)`, [upTo]);
    else if (version < upTo) await client.query(`UPDATE ${schema}.schema_version SET version = $1`, [upTo]);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  }
}

interface KeyRow {
  kid: string;
  alg: Alg;
  seed: string;
  createdAt: number;
  signsFrom: number;
}

const INSERT_EVENT = 'INSERT INTO outbox (event_id, webhook_type, payload, created_at) VALUES ($1, $2, $3, $4)';
const INSERT_AUDIT = 'INSERT INTO device_audit (device_id, at, action, actor, reason) VALUES ($1, $2, $3, $4, $5)';
const INSERT_SESSION =
  'INSERT INTO sessions (session_id, device_id, decision, reasons, score, created_at) VALUES ($1, $2, $3, $4, $5, $6)';

function eventValues(event: OutboxEvent): unknown[] {
  return [event.eventId, event.webhookType, JSON.stringify(event.payload), event.createdAt];
}

function sessionValues(session: SessionRecord): unknown[] {
  return [
    session.sessionId,
    session.deviceId,
    session.decision,
    JSON.stringify(session.reasons),
    session.score ?? null,
    session.createdAt,
  ];
}

export class PostgresStore implements VerifierStore {
  private readonly pool: pg.Pool;

  private constructor(pool: pg.Pool) {
    this.pool = pool;
  }

  /** Connects, migrates, and checks the schema version. */
  static async open(spec: string, migrateUpTo?: number): Promise<PostgresStore> {
    const options = parsePostgresUrl(spec);
    const { Pool, types } = loadPg();
    const pool = new Pool({
      connectionString: options.connectionString,
      max: options.poolMax,
      connectionTimeoutMillis: options.connectTimeoutMs,
      statement_timeout: options.statementTimeoutMs,
      // A frozen server (stopped, black-holed) never cancels anything: the client gives up a
      // second after the server would have, and the pool discards that connection.
      query_timeout: options.statementTimeoutMs + 1000,
      options: `-c search_path=${options.schema}`,
      // Times and ids are BIGINT: numbers here (all stay below 2^53), without changing how any
      // other user of pg in this process (another Node-RED node) reads them.
      types: {
        getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
          oid === types.builtins.INT8 ? Number : types.getTypeParser(oid, format)) as typeof types.getTypeParser,
      },
    });
    // An idle connection the server dropped: the pool discards it and opens another when needed.
    pool.on('error', () => undefined);
    try {
      const client = await pool.connect();
      try {
        await migratePostgres(client, options.schema, migrateUpTo);
      } finally {
        client.release();
      }
    } catch (err) {
      await pool.end();
      throw err;
    }
    return new PostgresStore(pool);
  }

  private async query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    return this.pool.query<R>(text, values);
  }

  private async transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch((rollbackError: Error) => {
        broken = rollbackError;
      });
      throw err;
    } finally {
      // A connection that could not even roll back is closed, not handed to the next caller.
      client.release(broken);
    }
  }

  async insertDevice(device: DeviceRecord, event: OutboxEvent): Promise<boolean> {
    return this.transaction(async client => {
      const { rowCount } = await client.query(
        `INSERT INTO devices (device_id, jwk, thumbprint, fingerprint, metadata, status, workflow, created_at, updated_at, event_seq)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1) ON CONFLICT (device_id) DO NOTHING`,
        [
          device.deviceId,
          JSON.stringify(device.jwk),
          device.thumbprint,
          JSON.stringify(device.fingerprint),
          JSON.stringify(device.metadata ?? {}),
          device.status,
          device.workflow ? JSON.stringify(device.workflow) : null,
          device.createdAt,
          device.updatedAt,
        ],
      );
      if (rowCount === 1) await client.query(INSERT_EVENT, eventValues(stampDeviceSeq(event, 1)));
      return rowCount === 1;
    });
  }

  async getDevice(deviceId: string): Promise<DeviceRecord | undefined> {
    const { rows } = await this.query<DeviceRow>('SELECT * FROM devices WHERE device_id = $1', [deviceId]);
    return rows[0] && toDevice(rows[0]);
  }

  async listDevices(query: DeviceQuery): Promise<{ total: number; devices: DeviceSummary[] }> {
    const where = `($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR strpos(device_id, $2) > 0)`;
    const filter = [query.status ?? null, query.search || null];
    const [{ rows }, count] = await Promise.all([
      this.query<DeviceRow>(`SELECT * FROM devices WHERE ${where} ORDER BY device_id LIMIT $3 OFFSET $4`, [
        ...filter,
        query.limit,
        query.offset,
      ]),
      this.query<{ total: number }>(`SELECT count(*) AS total FROM devices WHERE ${where}`, filter),
    ]);
    const latest = await this.query<SessionRow>(
      `SELECT DISTINCT ON (device_id) * FROM sessions WHERE device_id = ANY($1::text[])
      ORDER BY device_id, created_at DESC, session_id DESC`,
      [rows.map(row => row.device_id)],
    );
    const last = new Map(latest.rows.map(row => [row.device_id, toSession(row)]));
    return {
      total: count.rows[0].total,
      devices: rows.map(row => {
        const session = last.get(row.device_id);
        return { ...toDevice(row), ...(session ? { lastSession: session } : {}) };
      }),
    };
  }

  async deviceHistory(deviceId: string, limit: number): Promise<{ sessions: SessionRecord[]; audit: AuditRecord[] }> {
    const [sessions, audit] = await Promise.all([
      this.query<SessionRow>(
        'SELECT * FROM sessions WHERE device_id = $1 ORDER BY created_at DESC, session_id DESC LIMIT $2',
        [deviceId, limit],
      ),
      this.query<AuditRow>(
        'SELECT device_id, at, action, actor, reason FROM device_audit WHERE device_id = $1 ORDER BY at DESC, id DESC LIMIT $2',
        [deviceId, limit],
      ),
    ]);
    return { sessions: sessions.rows.map(toSession), audit: audit.rows.map(toAudit) };
  }

  async setDeviceStatus(
    deviceId: string,
    status: DeviceStatus,
    from: DeviceStatus[],
    event: OutboxEvent,
    now: number,
    audit?: AuditEntry,
  ): Promise<boolean> {
    return this.transaction(async client => {
      const { rows } = await client.query<{ event_seq: number }>(
        `UPDATE devices SET status = $1, updated_at = $2, event_seq = event_seq + 1,
          generation = generation + (CASE WHEN $1 = 'revoked' THEN 1 ELSE 0 END)
        WHERE device_id = $3 AND status = ANY($4::text[]) RETURNING event_seq`,
        [status, now, deviceId, from],
      );
      if (!rows.length) return false;
      await client.query(INSERT_EVENT, eventValues(stampDeviceSeq(event, rows[0].event_seq)));
      if (audit) await client.query(INSERT_AUDIT, [deviceId, now, status, audit.actor, audit.reason ?? null]);
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
    return this.transaction(async client => {
      const { rows } = await client.query<{ event_seq: number }>(
        `UPDATE devices SET rekey_until = $1, updated_at = $2, event_seq = event_seq + 1
        WHERE device_id = $3 AND status != 'revoked' RETURNING event_seq`,
        [until, now, deviceId],
      );
      if (!rows.length) return false;
      await client.query(INSERT_EVENT, eventValues(stampDeviceSeq(event, rows[0].event_seq)));
      await client.query(INSERT_AUDIT, [deviceId, now, 'rekey_allowed', audit.actor, audit.reason ?? null]);
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
    return this.transaction(async client => {
      const { rows } = await client.query<{ event_seq: number }>(
        `UPDATE devices SET jwk = $1, thumbprint = $2, fingerprint = $3, metadata = $4, generation = generation + 1,
          rekey_until = NULL, updated_at = $5, event_seq = event_seq + 1
        WHERE device_id = $6 AND thumbprint = $7 AND status != 'revoked' AND (NOT $8 OR rekey_until >= $5)
        RETURNING event_seq`,
        [
          JSON.stringify(key.jwk),
          key.thumbprint,
          JSON.stringify(key.fingerprint),
          JSON.stringify(key.metadata ?? {}),
          now,
          deviceId,
          oldThumbprint,
          options.inWindow,
        ],
      );
      if (!rows.length) return false;
      await client.query(INSERT_EVENT, eventValues(stampDeviceSeq(event, rows[0].event_seq)));
      await client.query(INSERT_AUDIT, [deviceId, now, audit.action, audit.actor, audit.reason ?? null]);
      return true;
    });
  }

  async listRevocations(): Promise<RevocationRecord[]> {
    const { rows } = await this.query<DeviceRow>(
      "SELECT device_id, status, generation FROM devices WHERE generation > 0 OR status = 'revoked'",
    );
    return rows.map(row => ({ deviceId: row.device_id, status: row.status, generation: row.generation }));
  }

  async insertNonce(nonce: NonceRecord): Promise<void> {
    await this.query('INSERT INTO nonces (nonce, device_id, expires_at) VALUES ($1, $2, $3)', [
      nonce.nonce,
      nonce.deviceId,
      nonce.expiresAt,
    ]);
  }

  /**
   * One statement on the path every genuine attestation takes. The device's row is updated first
   * (its event number), and only while the device is in the state the decision saw: a concurrent
   * revocation holds that row, so this waits for it and then finds the device changed, or the
   * revocation waits for this and its event comes after. Then the nonce is consumed, and only if
   * both worked are the session and its event written. Anything else writes nothing; a second
   * read says why.
   */
  async consumeNonceAndRecord(
    nonce: string,
    device: DeviceState,
    now: number,
    decide: () => { session: SessionRecord; event: OutboxEvent },
  ): Promise<{ outcome: NonceOutcome | 'device_changed'; session?: SessionRecord }> {
    const { session, event } = decide();
    const { rows } = await this.query<{ seq: number | null }>(
      `WITH device AS (
        UPDATE devices SET event_seq = event_seq + 1
        WHERE device_id = $3 AND status = $4 AND generation = $5 AND EXISTS (
          SELECT 1 FROM nonces WHERE nonce = $2 AND device_id = $3 AND consumed_at IS NULL AND expires_at > $1)
        RETURNING event_seq
      ), consumed AS (
        UPDATE nonces SET consumed_at = $1
        WHERE nonce = $2 AND device_id = $3 AND consumed_at IS NULL AND expires_at > $1 AND EXISTS (SELECT 1 FROM device)
        RETURNING 1
      ), session AS (
        INSERT INTO sessions (session_id, device_id, decision, reasons, score, created_at)
        SELECT $6, $7, $8, $9, $10, $11 WHERE EXISTS (SELECT 1 FROM consumed)
      ), event AS (
        INSERT INTO outbox (event_id, webhook_type, payload, created_at)
        SELECT $12, $13, jsonb_set($14::jsonb, '{data,deviceSeq}', to_jsonb(device.event_seq))::text, $15
        FROM device WHERE EXISTS (SELECT 1 FROM consumed)
      )
      SELECT (SELECT event_seq FROM device WHERE EXISTS (SELECT 1 FROM consumed)) AS seq`,
      [now, nonce, device.deviceId, device.status, device.generation, ...sessionValues(session), ...eventValues(event)],
    );
    if (rows[0].seq !== null) {
      stampDeviceSeq(event, rows[0].seq);
      return { outcome: 'consumed', session };
    }
    const { rows: found } = await this.query<NonceRow & { status: DeviceStatus | null; generation: number | null }>(
      `SELECT n.device_id, n.expires_at, n.consumed_at, d.status, d.generation
      FROM (SELECT 1) AS one LEFT JOIN nonces n ON n.nonce = $1 LEFT JOIN devices d ON d.device_id = $2`,
      [nonce, device.deviceId],
    );
    const { status, generation, ...row } = found[0];
    return {
      outcome: whyNotConsumed(
        row.device_id === null ? undefined : row,
        device,
        status === null || generation === null ? undefined : { status, generation },
        now,
      ),
    };
  }

  async recordSession(session: SessionRecord, event: OutboxEvent): Promise<void> {
    await this.transaction(async client => {
      const { rows } = await client.query<{ event_seq: number }>(
        'UPDATE devices SET event_seq = event_seq + 1 WHERE device_id = $1 RETURNING event_seq',
        [session.deviceId],
      );
      await client.query(INSERT_SESSION, sessionValues(session));
      await client.query(INSERT_EVENT, eventValues(stampDeviceSeq(event, rows[0]?.event_seq ?? 0)));
    });
  }

  async purge(before: PurgeBefore): Promise<PurgeCounts> {
    return this.transaction(async client => {
      const count = async (text: string, values: unknown[]) => (await client.query(text, values)).rowCount ?? 0;
      return {
        nonces: await count('DELETE FROM nonces WHERE expires_at < $1', [before.noncesExpired]),
        certificates: await count('DELETE FROM certificates WHERE not_after < $1', [before.certificatesExpired]),
        sessions: await count('DELETE FROM sessions WHERE created_at < $1', [before.sessions]),
        deliveries: await count(
          `DELETE FROM deliveries WHERE (status = 'delivered' AND created_at < $1) OR created_at < $2`,
          [before.deliveredEvents, before.deadDeliveries],
        ),
        events: await count(
          `DELETE FROM outbox WHERE created_at < $1
          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = outbox.event_id)`,
          [before.deliveredEvents],
        ),
      };
    });
  }

  async rotateSigningKeys(plan: (keys: SigningKeyRecord[]) => KeyRotation): Promise<SigningKeyRecord[]> {
    const list = async (client: Queryable) =>
      (
        await client.query<KeyRow>(
          'SELECT kid, alg, seed, created_at AS "createdAt", signs_from AS "signsFrom" FROM signing_keys ORDER BY signs_from, kid',
        )
      ).rows;
    return this.transaction(async client => {
      await client.query('SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))', [LOCKS.signingKeys]);
      const { add, remove = [] } = plan(await list(client));
      if (add)
        await client.query(
          'INSERT INTO signing_keys (kid, alg, seed, created_at, signs_from) VALUES ($1, $2, $3, $4, $5)',
          [add.kid, add.alg, add.seed, add.createdAt, add.signsFrom],
        );
      if (remove.length) await client.query('DELETE FROM signing_keys WHERE kid = ANY($1::text[])', [remove]);
      return list(client);
    });
  }

  async ensureAuthority(record: AuthorityRecord): Promise<AuthorityRecord> {
    await this.query(
      `INSERT INTO certificate_authority (id, alg, secret, certificate, created_at) VALUES ($1, $2, $3, $4, $5)
      ON CONFLICT (id) DO NOTHING`,
      [record.id, record.alg, record.secret, record.certificate, record.createdAt],
    );
    const { rows } = await this.query<AuthorityRecord>(
      'SELECT id, alg, secret, certificate, created_at AS "createdAt" FROM certificate_authority WHERE id = $1',
      [record.id],
    );
    return rows[0];
  }

  async recordCertificate(certificate: CertificateRecord): Promise<void> {
    await this.query(
      'INSERT INTO certificates (serial, device_id, session_id, issued_at, not_after) VALUES ($1, $2, $3, $4, $5)',
      [certificate.serial, certificate.deviceId, certificate.sessionId, certificate.issuedAt, certificate.notAfter],
    );
  }

  async revokedCertificates(now: number): Promise<Array<{ serial: string; revokedAt: number }>> {
    const { rows } = await this.query<{ serial: string; revokedAt: number }>(
      `SELECT c.serial, d.updated_at AS "revokedAt" FROM certificates c JOIN devices d ON d.device_id = c.device_id
      WHERE d.status = 'revoked' AND c.not_after > $1 ORDER BY c.serial`,
      [now],
    );
    return rows;
  }

  async syncSubscribers(subscribers: Array<{ id: string; url: string }>, now: number): Promise<void> {
    await this.transaction(async client => {
      await client.query('UPDATE subscribers SET configured = false');
      for (const { id, url } of subscribers)
        await client.query(
          `INSERT INTO subscribers (id, url, status, configured, created_at, updated_at)
          VALUES ($1, $2, 'active', true, $3, $3) ON CONFLICT (id) DO UPDATE SET configured = true, url = $2`,
          [id, url, now],
        );
    });
  }

  async listSubscribers(): Promise<SubscriberRecord[]> {
    return (await this.query<SubscriberRow>('SELECT * FROM subscribers ORDER BY created_at, id')).rows.map(
      toSubscriber,
    );
  }

  async setSubscriberStatus(
    id: string,
    status: SubscriberStatus,
    reason: string | null,
    now: number,
  ): Promise<boolean> {
    const { rowCount } = await this.query(
      'UPDATE subscribers SET status = $1, disabled_reason = $2, updated_at = $3 WHERE id = $4',
      [status, reason, now, id],
    );
    return rowCount === 1;
  }

  async fanOut(limit: number, now: number): Promise<number> {
    const { rows } = await this.query<{ events: number }>(
      `WITH picked AS (
        SELECT seq FROM outbox WHERE NOT fanned_out ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED
      ), marked AS (
        UPDATE outbox o SET fanned_out = true FROM picked WHERE o.seq = picked.seq RETURNING o.event_id
      ), fanned AS (
        INSERT INTO deliveries (event_id, subscriber_id, status, next_attempt_at, created_at)
        SELECT marked.event_id, s.id, 'pending', $2, $2 FROM marked
        CROSS JOIN subscribers s WHERE s.status = 'active' AND s.configured
        ON CONFLICT (event_id, subscriber_id) DO NOTHING
      )
      SELECT count(*) AS events FROM marked`,
      [limit, now],
    );
    return rows[0].events;
  }

  async claimDeliveries(now: number, limit: number, leaseMs: number, skip: string[] = []): Promise<ClaimedDelivery[]> {
    const { rows } = await this.query<DeliveryRow & { url: string; payload: string }>(
      `WITH due AS (
        SELECT d.id FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
        WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND d.lease_until <= $1
          AND s.status = 'active' AND s.configured AND NOT (s.id = ANY($4::text[]))
        ORDER BY d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED
      )
      UPDATE deliveries d SET lease_until = $3, attempts = d.attempts + 1
      FROM due, outbox o, subscribers s
      WHERE d.id = due.id AND o.event_id = d.event_id AND s.id = d.subscriber_id
      RETURNING ${DELIVERY_COLUMNS}, s.url, o.payload`,
      [now, limit, now + leaseMs, skip],
    );
    return rows.map(row => ({ ...toDelivery(row), url: row.url, body: row.payload }));
  }

  async finishDeliveries(outcomes: Array<{ id: number; outcome: DeliveryOutcome }>, now: number): Promise<void> {
    if (!outcomes.length) return;
    const column = <T>(pick: (outcome: DeliveryOutcome) => T) => outcomes.map(({ outcome }) => pick(outcome));
    await this.query(
      `UPDATE deliveries d SET status = u.status, next_attempt_at = u.next_attempt_at, lease_until = 0,
        last_error = u.last_error, last_status = u.last_status, delivered_at = u.delivered_at
      FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::bigint[])
        AS u(id, status, next_attempt_at, last_error, last_status, delivered_at)
      WHERE d.id = u.id`,
      [
        outcomes.map(({ id }) => id),
        column(outcome => outcome.status),
        column(outcome => outcome.nextAttemptAt ?? now),
        column(outcome => outcome.error ?? null),
        column(outcome => outcome.httpStatus ?? null),
        column(outcome => (outcome.status === 'delivered' ? now : null)),
      ],
    );
  }

  async nextDeliveryAt(now: number, skip: string[] = []): Promise<number | undefined> {
    const { rows } = await this.query<{ due: number }>(
      `SELECT d.next_attempt_at AS due FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
      WHERE d.status = 'pending' AND d.lease_until <= $1 AND s.status = 'active' AND s.configured
        AND NOT (s.id = ANY($2::text[]))
      ORDER BY d.next_attempt_at LIMIT 1`,
      [now, skip],
    );
    return rows[0]?.due;
  }

  async listDeliveries(filter: { status?: DeliveryStatus; limit: number }): Promise<DeliveryRecord[]> {
    const { rows } = await this.query<DeliveryRow>(
      `SELECT ${DELIVERY_COLUMNS} FROM deliveries d JOIN outbox o ON o.event_id = d.event_id
      WHERE $1::text IS NULL OR d.status = $1 ORDER BY d.id DESC LIMIT $2`,
      [filter.status ?? null, filter.limit],
    );
    return rows.map(toDelivery);
  }

  async expediteDeliveries(subscriberId: string, now: number): Promise<number> {
    const { rowCount } = await this.query(
      `UPDATE deliveries SET next_attempt_at = $1 WHERE subscriber_id = $2 AND status = 'pending' AND next_attempt_at > $1`,
      [now, subscriberId],
    );
    return rowCount ?? 0;
  }

  async replayDelivery(id: number, now: number): Promise<boolean> {
    const { rowCount } = await this.query(
      `UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1, lease_until = 0, delivered_at = NULL
      WHERE id = $2 AND status IN ('dead', 'delivered')`,
      [now, id],
    );
    return rowCount === 1;
  }

  async outboxStats(): Promise<OutboxStats> {
    const { rows } = await this.query<OutboxStats>(
      `SELECT (SELECT count(*) FROM outbox WHERE NOT fanned_out) AS unfanned,
        (SELECT count(*) FROM deliveries WHERE status = 'pending') AS pending,
        (SELECT count(*) FROM deliveries WHERE status = 'dead') AS dead`,
    );
    return rows[0];
  }

  async ping(): Promise<void> {
    const { rows } = await this.query<{ version: number }>('SELECT version FROM schema_version');
    const version = rows[0]?.version ?? 0;
    if (version !== PG_SCHEMA_VERSION) throw schemaMismatch(version, PG_SCHEMA_VERSION);
  }

  async close(): Promise<void> {
    if (!this.pool.ended) await this.pool.end();
  }
}
