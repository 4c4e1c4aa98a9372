/**
 * One source's rolling window: the last WINDOW (value, time) samples, the replay memory of its
 * value stream, and which samples of the window repeated a run seen before.
 */
import { type FeatureExtractor, WINDOW } from './features';
import { GRAM, ReplayDetector } from './replay';

export type SampleVerdict = 'accepted' | 'out_of_order' | 'duplicate_time';

/**
 * A decision weighs the source's last DECISION_WINDOWS disjoint windows (2.56 s at 100 Hz):
 * one 64-sample window carries too little of a unit's physics to tell two units of one model
 * apart reliably, four do.
 */
export const DECISION_WINDOWS = 4;

/** A pause this many typical intervals long starts a fresh window (the sensor restarted). */
const GAP_RESET = 50;

/** Runs in a window that must have been seen before for the window to count as a replay. */
const REPLAY_SHARE = 0.5;
const RUNS_PER_WINDOW = WINDOW - GRAM + 1;

export class SourceWindow {
  private readonly values = new Float64Array(WINDOW);
  private readonly times = new Float64Array(WINDOW);
  private readonly repeated = new Uint8Array(WINDOW);
  /** Window cosines of the last DECISION_WINDOWS × WINDOW samples, by sample. */
  private readonly scores = new Float32Array(DECISION_WINDOWS * WINDOW);
  private scored = 0;
  private readonly replay: ReplayDetector;
  private next = 0;
  private repeatedCount = 0;
  /** Samples accepted since the window was last reset. */
  count = 0;
  lastTime = -Infinity;
  private typicalInterval = 0;

  constructor(replayMemory: number) {
    this.replay = new ReplayDetector(replayMemory);
  }

  get full(): boolean {
    return this.count >= WINDOW;
  }

  /** True when at least half the value runs ending in the current window were seen before. */
  get replayed(): boolean {
    return this.repeatedCount >= REPLAY_SHARE * RUNS_PER_WINDOW;
  }

  push(value: number, time: number): SampleVerdict {
    if (time === this.lastTime) return 'duplicate_time';
    if (time < this.lastTime) return 'out_of_order';
    const interval = time - this.lastTime;
    if (this.count >= 2 && interval > GAP_RESET * this.typicalInterval) this.count = this.scored = 0;
    if (this.count >= 1)
      this.typicalInterval = this.count === 1 ? interval : 0.9 * this.typicalInterval + 0.1 * interval;
    this.lastTime = time;
    const slot = this.next;
    this.repeatedCount -= this.repeated[slot];
    this.repeated[slot] = this.replay.observe(value) ? 1 : 0;
    this.repeatedCount += this.repeated[slot];
    this.values[slot] = value;
    this.times[slot] = time;
    this.next = (slot + 1) % WINDOW;
    this.count++;
    return 'accepted';
  }

  /**
   * Records the cosine of the window ending at the latest sample and returns the decision's: the
   * mean of it and those of the up to DECISION_WINDOWS - 1 disjoint windows before it.
   */
  decide(windowCosine: number): number {
    const ring = this.scores.length;
    this.scores[this.scored % ring] = windowCosine;
    this.scored++;
    let sum = 0;
    let used = 0;
    for (let back = 0; back < DECISION_WINDOWS && back * WINDOW < this.scored; back++) {
      sum += this.scores[(this.scored - 1 - back * WINDOW) % ring];
      used++;
    }
    return sum / used;
  }

  /** Forgets past scores (a new profile makes them meaningless). */
  resetDecisions(): void {
    this.scored = 0;
  }

  /** Writes the current window's features (oldest sample first) into `out` at `offset`. */
  features(extractor: FeatureExtractor, out: Float32Array, offset: number): void {
    extractor.extract(this.values, this.times, out, offset, this.next);
  }
}
