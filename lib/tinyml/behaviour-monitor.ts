/**
 * The device-behaviour check behind m2m-tinyml-verify, free of Node-RED: per-source rolling
 * windows (live state bounded by an LRU), enrolment, replay memory, and scoring in micro-batches
 * (windows that complete in the same tick share one model call).
 *
 * Only enrolled or enrolling sources get live state, so a flood of unknown ids costs nothing
 * but a Map lookup.
 */
import { FEATURE_COUNT, FeatureExtractor, WINDOW } from './features';
import type { BehaviourModel } from './model';
import { cosineTo, enrol, scoreOf } from './profile';
import type { ProfileStore } from './profile-store';
import { DECISION_WINDOWS, SourceWindow } from './source-window';

export interface MonitorOptions {
  /** Windows of genuine data a profile is learnt from. */
  enrolWindows: number;
  /** Sources with live windows kept in memory; the least recently seen is dropped beyond. */
  maxSources: number;
  /** Samples per source the replay memory spans. */
  replayMemory: number;
  /** Enrol sources without a profile as they appear (the editor's enrol mode). */
  autoEnrol: boolean;
  /** Completed windows per model call at most. */
  maxBatch: number;
  /** A source's threshold, when set, replaces the calibrated one. */
  thresholdOverride?: number;
}

export type UnverifiedReason = 'not_enrolled' | 'enrolling' | 'warming_up';
export type RejectedReason = 'invalid_value' | 'invalid_time' | 'out_of_order' | 'duplicate_time';

export type Verdict =
  | { status: 'scored'; score: number; threshold: number; trusted: boolean; replay: boolean }
  | { status: 'unverified'; reason: UnverifiedReason; enrolled?: number }
  | { status: 'rejected'; reason: RejectedReason };

interface Enrolment {
  features: Float32Array;
  collected: number;
}

interface LiveSource {
  window: SourceWindow;
  enrolment?: Enrolment;
}

interface Pending {
  source: string;
  window: SourceWindow;
  replay: boolean;
  resolve(verdict: Verdict): void;
}

/** A finite number from a number or numeric string, else undefined. */
export function numericValue(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value === 'string' && value.trim() !== '') {
    const parsed = Number(value);
    return Number.isFinite(parsed) ? parsed : undefined;
  }
  return undefined;
}

/** Milliseconds from a number, numeric string, Date or date string, else undefined. */
export function timeValue(value: unknown): number | undefined {
  if (value instanceof Date) return numericValue(value.getTime());
  const numeric = numericValue(value);
  if (numeric !== undefined) return numeric;
  return typeof value === 'string' ? numericValue(Date.parse(value)) : undefined;
}

export class BehaviourMonitor {
  private readonly live = new Map<string, LiveSource>();
  private readonly extractor = new FeatureExtractor();
  private readonly batch: Float32Array;
  private pending: Pending[] = [];
  private flushScheduled: NodeJS.Immediate | undefined;
  /** Live sources dropped by the LRU since start. */
  evicted = 0;
  /** Called after a source's profile is learnt. */
  onEnrolled: (source: string) => void = () => {};

  constructor(
    private readonly model: BehaviourModel,
    private readonly profiles: ProfileStore,
    private readonly options: MonitorOptions,
  ) {
    this.batch = new Float32Array(options.maxBatch * FEATURE_COUNT);
  }

  get liveSources(): number {
    return this.live.size;
  }

  /** Starts (or restarts) learning `source`'s profile from its next windows. */
  startEnrolment(source: string): void {
    const state = this.touch(source);
    state.enrolment = { features: new Float32Array(this.options.enrolWindows * FEATURE_COUNT), collected: 0 };
  }

  /** Takes one sample of `source`; the verdict says how its message should be routed. */
  observe(source: string, rawValue: unknown, rawTime: unknown): Promise<Verdict> | Verdict {
    const value = numericValue(rawValue);
    if (value === undefined) return { status: 'rejected', reason: 'invalid_value' };
    const time = timeValue(rawTime);
    if (time === undefined) return { status: 'rejected', reason: 'invalid_time' };

    const profile = this.profiles.get(source);
    if (!profile && !this.live.has(source)) {
      if (!this.options.autoEnrol) return { status: 'unverified', reason: 'not_enrolled' };
      this.startEnrolment(source);
    }
    const state = this.touch(source);
    const accepted = state.window.push(value, time);
    if (accepted !== 'accepted') return { status: 'rejected', reason: accepted };

    if (state.enrolment) return this.collect(source, state, state.enrolment);
    if (!profile) return { status: 'unverified', reason: 'not_enrolled' };
    if (!state.window.full) return { status: 'unverified', reason: 'warming_up' };
    return this.enqueue(source, state.window);
  }

  private touch(source: string): LiveSource {
    let state = this.live.get(source);
    if (state) this.live.delete(source);
    else state = { window: new SourceWindow(this.options.replayMemory) };
    this.live.set(source, state);
    while (this.live.size > this.options.maxSources) {
      this.live.delete(this.live.keys().next().value!);
      this.evicted++;
    }
    return state;
  }

  private collect(source: string, state: LiveSource, enrolment: Enrolment): Verdict {
    // Enrolment windows do not overlap: every WINDOW-th sample closes one.
    if (state.window.full && state.window.count % WINDOW === 0) {
      state.window.features(this.extractor, enrolment.features, enrolment.collected * FEATURE_COUNT);
      enrolment.collected++;
      if (enrolment.collected === this.options.enrolWindows) {
        const embeddings = this.model.embed(enrolment.features, enrolment.collected);
        this.profiles.set(
          source,
          enrol(embeddings, enrolment.collected, this.model.embeddingSize, this.model.metadata, DECISION_WINDOWS),
        );
        state.enrolment = undefined;
        state.window.resetDecisions();
        this.onEnrolled(source);
      }
    }
    return { status: 'unverified', reason: 'enrolling', enrolled: enrolment.collected };
  }

  private enqueue(source: string, window: SourceWindow): Promise<Verdict> {
    return new Promise(resolve => {
      window.features(this.extractor, this.batch, this.pending.length * FEATURE_COUNT);
      this.pending.push({ source, window, replay: window.replayed, resolve });
      if (this.pending.length === this.options.maxBatch) this.flush();
      else this.flushScheduled ??= setImmediate(() => this.flush());
    });
  }

  /** Scores every queued window in one model call. */
  flush(): void {
    if (this.flushScheduled) clearImmediate(this.flushScheduled);
    this.flushScheduled = undefined;
    const queued = this.pending;
    if (!queued.length) return;
    this.pending = [];
    const embeddings = this.model.embed(this.batch, queued.length);
    queued.forEach((item, row) => {
      const profile = this.profiles.get(item.source);
      if (!profile) {
        item.resolve({ status: 'unverified', reason: 'not_enrolled' });
        return;
      }
      const threshold = this.options.thresholdOverride ?? profile.threshold;
      const decision = scoreOf(item.window.decide(cosineTo(embeddings, row, profile.centroid)), this.model.metadata);
      const score = item.replay ? 0 : decision;
      item.resolve({ status: 'scored', score, threshold, trusted: score >= threshold, replay: item.replay });
    });
  }
}
