/**
 * Enrolled profiles on disk, with each source's replay memory: one JSON file per node under the
 * user dir (`profiles-<node>.json`, and `.replay.json` beside it), written atomically (temp
 * file + rename) so a power cut never leaves half a file. Profiles learnt with another model are
 * skipped and counted, never used: their centroids mean nothing to this model. A corrupt file is
 * moved aside (kept for a person to look at) and the node starts empty.
 *
 * Replay memory is bounded: MAX_REPLAY_SOURCES sources (the least recently saved go first), each
 * as large as the node's replay memory (~87 KB of JSON for 65 536 readings).
 */
import * as fs from 'node:fs';
import { array, type Infer, literal, number, object, optional, record, string, unknownValue } from '../schema';
import { FEATURE_COUNT, FEATURE_NAMES } from './features';
import type { SourceProfile } from './profile';
import type { SavedReplayMemory } from './replay';

export const MAX_REPLAY_SOURCES = 200;

const profileSchema = object({
  centroid: array(number(), { maxItems: 1024 }),
  spread: number({ min: 0 }),
  oneClass: object({
    mean: array(number(), { maxItems: FEATURE_COUNT }),
    covariance: array(number(), { maxItems: FEATURE_COUNT * FEATURE_COUNT }),
    shrinkage: number({ min: 0, max: 1 }),
  }),
  threshold: number({ min: 0, max: 1 }),
  windows: number({ integer: true, min: 1 }),
  enrolledAt: string({ maxLength: 64 }),
  outOfRange: array(literal(...FEATURE_NAMES), { maxItems: FEATURE_COUNT }),
  separation: optional(object({ nearest: string({ maxLength: 1024 }), distance: number({ min: 0 }) })),
});

const fileSchema = object({
  model: string({ maxLength: 200 }),
  profiles: record(unknownValue(), { maxKeys: 1_000_000 }),
});

const replaySchema = object({
  current: string({ maxLength: 1 << 24 }),
  previous: string({ maxLength: 1 << 24 }),
  inserted: number({ integer: true, min: 0 }),
  savedAt: number(),
});
type StoredReplay = Infer<typeof replaySchema>;

export interface ProfileLoad {
  /** Profiles left out: learnt with another model, or malformed. */
  skipped: number;
  /** Why the file could not be used at all, when it could not. */
  problem?: string;
}

function writeAtomically(file: string, content: unknown): void {
  const temp = `${file}.tmp`;
  fs.writeFileSync(temp, JSON.stringify(content), { mode: 0o600 });
  fs.renameSync(temp, file);
}

export class ProfileStore {
  private readonly profiles = new Map<string, SourceProfile>();
  private readonly replay = new Map<string, StoredReplay>();
  private saveTimer: NodeJS.Timeout | undefined;
  private readonly replayFile: string;
  readonly loaded: ProfileLoad;
  /** Hears of writes that failed (full disk, removed folder): profiles stay in memory, the next change retries. */
  onSaveError: (err: Error) => void = () => {};

  constructor(
    private readonly file: string,
    private readonly modelId: string,
    private readonly embeddingSize: number,
  ) {
    this.replayFile = `${file.replace(/\.json$/, '')}.replay.json`;
    this.loaded = this.load();
    if (!this.loaded.problem) this.loadReplay();
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
        if (profile.oneClass.mean.length !== FEATURE_COUNT) throw new Error('feature count');
        this.profiles.set(source, profile);
      } catch {
        skipped++;
      }
    }
    return { skipped };
  }

  /** Replay memory is an aid: a file that does not read is started afresh, never fatal. */
  private loadReplay(): void {
    try {
      const parsed = record(unknownValue(), { maxKeys: MAX_REPLAY_SOURCES }).parse(
        JSON.parse(fs.readFileSync(this.replayFile, 'utf8')),
      );
      for (const [source, raw] of Object.entries(parsed)) {
        if (this.profiles.has(source)) this.replay.set(source, replaySchema.parse(raw));
      }
    } catch {
      this.replay.clear();
    }
  }

  get size(): number {
    return this.profiles.size;
  }

  sources(): IterableIterator<string> {
    return this.profiles.keys();
  }

  get(source: string): SourceProfile | undefined {
    return this.profiles.get(source);
  }

  set(source: string, profile: SourceProfile): void {
    this.profiles.set(source, profile);
    this.scheduleSave();
  }

  replayMemory(source: string): SavedReplayMemory | undefined {
    return this.replay.get(source);
  }

  setReplayMemory(source: string, memory: SavedReplayMemory): void {
    this.replay.delete(source);
    this.replay.set(source, { ...memory, savedAt: Date.now() });
    while (this.replay.size > MAX_REPLAY_SOURCES) this.replay.delete(this.replay.keys().next().value!);
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
    writeAtomically(this.file, { model: this.modelId, profiles: Object.fromEntries(this.profiles) });
    writeAtomically(this.replayFile, Object.fromEntries(this.replay));
  }
}
