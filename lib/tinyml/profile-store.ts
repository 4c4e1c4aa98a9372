/**
 * Enrolled profiles on disk: one JSON file per node under the user dir, written atomically
 * (temp file + rename) so a power cut never leaves half a file. Profiles learnt with another
 * model are skipped and counted, never used: their centroids mean nothing to this model. A
 * corrupt file is moved aside (kept for a person to look at) and the node starts empty.
 */
import * as fs from 'node:fs';
import { array, type Infer, number, object, record, string, unknownValue } from '../schema';
import type { SourceProfile } from './profile';

const profileSchema = object({
  centroid: array(number(), { maxItems: 1024 }),
  threshold: number({ min: 0, max: 1 }),
  windows: number({ integer: true, min: 1 }),
  enrolledAt: string({ maxLength: 64 }),
});

const fileSchema = object({
  model: string({ maxLength: 200 }),
  profiles: record(unknownValue(), { maxKeys: 1_000_000 }),
});

export interface ProfileLoad {
  /** Profiles left out: learnt with another model, or malformed. */
  skipped: number;
  /** Why the file could not be used at all, when it could not. */
  problem?: string;
}

export class ProfileStore {
  private readonly profiles = new Map<string, SourceProfile>();
  private saveTimer: NodeJS.Timeout | undefined;
  readonly loaded: ProfileLoad;
  /** Hears of writes that failed (full disk, removed folder): profiles stay in memory, the next change retries. */
  onSaveError: (err: Error) => void = () => {};

  constructor(
    private readonly file: string,
    private readonly modelId: string,
    private readonly embeddingSize: number,
  ) {
    this.loaded = this.load();
  }

  private load(): ProfileLoad {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { skipped: 0 };
      return { skipped: 0, problem: `${this.file}: ${(err as Error).message}` };
    }
    let parsed: Infer<typeof fileSchema>;
    try {
      parsed = fileSchema.parse(JSON.parse(text), 'profiles file');
    } catch (err) {
      const aside = `${this.file}.corrupt-${Date.now()}`;
      fs.renameSync(this.file, aside);
      return {
        skipped: 0,
        problem: `${this.file} is not a profiles file (${(err as Error).message}); moved to ${aside}`,
      };
    }
    const entries = Object.entries(parsed.profiles);
    if (parsed.model !== this.modelId)
      return {
        skipped: entries.length,
        problem: `profiles were learnt with model ${parsed.model}, this node runs ${this.modelId}: re-enrol`,
      };
    let skipped = 0;
    for (const [source, raw] of entries) {
      try {
        const profile = profileSchema.parse(raw);
        if (profile.centroid.length !== this.embeddingSize) throw new Error('centroid size');
        this.profiles.set(source, profile);
      } catch {
        skipped++;
      }
    }
    return { skipped };
  }

  get size(): number {
    return this.profiles.size;
  }

  get(source: string): SourceProfile | undefined {
    return this.profiles.get(source);
  }

  set(source: string, profile: SourceProfile): void {
    this.profiles.set(source, profile);
    this.scheduleSave();
  }

  private scheduleSave(): void {
    // Enrolments come in bursts; one write a second is plenty.
    this.saveTimer ??= setTimeout(() => {
      try {
        this.flush();
      } catch (err) {
        this.onSaveError(err as Error);
      }
    }, 1000);
  }

  /** Writes pending changes now (on close, and from the timer); throws when the write fails. */
  flush(): void {
    if (!this.saveTimer) return;
    clearTimeout(this.saveTimer);
    this.saveTimer = undefined;
    const temp = `${this.file}.tmp`;
    fs.writeFileSync(temp, JSON.stringify({ model: this.modelId, profiles: Object.fromEntries(this.profiles) }), {
      mode: 0o600,
    });
    fs.renameSync(temp, this.file);
  }
}
