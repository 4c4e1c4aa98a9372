/**
 * The device-behaviour check behind m2m-tinyml-verify, free of Node-RED: per-source rolling
 * windows (live state bounded by an LRU), enrolment (by windows, or by time for slow sources),
 * replay memory (kept with the profiles across restarts), and a verdict as each reading arrives:
 * a decision every DECISION_EVERY readings (the runtime's network costs the same per window alone
 * as in a batch of 64, bench/tinyml), so a verdict never waits for company.
 *
 * Only enrolled or enrolling sources get live state, so a flood of unknown ids costs nothing
 * but a Map lookup.
 */
import { FEATURE_COUNT, FeatureExtractor, type FeatureName } from './features';
import type { BehaviourModel } from './model';
import { OneClassScorer } from './one-class';
import { cosineTo, enrol, reportedScore, scoreOf, type SourceProfile } from './profile';
import type { ProfileStore } from './profile-store';
import { DECISION_WINDOWS, SourceWindow } from './source-window';

export interface MonitorOptions {
  /** Windows of genuine data a profile is learnt from. */
  enrolWindows: number;
  /**
   * Or enrolment ends after this long (ms of the source's time) once it has MIN_ENROL_WINDOWS:
   * 20 windows of 64 readings take 21 minutes at 1 Hz and 3.6 hours at 0.1 Hz.
   */
  enrolMs?: number;
  /** Sources with live windows kept in memory; the least recently seen is dropped beyond. */
  maxSources: number;
  /** Samples per source the replay memory spans. */
  replayMemory: number;
  /** Enrol sources without a profile as they appear (the editor's enrol mode). */
  autoEnrol: boolean;
  /** A source's threshold, when set, replaces the one its enrolment set. */
  thresholdOverride?: number;
  /**
   * A source outside the model's training range: `reject` (the default) sends its decisions to
   * output 2 as out_of_range; `one-class` trusts them by its own statistics alone.
   */
  outOfRange?: OutOfRangePolicy;
}

export type OutOfRangePolicy = 'reject' | 'one-class';

/** An enrolment by time still needs this many windows. */
export const MIN_ENROL_WINDOWS = 4;
/**
 * Two enrolled sources closer than this (one-class distance per dimension; about 1 is a source's
 * own scatter) cannot be told apart: the other's decisions would score like the source's own. On
 * the second generator 92-94 % of such warnings are true (the other unit passes at least half of
 * its decisions); the model card has the figures.
 */
export const SEPARATION_WARNING = 1.5;

export type UnverifiedReason = 'not_enrolled' | 'enrolling' | 'warming_up';
export type RejectedReason = 'invalid_value' | 'invalid_time' | 'out_of_order' | 'duplicate_time';

export type Verdict =
  | {
      status: 'scored';
      score: number;
      threshold: number;
      trusted: boolean;
      replay: boolean;
      /** Features outside the model's training range: scored by the one-class part only. */
      outOfRange?: FeatureName[];
      /** Another enrolled source this one cannot be told apart from. */
      separation?: Separation;
      /** Why a decision is not trusted whatever its score. */
      refused?: 'out_of_range';
      /** The source's enrolment could not support a confident threshold of its own. */
      weakEnrolment?: true;
    }
  | { status: 'unverified'; reason: UnverifiedReason; enrolled?: number }
  | { status: 'rejected'; reason: RejectedReason };

/** How close a newly enrolled source is to the nearest other one. */
export interface Separation {
  nearest: string;
  distance: number;
}

export interface Enrolled {
  source: string;
  profile: SourceProfile;
  separation?: Separation;
}

interface Enrolment {
  features: Float32Array;
  collected: number;
  startedAt: number;
}

interface LiveSource {
  window: SourceWindow;
  enrolment?: Enrolment;
  /** The latest decision's score, before a replay zeroes it, and the profile it was made against. */
  decision?: { profile: SourceProfile; score: number };
}

/**
 * Readings beyond this are not a sensor's: squared in the features (~1e154 and up overflows), one
 * would turn a profile into NaN. Far above any physical reading or counter, and exact integers end
 * near 9e15 anyway.
 */
export const MAX_READING = 1e15;

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
  private readonly scorers = new Map<string, { profile: SourceProfile; scorer: OneClassScorer }>();
  private readonly extractor = new FeatureExtractor();
  private readonly features = new Float32Array(FEATURE_COUNT);
  /** Live sources dropped by the LRU since start. */
  evicted = 0;
  /** Called after a source's profile is learnt. */
  onEnrolled: (enrolled: Enrolled) => void = () => {};

  constructor(
    private readonly model: BehaviourModel,
    private readonly profiles: ProfileStore,
    private readonly options: MonitorOptions,
  ) {}

  get liveSources(): number {
    return this.live.size;
  }

  /** Starts (or restarts) learning `source`'s profile from its next windows. */
  startEnrolment(source: string): void {
    const state = this.touch(source);
    state.enrolment = {
      features: new Float32Array(this.options.enrolWindows * FEATURE_COUNT),
      collected: 0,
      startedAt: Number.NaN,
    };
  }

  /** Takes one sample of `source`; the verdict says how its message should be routed. */
  observe(source: string, rawValue: unknown, rawTime: unknown): Verdict {
    const value = numericValue(rawValue);
    if (value === undefined || Math.abs(value) > MAX_READING) return { status: 'rejected', reason: 'invalid_value' };
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

    if (state.enrolment) return this.collect(source, state, state.enrolment, time);
    if (!profile) return { status: 'unverified', reason: 'not_enrolled' };
    if (!state.window.full) return { status: 'unverified', reason: 'warming_up' };
    return this.score(source, profile, state);
  }

  /** Saves every live source's replay memory with its profile (on close, and now and then). */
  saveReplayMemory(): void {
    for (const [source, state] of this.live) {
      if (this.profiles.get(source)) this.profiles.setReplayMemory(source, state.window.saveReplayMemory());
    }
  }

  private touch(source: string): LiveSource {
    let state = this.live.get(source);
    if (state) this.live.delete(source);
    else {
      state = { window: new SourceWindow(this.options.replayMemory) };
      const saved = this.profiles.replayMemory(source);
      if (saved) state.window.restoreReplayMemory(saved);
    }
    this.live.set(source, state);
    while (this.live.size > this.options.maxSources) {
      const [oldest, dropped] = this.live.entries().next().value!;
      if (this.profiles.get(oldest)) this.profiles.setReplayMemory(oldest, dropped.window.saveReplayMemory());
      this.live.delete(oldest);
      this.evicted++;
    }
    return state;
  }

  private collect(source: string, state: LiveSource, enrolment: Enrolment, time: number): Verdict {
    if (Number.isNaN(enrolment.startedAt)) enrolment.startedAt = time;
    // Enrolment windows do not overlap.
    if (state.window.closesWindow) {
      state.window.features(this.extractor, enrolment.features, enrolment.collected * FEATURE_COUNT);
      enrolment.collected++;
      const { enrolMs, enrolWindows } = this.options;
      const longEnough =
        enrolMs !== undefined && enrolment.collected >= MIN_ENROL_WINDOWS && time - enrolment.startedAt >= enrolMs;
      if (enrolment.collected === enrolWindows || longEnough) this.finishEnrolment(source, state, enrolment);
    }
    return { status: 'unverified', reason: 'enrolling', enrolled: enrolment.collected };
  }

  private finishEnrolment(source: string, state: LiveSource, enrolment: Enrolment): void {
    const rows = enrolment.collected;
    const features = enrolment.features.subarray(0, rows * FEATURE_COUNT);
    const profile = enrol(features, this.model.embed(features, rows), rows, this.model);
    const separation = this.separation(source, profile);
    if (separation) profile.separation = separation;
    this.profiles.set(source, profile);
    this.profiles.setReplayMemory(source, state.window.saveReplayMemory());
    this.scorers.delete(source);
    state.enrolment = undefined;
    state.window.resetDecisions();
    this.onEnrolled({ source, profile, separation });
  }

  /** The enrolled source nearest to `profile`, in one-class distance either way round. */
  private separation(source: string, profile: SourceProfile): Separation | undefined {
    let nearest: Separation | undefined;
    const own = new OneClassScorer(profile.oneClass);
    for (const other of this.profiles.sources()) {
      const theirs = this.profiles.get(other);
      if (other === source || !theirs) continue;
      const distance = own.separation(this.scorerOf(other, theirs), DECISION_WINDOWS);
      if (!nearest || distance < nearest.distance) nearest = { nearest: other, distance };
    }
    return nearest;
  }

  private scorerOf(source: string, profile: SourceProfile): OneClassScorer {
    let entry = this.scorers.get(source);
    if (!entry || entry.profile !== profile) {
      entry = { profile, scorer: new OneClassScorer(profile.oneClass) };
      this.scorers.set(source, entry);
    }
    return entry.scorer;
  }

  /**
   * The source's latest decision (made now when one is due: the window ending at this reading,
   * with those before it, against the source's profile), zeroed when this reading shows a replay.
   */
  private score(source: string, profile: SourceProfile, state: LiveSource): Verdict {
    const { window } = state;
    if (window.decisionDue || state.decision?.profile !== profile) {
      const { features } = this;
      window.features(this.extractor, features, 0);
      const embedding = this.model.embed(features, 1);
      const decision = window.decide(features, 0, cosineTo(embedding, 0, profile.centroid));
      const distance = this.scorerOf(source, profile).distance(decision.features, 0, decision.windows);
      state.decision = { profile, score: scoreOf(distance, decision.cosine, profile, this.model.metadata) };
    }
    const replay = window.replayed;
    const threshold = this.options.thresholdOverride ?? profile.threshold;
    const score = replay ? 0 : state.decision.score;
    const refused = profile.outOfRange.length && this.options.outOfRange !== 'one-class';
    return {
      status: 'scored',
      score: reportedScore(score, profile),
      threshold,
      trusted: !refused && score >= threshold,
      replay,
      ...(refused ? { refused: 'out_of_range' as const } : {}),
      ...(profile.weakEnrolment ? { weakEnrolment: true as const } : {}),
      ...(profile.outOfRange.length ? { outOfRange: profile.outOfRange } : {}),
      ...(profile.separation && profile.separation.distance < SEPARATION_WARNING
        ? { separation: profile.separation }
        : {}),
    };
  }
}
