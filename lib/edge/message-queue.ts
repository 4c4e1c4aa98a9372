/**
 * Messages waiting for a token, in order, bounded by count and bytes, and kept in a file under
 * the user dir so a restart loses none: each message is appended as a JSON line when it is
 * queued, and the file rewritten when messages leave. Past either bound the oldest message is
 * handed back (to be routed with a reason), never dropped.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface QueueLimits {
  maxMessages: number;
  maxBytes: number;
}

interface Entry<T> {
  item: T;
  bytes: number;
}

export class MessageQueue<T> {
  private entries: Array<Entry<T>> = [];
  private bytes = 0;
  /** Lines of the file that did not parse when it was read back (a torn last write). */
  readonly unreadable: number = 0;

  constructor(
    private readonly file: string,
    private readonly limits: QueueLimits,
  ) {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    let unreadable = 0;
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        this.entries.push({ item: JSON.parse(line) as T, bytes: Buffer.byteLength(line) });
        this.bytes += Buffer.byteLength(line);
      } catch {
        unreadable++;
      }
    }
    this.unreadable = unreadable;
  }

  get length(): number {
    return this.entries.length;
  }

  /** Queues `item`; returns the messages pushed out to stay within the bounds, oldest first. */
  push(item: T): T[] {
    const line = JSON.stringify(item);
    const bytes = Buffer.byteLength(line);
    this.entries.push({ item, bytes });
    this.bytes += bytes;
    const out: T[] = [];
    while (
      this.entries.length > 1 &&
      (this.entries.length > this.limits.maxMessages || this.bytes > this.limits.maxBytes)
    ) {
      const oldest = this.entries.shift()!;
      this.bytes -= oldest.bytes;
      out.push(oldest.item);
    }
    if (out.length) this.rewrite();
    else fs.appendFileSync(this.file, `${line}\n`, { mode: 0o600 });
    return out;
  }

  /** Takes every message out, oldest first. */
  takeAll(): T[] {
    const all = this.entries.map(entry => entry.item);
    this.entries = [];
    this.bytes = 0;
    this.rewrite();
    return all;
  }

  private rewrite(): void {
    const text = this.entries.map(entry => `${JSON.stringify(entry.item)}\n`).join('');
    const temp = `${this.file}.tmp`;
    fs.writeFileSync(temp, text, { mode: 0o600 });
    fs.renameSync(temp, this.file);
  }
}
