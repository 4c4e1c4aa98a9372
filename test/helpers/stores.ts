/**
 * The two store back-ends, for tests that must hold on both: a fresh SQLite file, or a fresh
 * schema in the local PostgreSQL (M2M_PG_URL, else 127.0.0.1:5432 when it answers; skipped,
 * saying why, when there is none).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from 'pg';
import * as crypto from 'node:crypto';
import { PG_SCHEMA_VERSION, migratePostgres, parsePostgresUrl } from '../../lib/verifier/store/postgres';
import { type SqliteDatabase, openSqlite } from '../../lib/sqlite';
import { SCHEMA_VERSION, migrateSqlite } from '../../lib/verifier/store/sqlite';
import { POSTGRES_SERVICE, skipWith } from './services';

const pgService = POSTGRES_SERVICE();
export const PG_URL = pgService.url;

export interface Backend {
  name: 'SQLite' | 'PostgreSQL';
  /** Why the back-end's tests cannot run here, if they cannot. */
  skipReason?: string;
  schemaVersion: number;
  /** The last version whose signing_keys had no signs_from column. */
  keysWithoutSignsFrom: number;
  /** A spec for `openStore` naming an empty database. */
  fresh(): Promise<StoreSpec>;
}

export interface StoreSpec {
  spec: string;
  /** Runs SQL (no parameters) against the database without the store, e.g. to migrate to an old version. */
  sql(text: string): Promise<Array<Record<string, unknown>>>;
  /** Migrates the empty database to `version` only, as an older verifier left it. */
  migrateTo(version: number): Promise<void>;
  drop(): Promise<void>;
}

const sqlite: Backend = {
  name: 'SQLite',
  schemaVersion: SCHEMA_VERSION,
  keysWithoutSignsFrom: 3,
  async fresh() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-store-'));
    const file = path.join(dir, 'verifier.db');
    const withDb = <T>(use: (db: SqliteDatabase) => T): T => {
      const db = openSqlite(file);
      try {
        return use(db);
      } finally {
        db.close();
      }
    };
    return {
      spec: `sqlite:${file}`,
      sql: async text =>
        withDb(db => {
          if (!/^\s*(SELECT|WITH)\b|^\s*PRAGMA\s+\w+\s*$/i.test(text)) {
            db.exec(text);
            return [];
          }
          return db.prepare(text).all() as Array<Record<string, unknown>>;
        }),
      migrateTo: async version => withDb(db => migrateSqlite(db, version)),
      async drop() {
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

/** A PostgreSQL URL with our schema parameter set (keeping whatever the base URL carries). */
export function pgSpec(schema: string, base = PG_URL!): string {
  const url = new URL(base);
  url.searchParams.set('schema', schema);
  return url.toString();
}

const postgres: Backend = {
  name: 'PostgreSQL',
  skipReason: pgService.skipReason,
  schemaVersion: PG_SCHEMA_VERSION,
  keysWithoutSignsFrom: 1,
  async fresh() {
    const schema = `m2m_test_${crypto.randomBytes(6).toString('hex')}`;
    const spec = pgSpec(schema);
    const withClient = async <T>(use: (client: Client) => Promise<T>): Promise<T> => {
      const options = parsePostgresUrl(spec);
      const client = new Client({
        connectionString: options.connectionString,
        options: `-c search_path=${schema}`,
      });
      await client.connect();
      try {
        return await use(client);
      } finally {
        await client.end();
      }
    };
    return {
      spec,
      sql: text => withClient(async client => (await client.query(text)).rows),
      migrateTo: version => withClient(client => migratePostgres(client, schema, version)),
      drop: () => withClient(async client => void (await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`))),
    };
  },
};

export const BACKENDS: Backend[] = [sqlite, postgres];

export const POSTGRES = postgres;

/** `describe` on one back-end; when it cannot run here, its tests are skipped saying why. */
export function describeBackend(backend: Backend, title: string, suite: (backend: Backend) => void): void {
  describe(`${title} (${backend.name})`, function () {
    if (backend.skipReason) {
      before(function () {
        skipWith(this, backend.skipReason!);
      });
    }
    suite.call(this, backend);
  });
}

/** The same suite on every back-end. */
export function forEachBackend(title: string, suite: (backend: Backend) => void): void {
  for (const backend of BACKENDS) describeBackend(backend, title, suite);
}
