/**
 * A source's enrolled profile and how a decision is scored against it. Two parts:
 *
 * - the one-class part (./one-class): the source's own feature statistics, with drift floors;
 *   its distance D is about 1 for the source itself, whatever sensor it is;
 * - the embedding part: the centroid of the network's window embeddings, and how far the
 *   source's own enrolment windows sit from it (`spread`), so a cosine distance reads in units of
 *   the source's own scatter.
 *
 * The decision statistic is S = ln(1 + D) + w · ln(1 + (1 − cos) / spread), with the embedding's
 * weight w fitted on validation units, and the score exp(−S / scale) ∈ (0, 1], the scale set so
 * that the validation operating point scores the model's threshold. A source whose features lie
 * outside what the network was trained on is scored by its one-class part alone (the network's
 * opinion would be made up), and its score never reaches the threshold's approval band: the
 * verifier reviews such evidence rather than approving it.
 */
import { FEATURE_COUNT, FEATURE_NAMES, type FeatureName } from './features';
import type { BehaviourModel, ModelMetadata } from './model';
import { fitOneClass, OneClassScorer, type OneClassProfile } from './one-class';
import { DECISION_WINDOWS } from './source-window';

export interface SourceProfile {
  centroid: number[];
  /** Mean cosine distance of the enrolment windows from the centroid (leave-one-out). */
  spread: number;
  oneClass: OneClassProfile;
  threshold: number;
  windows: number;
  enrolledAt: string;
  /** Features whose enrolment median lies outside the training range: the network is not used. */
  outOfRange: FeatureName[];
  /** The nearest other source enrolled at the time, in one-class distance (about 1: indistinguishable). */
  separation?: { nearest: string; distance: number };
  /**
   * The enrolment could not support a confident threshold of its own (too few windows, or its own
   * decisions scattered below the loosest threshold allowed): the source says so on every report.
   */
  weakEnrolment?: boolean;
}

/** How far below the model's threshold a noisy source's own threshold may go. */
export const MAX_RELAXATION = 0.05;
/** How far above it a steady source's own threshold may go: its impostors then pass far less. */
export const MAX_TIGHTENING = 0.15;
/**
 * Below the lowest score of the source's own held-out enrolment decisions, the threshold leaves
 * this for what changes between enrolment and use (hours, some kelvin). Each model states its
 * own, set on validation units so that their genuine decisions are rejected ≤ 5 %
 * (`operatingMargin`); this is for a model that states none.
 */
export const OPERATING_MARGIN = 0.05;
/**
 * An enrolment whose own held-out decisions call for a threshold this far below the loosest
 * allowed cannot support one: its source scatters more than the check can judge.
 */
export const WEAK_BELOW = 0.1;
/** Scores of sources outside the training range stay below this: the verifier reviews them. */
export const OUT_OF_RANGE_CEILING = 0.79;
const MIN_SPREAD = 1e-4;

export function cosineTo(embeddings: Float32Array, row: number, centroid: ArrayLike<number>): number {
  const width = centroid.length;
  let dot = 0;
  for (let c = 0; c < width; c++) dot += embeddings[row * width + c] * centroid[c];
  return dot;
}

/** The decision statistic from its two parts (see the header); larger is less like the source. */
export function statistic(oneClassDistance: number, cosine: number, spread: number, embeddingWeight: number): number {
  const embedding = embeddingWeight > 0 ? embeddingWeight * Math.log1p(Math.max(0, 1 - cosine) / spread) : 0;
  return Math.log1p(oneClassDistance) + embedding;
}

/**
 * The score of a decision for `profile`: exp(−S / scale); for a source out of the training range,
 * of the one-class part alone (what it reports is capped by `reportedScore`).
 */
export function scoreOf(
  oneClassDistance: number,
  cosine: number,
  profile: SourceProfile,
  calibration: ModelMetadata,
): number {
  if (profile.outOfRange.length) return Math.exp(-Math.log1p(oneClassDistance) / calibration.oneClassScale);
  const s = statistic(oneClassDistance, cosine, profile.spread, calibration.embeddingWeight);
  return Math.exp(-s / calibration.scoreScale);
}

/** The score a source reports beyond the node: below the approval band when it is out of range. */
export function reportedScore(score: number, profile: SourceProfile): number {
  return profile.outOfRange.length ? Math.min(OUT_OF_RANGE_CEILING, score) : score;
}

function centroidOf(embeddings: Float32Array, rows: number, width: number, skip = -1): number[] {
  const centroid = new Array<number>(width).fill(0);
  for (let r = 0; r < rows; r++) {
    if (r === skip) continue;
    for (let c = 0; c < width; c++) centroid[c] += embeddings[r * width + c];
  }
  const norm = Math.hypot(...centroid) || 1;
  return centroid.map(v => v / norm);
}

/** Features whose median over the enrolment lies outside the model's training range. */
export function outOfRange(features: Float32Array, rows: number, model: BehaviourModel): FeatureName[] {
  const names: FeatureName[] = [];
  const column = new Float64Array(rows);
  FEATURE_NAMES.forEach((name, f) => {
    for (let r = 0; r < rows; r++) column[r] = features[r * FEATURE_COUNT + f];
    column.sort();
    if (!model.inTrainingRange(f, column[rows >> 1])) names.push(name);
  });
  return names;
}

/**
 * The source's own operating point: each run of DECISION_WINDOWS enrolment windows is scored as a
 * decision against a profile learnt without it; the threshold sits OPERATING_MARGIN below the
 * lowest of those scores, within [model − MAX_RELAXATION, model + MAX_TIGHTENING]. A steady source
 * gets a strict threshold (its impostors pass far less than at the model's), a noisy one a
 * slightly looser one. Too few windows for held-out decisions, or decisions that fall below the
 * loosest threshold allowed, and the enrolment is weak: the source says so.
 */
function operatingPoint(
  features: Float32Array,
  embeddings: Float32Array,
  rows: number,
  profile: SourceProfile,
  model: BehaviourModel,
  margin: number,
): { threshold: number; weak: boolean } {
  const calibration = model.metadata;
  const loosest = calibration.threshold - MAX_RELAXATION;
  const strictest = Math.min(0.99, calibration.threshold + MAX_TIGHTENING);
  const held = DECISION_WINDOWS;
  // At least as many windows to learn from as held out.
  if (rows < 2 * held) return { threshold: calibration.threshold, weak: true };
  const width = model.embeddingSize;
  const rest = new Float32Array((rows - held) * FEATURE_COUNT);
  const restEmbeddings = new Float32Array((rows - held) * width);
  const decision = new Float64Array(FEATURE_COUNT);
  const scores: number[] = [];
  for (let start = 0; start + held <= rows; start++) {
    let k = 0;
    decision.fill(0);
    for (let r = 0; r < rows; r++) {
      if (r >= start && r < start + held) {
        for (let f = 0; f < FEATURE_COUNT; f++) decision[f] += features[r * FEATURE_COUNT + f] / held;
        continue;
      }
      rest.set(features.subarray(r * FEATURE_COUNT, (r + 1) * FEATURE_COUNT), k * FEATURE_COUNT);
      restEmbeddings.set(embeddings.subarray(r * width, (r + 1) * width), k * width);
      k++;
    }
    const without = fitOneClass(rest, k);
    const centroid = centroidOf(restEmbeddings, k, width);
    let cosine = 0;
    for (let r = start; r < start + held; r++) cosine += cosineTo(embeddings, r, centroid) / held;
    const distance = new OneClassScorer(without).distance(decision, 0, held);
    scores.push(scoreOf(distance, cosine, { ...profile, oneClass: without }, calibration));
  }
  const own = Math.min(...scores) - margin;
  return { threshold: Math.max(loosest, Math.min(strictest, own)), weak: own < loosest - WEAK_BELOW };
}

/** Learns a profile from `rows` genuine windows: their features and their embeddings. */
export function enrol(
  features: Float32Array,
  embeddings: Float32Array,
  rows: number,
  model: BehaviourModel,
  margin = model.metadata.operatingMargin ?? OPERATING_MARGIN,
): SourceProfile {
  const width = model.embeddingSize;
  const calibration = model.metadata;
  const distances: number[] = [];
  for (let r = 0; r < rows; r++) distances.push(1 - cosineTo(embeddings, r, centroidOf(embeddings, rows, width, r)));
  const spread = Math.max(MIN_SPREAD, distances.reduce((a, b) => a + b, 0) / rows);
  const profile: SourceProfile = {
    centroid: centroidOf(embeddings, rows, width),
    spread,
    oneClass: fitOneClass(features, rows),
    threshold: calibration.threshold,
    windows: rows,
    enrolledAt: new Date().toISOString(),
    outOfRange: outOfRange(features, rows, model),
  };
  const { threshold, weak } = operatingPoint(features, embeddings, rows, profile, model, margin);
  profile.threshold = threshold;
  if (weak) profile.weakEnrolment = true;
  return profile;
}
