/**
 * The event ids a receiver has processed, so a retried or replayed webhook is processed once.
 * Senders retry for days (ours up to about three, Didit's undocumented), so ids are kept for
 * `retentionMs` in a SQLite file (or in memory), bounded by `maxEntries`, and survive a restart.
 */
import { type SqliteDatabase, type SqliteStatement, openSqlite } from '../sqlite';

export interface SeenEventsOptions {
  /** A file path, or ':memory:' */
  file: string;
  retentionMs?: number;
  maxEntries?: number;
  now?: () => number;
}

export class SeenEvents {
  private readonly db: SqliteDatabase;
  private readonly insert: SqliteStatement;
  private readonly expire: SqliteStatement;
  private readonly trim: SqliteStatement;
  private readonly retentionMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  private insertsSinceTrim = 0;

  constructor(options: SeenEventsOptions) {
    this.retentionMs = options.retentionMs ?? 7 * 86_400_000;
    this.maxEntries = options.maxEntries ?? 200_000;
    this.now = options.now ?? Date.now;
    this.db = openSqlite(options.file);
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(
      'CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, seen_at INTEGER NOT NULL); CREATE INDEX IF NOT EXISTS seen_at ON seen (seen_at);',
    );
    this.insert = this.db.prepare('INSERT INTO seen (key, seen_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING');
    this.expire = this.db.prepare('DELETE FROM seen WHERE seen_at < ?');
    this.trim = this.db.prepare(
      'DELETE FROM seen WHERE key IN (SELECT key FROM seen ORDER BY seen_at DESC LIMIT -1 OFFSET ?)',
    );
  }

  /** Records `key`; false when it was already there (a duplicate). */
  firstTime(key: string): boolean {
    const now = this.now();
    const fresh = this.insert.run(key, now).changes === 1;
    // Bounded without a timer: every thousandth insert drops the expired and the excess.
    if (fresh && ++this.insertsSinceTrim >= 1000) {
      this.insertsSinceTrim = 0;
      this.expire.run(now - this.retentionMs);
      this.trim.run(this.maxEntries);
    }
    return fresh;
  }

  close(): void {
    this.db.close();
  }
}
