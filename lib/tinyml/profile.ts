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
}

/** How far below the model's threshold a noisy source's own threshold may go. */
export const MAX_RELAXATION = 0.05;
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
 * Learns a profile from `rows` genuine windows: their features and their embeddings. The
 * threshold starts at the model's and drops only as far as this source's own enrolment needs
 * (the 5th percentile of its leave-one-out window scores, less a margin), by MAX_RELAXATION at
 * most: a noisy sensor is not flagged all day, and no source gets a threshold far below the
 * validated one.
 */
export function enrol(
  features: Float32Array,
  embeddings: Float32Array,
  rows: number,
  model: BehaviourModel,
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
  // Leave-one-out window scores: each window against a profile learnt without it.
  const scores: number[] = [];
  const others = new Float32Array((rows - 1) * FEATURE_COUNT);
  for (let r = 0; r < rows && rows > 2; r++) {
    let k = 0;
    for (let o = 0; o < rows; o++) {
      if (o !== r) others.set(features.subarray(o * FEATURE_COUNT, (o + 1) * FEATURE_COUNT), FEATURE_COUNT * k++);
    }
    const without = fitOneClass(others, rows - 1);
    const d = new OneClassScorer(without).distance(features, r * FEATURE_COUNT, 1);
    scores.push(scoreOf(d, 1 - distances[r], { ...profile, oneClass: without }, calibration));
  }
  scores.sort((a, b) => a - b);
  const low = scores.length ? scores[Math.floor(0.05 * (scores.length - 1))] : calibration.threshold;
  profile.threshold = Math.max(calibration.threshold - MAX_RELAXATION, Math.min(calibration.threshold, low - 0.01));
  return profile;
}
