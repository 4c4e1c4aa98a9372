/**
 * One source's rolling window: the last WINDOW (value, time) samples, the replay memory of its
 * value stream, which runs of the window repeated a run seen before, and the features and
 * embedding cosines of the windows a decision weighs.
 */
import { FEATURE_COUNT, type FeatureExtractor, WINDOW } from './features';
import { ReplayDetector, type SavedReplayMemory } from './replay';

export type SampleVerdict = 'accepted' | 'out_of_order' | 'duplicate_time';

/**
 * A decision weighs the source's last DECISION_WINDOWS disjoint windows (256 readings: 2.56 s at
 * 100 Hz, 4.3 min at 1 Hz): one 64-reading window carries too little of a unit's physics.
 */
export const DECISION_WINDOWS = 4;

/**
 * A source gets a new decision every this many readings, and the readings between carry the
 * latest: windows 16 readings apart share 48 of their 64, so deciding at each reading bought
 * little but cost the whole check (features, network, distance) per message, where routing a
 * message through a Node-RED node costs a few µs (bench/gateway). A replay is still caught at the
 * reading it shows in.
 */
export const DECISION_EVERY = 16;
/** Calls to decide() apart that two disjoint windows are when the node decides every DECISION_EVERY readings. */
const NODE_STRIDE = WINDOW / DECISION_EVERY;

/**
 * A pause this many typical intervals long, and this many times the longest recent one, starts a
 * fresh window (the sensor stalled or restarted, the clock stepped). The second rule is for
 * gateways that forward readings in batches: their arrivals come microseconds apart and then a
 * batch's length apart, which is how that source always arrives, not a restart.
 */
const GAP_RESET = 50;
const GAP_OVER_LONGEST = 8;
/** Per reading, how much of the longest recent interval is remembered (half after ~70 readings). */
const LONGEST_DECAY = 0.99;

/** Of the runs ending in a window, this share of the informative ones seen before makes it a replay. */
const REPLAY_SHARE = 0.5;
/** Fewer informative runs than this in a window and it cannot be called a replay (nor cleared). */
const MIN_INFORMATIVE_RUNS = 8;

/** What a decision is computed from: the mean features and the mean cosine of its windows. */
export interface DecisionInput {
  features: Float64Array;
  cosine: number;
  windows: number;
}

export class SourceWindow {
  private readonly values = new Float64Array(WINDOW);
  private readonly times = new Float64Array(WINDOW);
  /** Per sample of the window: 2 = its run was seen before, 1 = new, 0 = uninformative. */
  private readonly runs = new Uint8Array(WINDOW);
  private seenRuns = 0;
  private informativeRuns = 0;
  /** Features and cosines of the windows of the last DECISION_WINDOWS × NODE_STRIDE decisions. */
  private readonly pastFeatures = new Float32Array(DECISION_WINDOWS * NODE_STRIDE * FEATURE_COUNT);
  private readonly pastCosines = new Float32Array(DECISION_WINDOWS * NODE_STRIDE);
  private scored = 0;
  private readonly decision: DecisionInput = { features: new Float64Array(FEATURE_COUNT), cosine: 0, windows: 0 };
  private readonly replay: ReplayDetector;
  private next = 0;
  /** Samples accepted since the window was last reset. */
  count = 0;
  lastTime = -Infinity;
  private typicalInterval = 0;
  /** Longest interval lately, decaying: kept across a fresh window, so a batch cadence is learnt once. */
  private longestInterval = 0;
  /** Readings in a row refused as older than lastTime. */
  private behind = 0;

  constructor(replayMemory: number) {
    this.replay = new ReplayDetector(replayMemory);
  }

  get full(): boolean {
    return this.count >= WINDOW;
  }

  /** True on every WINDOW-th reading since the last fresh start: disjoint windows end there (enrolment). */
  get closesWindow(): boolean {
    return this.full && this.count % WINDOW === 0;
  }

  /** True when the latest reading should get a decision of its own (see DECISION_EVERY). */
  get decisionDue(): boolean {
    return this.scored === 0 || this.count % DECISION_EVERY === 0;
  }

  /** True when at least half the informative value runs ending in the current window were seen before. */
  get replayed(): boolean {
    return this.informativeRuns >= MIN_INFORMATIVE_RUNS && this.seenRuns >= REPLAY_SHARE * this.informativeRuns;
  }

  push(value: number, time: number): SampleVerdict {
    if (time === this.lastTime) return 'duplicate_time';
    if (time < this.lastTime) {
      // A clock stepped back, or one stamp from the future (µs for ms): without this the source
      // would be refused for good. A window's worth of readings all behind it starts afresh.
      if (++this.behind < WINDOW) return 'out_of_order';
      this.count = this.scored = 0;
      this.lastTime = Number.NEGATIVE_INFINITY;
    }
    this.behind = 0;
    const interval = time - this.lastTime;
    if (Number.isFinite(interval)) {
      const stalled = interval > GAP_RESET * this.typicalInterval && interval > GAP_OVER_LONGEST * this.longestInterval;
      if (this.count >= 2 && stalled) this.count = this.scored = 0;
      this.longestInterval = Math.max(interval, LONGEST_DECAY * this.longestInterval);
    }
    if (this.count >= 1)
      this.typicalInterval = this.count === 1 ? interval : 0.9 * this.typicalInterval + 0.1 * interval;
    this.lastTime = time;
    const slot = this.next;
    this.forgetRun(this.runs[slot]);
    // Intervals in whole µs: the same stamps shifted in time must give the same run, and a
    // difference of epoch milliseconds carries ~0.2 µs of rounding.
    const run = this.replay.observe(value, this.count >= 1 ? Math.round(interval * 1000) : Number.NaN);
    this.runs[slot] = run === 'seen' ? 2 : run === 'new' ? 1 : 0;
    if (this.runs[slot] === 2) this.seenRuns++;
    if (this.runs[slot] > 0) this.informativeRuns++;
    this.values[slot] = value;
    this.times[slot] = time;
    this.next = (slot + 1) % WINDOW;
    this.count++;
    return 'accepted';
  }

  private forgetRun(run: number): void {
    if (run === 2) this.seenRuns--;
    if (run > 0) this.informativeRuns--;
  }

  /** Writes the current window's features (oldest sample first) into `out` at `offset`. */
  features(extractor: FeatureExtractor, out: Float32Array, offset: number): void {
    extractor.extract(this.values, this.times, out, offset, this.next);
  }

  /**
   * Records the features and cosine of the window ending at the latest sample and returns what
   * the decision is made of: their means with those of the up to DECISION_WINDOWS - 1 disjoint
   * windows before it. `stride` is how many calls apart two disjoint windows are: NODE_STRIDE when
   * every DECISION_EVERY-th reading is scored (the node), 1 when only whole windows are (the evaluation).
   */
  decide(features: Float32Array, offset: number, cosine: number, stride = NODE_STRIDE): DecisionInput {
    const slots = this.pastCosines.length;
    const slot = this.scored % slots;
    this.pastFeatures.set(features.subarray(offset, offset + FEATURE_COUNT), slot * FEATURE_COUNT);
    this.pastCosines[slot] = cosine;
    this.scored++;
    const { decision } = this;
    decision.features.fill(0);
    decision.cosine = 0;
    decision.windows = 0;
    for (let back = 0; back < DECISION_WINDOWS && back * stride < this.scored; back++) {
      const past = (this.scored - 1 - back * stride) % slots;
      for (let f = 0; f < FEATURE_COUNT; f++) decision.features[f] += this.pastFeatures[past * FEATURE_COUNT + f];
      decision.cosine += this.pastCosines[past];
      decision.windows++;
    }
    for (let f = 0; f < FEATURE_COUNT; f++) decision.features[f] /= decision.windows;
    decision.cosine /= decision.windows;
    return decision;
  }

  /** Forgets past windows (a new profile makes them meaningless). */
  resetDecisions(): void {
    this.scored = 0;
  }

  saveReplayMemory(): SavedReplayMemory {
    return this.replay.save();
  }

  restoreReplayMemory(saved: SavedReplayMemory): boolean {
    return this.replay.restore(saved);
  }
}
