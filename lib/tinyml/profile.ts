/**
 * A source's enrolled profile: the centroid of its window embeddings and the score threshold
 * calibrated from how its own enrolment windows scored.
 *
 * Scores map cosine similarity to the centroid into [0, 1] as exp(-(1 - cos) / distanceScale).
 * The model's distanceScale is set on validation units so that the equal-error point scores 0.8:
 * a trained embedding packs units of one model into a narrow cone, where raw (1 + cos) / 2 would
 * read 0.9999 for genuine and impostor alike.
 */
export interface SourceProfile {
  centroid: number[];
  threshold: number;
  windows: number;
  enrolledAt: string;
}

export interface ScoreCalibration {
  threshold: number;
  distanceScale: number;
}

/** The score the model's equal-error point maps to. */
export const CALIBRATED_THRESHOLD = 0.8;

/** How far below the model's threshold a noisy source's own threshold may go. */
export const MAX_RELAXATION = 0.05;

export function cosineTo(embeddings: Float32Array, row: number, centroid: ArrayLike<number>): number {
  const width = centroid.length;
  let dot = 0;
  for (let c = 0; c < width; c++) dot += embeddings[row * width + c] * centroid[c];
  return dot;
}

export function scoreOf(cosine: number, calibration: ScoreCalibration): number {
  return Math.min(1, Math.max(0, Math.exp(-(1 - cosine) / calibration.distanceScale)));
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

/**
 * Learns a profile from `rows` genuine window embeddings. The threshold starts at the model's
 * validated one and drops only as far as this source's own enrolment needs (the 5th percentile
 * of its leave-one-out decision scores, less a margin), by MAX_RELAXATION at most: a noisy
 * sensor is not flagged all day, and no source gets a threshold far below the validated one.
 */
export function enrol(
  embeddings: Float32Array,
  rows: number,
  width: number,
  calibration: ScoreCalibration,
  decisionWindows: number,
): SourceProfile {
  const cosines: number[] = [];
  for (let r = 0; r < rows; r++) cosines.push(cosineTo(embeddings, r, centroidOf(embeddings, rows, width, r)));
  const decisions: number[] = [];
  for (let r = 0; r < rows; r++) {
    const group = cosines.slice(Math.max(0, r - decisionWindows + 1), r + 1);
    if (group.length === decisionWindows || rows < decisionWindows)
      decisions.push(scoreOf(group.reduce((a, b) => a + b, 0) / group.length, calibration));
  }
  decisions.sort((a, b) => a - b);
  const low = decisions[Math.floor(0.05 * (decisions.length - 1))];
  const threshold = Math.max(calibration.threshold - MAX_RELAXATION, Math.min(calibration.threshold, low - 0.01));
  return {
    centroid: centroidOf(embeddings, rows, width),
    threshold,
    windows: rows,
    enrolledAt: new Date().toISOString(),
  };
}
