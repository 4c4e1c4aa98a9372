/**
 * The proof ids a token check has accepted, each until the moment its proof would be too old
 * anyway. Two rules hold whatever the load: an entry is never forgotten before its time (else
 * the oldest proofs replay), and a full cache refuses new proofs rather than make room. The
 * file-backed cache survives a redeploy and a restart of Node-RED, so nothing captured in the
 * last minutes can be played back after one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type SqliteDatabase, openSqlite } from '../sqlite';

export type Remembered = 'fresh' | 'replay' | 'full';

export interface ReplayCache {
  /** Remembers `key` until `untilMs`: `fresh`, or `replay` if it is remembered already, or `full`. */
  remember(key: string, untilMs: number, nowMs: number): Remembered;
  close(): void;
}

/** Entries kept at most: about 60 MB in memory, and 1,600 messages a second for five minutes. */
export const DEFAULT_MAX_ENTRIES = 500_000;

/** In memory: for tests and for a check whose node cannot write files. */
export class MemoryReplayCache implements ReplayCache {
  private readonly entries = new Map<string, number>();

  constructor(private readonly maxEntries = DEFAULT_MAX_ENTRIES) {}

  remember(key: string, untilMs: number, nowMs: number): Remembered {
    const until = this.entries.get(key);
    if (until !== undefined && until > nowMs) return 'replay';
    if (this.entries.size >= this.maxEntries) this.dropExpired(nowMs);
    if (this.entries.size >= this.maxEntries) return 'full';
    this.entries.delete(key);
    this.entries.set(key, untilMs);
    return 'fresh';
  }

  /** Entries go in about in expiry order (one proof age for all): the expired are at the front. */
  private dropExpired(nowMs: number): void {
    for (const [key, until] of this.entries) {
      if (until > nowMs) break;
      this.entries.delete(key);
    }
  }

  close(): void {
    this.entries.clear();
  }
}

/** In a SQLite file (mode 0600) under the node's data directory. */
export class FileReplayCache implements ReplayCache {
  private readonly db: SqliteDatabase;
  private readonly insert;
  private readonly expire;
  private readonly count;
  private readonly find;
  private live: number;
  private insertsSinceExpiry = 0;

  constructor(
    file: string,
    private readonly maxEntries = DEFAULT_MAX_ENTRIES,
  ) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.db = openSqlite(file);
    this.db.exec(`CREATE TABLE IF NOT EXISTS proofs (key TEXT PRIMARY KEY, until INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS proofs_until ON proofs (until);`);
    // Insert, or take over an expired entry's row; a live entry is left as it is (a replay).
    this.insert = this.db.prepare(`INSERT INTO proofs (key, until) VALUES (?, ?)
      ON CONFLICT (key) DO UPDATE SET until = excluded.until WHERE proofs.until <= ?`);
    this.expire = this.db.prepare('DELETE FROM proofs WHERE until <= ?');
    this.count = this.db.prepare('SELECT count(*) AS n FROM proofs');
    this.find = this.db.prepare('SELECT until FROM proofs WHERE key = ?');
    this.live = (this.count.get() as { n: number }).n;
  }

  remember(key: string, untilMs: number, nowMs: number): Remembered {
    // Expired rows go every thousand inserts, and whenever the cache looks full.
    if (this.live >= this.maxEntries || ++this.insertsSinceExpiry >= 1000) {
      this.insertsSinceExpiry = 0;
      this.expire.run(nowMs);
      this.live = (this.count.get() as { n: number }).n;
    }
    if (this.live >= this.maxEntries) {
      // Full: nothing new goes in, but a replay of a live entry is still called a replay.
      const found = this.find.get(key) as { until: number } | undefined;
      return found && found.until > nowMs ? 'replay' : 'full';
    }
    if (this.insert.run(key, untilMs, nowMs).changes === 0) return 'replay';
    this.live++;
    return 'fresh';
  }

  close(): void {
    this.db.close();
  }
}
