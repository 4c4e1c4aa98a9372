/**
 * SQLite for every file this package keeps (the verifier's store, replay caches, webhook
 * dedupe): Node's own `node:sqlite` where Node has it (22.13 and later: nothing to compile at
 * install), else `better-sqlite3`, an optional peer for older Nodes, loaded only then. Both
 * write the same file format, so a database written by one opens under the other. The two
 * drivers differ in small ways (transactions, pragmas, error codes); this module irons them out
 * so the stores are written once.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { M2MError } from './errors';

export type SqlValue = string | number | bigint | null | Uint8Array;
export type SqlParams = SqlValue[] | [Record<string, SqlValue>];

export interface SqliteStatement {
  run(...params: SqlParams): { changes: number };
  get(...params: SqlParams): unknown;
  all(...params: SqlParams): unknown[];
}

export interface SqliteDatabase {
  readonly driver: 'node:sqlite' | 'better-sqlite3';
  exec(sql: string): void;
  prepare(sql: string): SqliteStatement;
  /**
   * Runs `work` in a transaction: BEGIN IMMEDIATE at the top (the write lock first, so two
   * processes sharing the file never deadlock upgrading a read), a savepoint when nested, so a
   * failing inner piece undoes only itself. Rolled back when `work` throws.
   */
  transaction<T>(work: () => T): T;
  /** A PRAGMA's value (`name`), or sets it (`name = value`). */
  pragma(statement: string): unknown;
  close(): void;
  readonly isOpen: boolean;
}

export interface OpenOptions {
  readonly?: boolean;
  /** A file created here gets this mode (0600 by default: these files hold secrets or audit data). */
  mode?: number;
}

interface Driver {
  name: SqliteDatabase['driver'];
  open(file: string, readonly: boolean): Connection;
}

/** What both drivers offer, as each spells it. */
interface Connection {
  exec(sql: string): void;
  prepare(sql: string): SqliteStatement;
  close(): void;
  readonly isOpen: boolean;
}

/** SQLite's primary result codes that mean "cannot now" rather than "wrong query" (lib/verifier/store/guarded). */
const RESULT_NAMES: Record<number, string> = {
  5: 'SQLITE_BUSY',
  6: 'SQLITE_LOCKED',
  7: 'SQLITE_NOMEM',
  8: 'SQLITE_READONLY',
  10: 'SQLITE_IOERR',
  11: 'SQLITE_CORRUPT',
  13: 'SQLITE_FULL',
  14: 'SQLITE_CANTOPEN',
  15: 'SQLITE_PROTOCOL',
  19: 'SQLITE_CONSTRAINT',
  26: 'SQLITE_NOTADB',
};

/** node:sqlite reports `ERR_SQLITE_ERROR` with a numeric `errcode`; give it better-sqlite3's `SQLITE_*` code. */
function withSqliteCode(err: unknown): unknown {
  const errcode = (err as { errcode?: unknown })?.errcode;
  if (typeof errcode === 'number' && (err as { code?: unknown }).code === 'ERR_SQLITE_ERROR') {
    const name = RESULT_NAMES[errcode & 0xff];
    if (name) Object.defineProperty(err, 'code', { value: name, configurable: true, writable: true });
  }
  return err;
}

function nodeSqlite(): Driver | undefined {
  // Node 22.13-23 print an ExperimentalWarning on the first require; this module is the only
  // user of it here, and the warning would only worry whoever reads the Node-RED log.
  const emitWarning = process.emitWarning;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    if (!/sqlite/i.test(String(warning))) (emitWarning as (...args: unknown[]) => void).call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  let sqlite: typeof import('node:sqlite');
  try {
    sqlite = require('node:sqlite');
  } catch {
    return undefined; // Node 20, or 22.5-22.12 without --experimental-sqlite
  } finally {
    process.emitWarning = emitWarning;
  }
  return {
    name: 'node:sqlite',
    open(file, readonly) {
      const db = new sqlite.DatabaseSync(file, { readOnly: readonly });
      // `isOpen` came in Node 22.15.
      let open = true;
      const wrap = <F extends (...args: never[]) => unknown>(call: F) =>
        ((...args: Parameters<F>) => {
          try {
            return call(...args);
          } catch (err) {
            throw withSqliteCode(err);
          }
        }) as F;
      return {
        exec: wrap((sql: string) => db.exec(sql)),
        prepare: wrap((sql: string) => {
          const statement = db.prepare(sql);
          const bind = (params: SqlParams) => params as never[];
          return {
            run: wrap((...params: SqlParams) => ({ changes: Number(statement.run(...bind(params)).changes) })),
            // Rows come with a null prototype; plain objects behave as better-sqlite3's do.
            get: wrap((...params: SqlParams) => {
              const row = statement.get(...bind(params));
              return row && { ...row };
            }),
            all: wrap((...params: SqlParams) => statement.all(...bind(params)).map(row => ({ ...row }))),
          };
        }),
        close: () => {
          open = false;
          db.close();
        },
        get isOpen() {
          return open;
        },
      };
    },
  };
}

function betterSqlite3(): Driver {
  let Database: typeof import('better-sqlite3');
  try {
    Database = require('better-sqlite3');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    throw new M2MError(
      'sqlite_unavailable',
      `Node ${process.versions.node} has no built-in SQLite (node:sqlite needs Node 22.13 or later): ` +
        'upgrade Node, or run `npm install better-sqlite3@12` where this package is installed (the Node-RED user directory)',
      500,
    );
  }
  return {
    name: 'better-sqlite3',
    open(file, readonly) {
      const db = new Database(file, { readonly });
      return {
        exec: sql => void db.exec(sql),
        prepare: sql => db.prepare(sql) as unknown as SqliteStatement,
        close: () => db.close(),
        get isOpen() {
          return db.open;
        },
      };
    },
  };
}

let chosen: Driver | undefined;

/** The driver this process uses: node:sqlite where it loads, better-sqlite3 otherwise. */
function driver(): Driver {
  if (!chosen) chosen = (process.env.M2M_SQLITE_DRIVER !== 'better-sqlite3' && nodeSqlite()) || betterSqlite3();
  return chosen;
}

/** Opens (creating it, owner-only, where needed) a SQLite file in WAL mode, or ':memory:'. */
export function openSqlite(file: string, options: OpenOptions = {}): SqliteDatabase {
  const readonly = options.readonly ?? false;
  if (file !== ':memory:' && !readonly) {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    // SQLite gives its -wal and -shm files the database file's mode.
    fs.closeSync(fs.openSync(file, 'a', options.mode ?? 0o600));
  }
  const { name, open } = driver();
  const connection = open(file, readonly);
  let depth = 0;
  const database: SqliteDatabase = {
    driver: name,
    exec: sql => connection.exec(sql),
    prepare: sql => connection.prepare(sql),
    transaction<T>(work: () => T): T {
      const savepoint = depth > 0 ? `m2m_${depth}` : undefined;
      connection.exec(savepoint ? `SAVEPOINT ${savepoint}` : 'BEGIN IMMEDIATE');
      depth++;
      try {
        const result = work();
        depth--;
        connection.exec(savepoint ? `RELEASE ${savepoint}` : 'COMMIT');
        return result;
      } catch (err) {
        depth--;
        try {
          connection.exec(savepoint ? `ROLLBACK TO ${savepoint}; RELEASE ${savepoint}` : 'ROLLBACK');
        } catch {
          // A failed COMMIT can leave nothing to roll back; the error that matters is `err`.
        }
        throw err;
      }
    },
    pragma(statement) {
      // Setting one may or may not answer a row (journal_mode does), which better-sqlite3's get() refuses.
      if (statement.includes('=')) {
        connection.exec(`PRAGMA ${statement}`);
        return undefined;
      }
      const row = connection.prepare(`PRAGMA ${statement}`).get() as Record<string, unknown> | undefined;
      return row ? Object.values(row)[0] : undefined;
    },
    close: () => {
      if (connection.isOpen) connection.close();
    },
    get isOpen() {
      return connection.isOpen;
    },
  };
  if (!readonly) {
    database.pragma('journal_mode = WAL');
    database.pragma('busy_timeout = 5000');
  }
  return database;
}
