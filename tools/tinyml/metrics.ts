/**
 * Verification error rates from genuine and impostor scores (accept when score ≥ threshold):
 * FAR = impostors accepted, FRR = genuine rejected, EER where they meet (ISO/IEC 19795-1 terms).
 */
export interface ErrorRates {
  eer: number;
  /** Threshold at the equal error rate. */
  eerThreshold: number;
  farAtFrr1: number;
  frrAtFar1: number;
}

function sorted(scores: number[]): Float64Array {
  return Float64Array.from(scores).sort();
}

/** Share of `ascending` strictly below `threshold`. */
function shareBelow(ascending: Float64Array, threshold: number): number {
  let low = 0;
  let high = ascending.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (ascending[mid] < threshold) low = mid + 1;
    else high = mid;
  }
  return ascending.length ? low / ascending.length : 0;
}

export function errorRates(genuine: number[], impostor: number[]): ErrorRates {
  const g = sorted(genuine);
  const i = sorted(impostor);
  const candidates = sorted([...genuine, ...impostor, Infinity]);
  let best = { gap: Infinity, eer: 1, threshold: 0 };
  let farAtFrr1 = 1;
  let frrAtFar1 = 1;
  for (const t of candidates) {
    const frr = shareBelow(g, t);
    const far = 1 - shareBelow(i, t);
    if (Math.abs(far - frr) < best.gap) best = { gap: Math.abs(far - frr), eer: (far + frr) / 2, threshold: t };
    if (frr <= 0.01) farAtFrr1 = Math.min(farAtFrr1, far);
    if (far <= 0.01) frrAtFar1 = Math.min(frrAtFar1, frr);
  }
  return { eer: best.eer, eerThreshold: best.threshold, farAtFrr1, frrAtFar1 };
}

/** Share of `scores` at or above `thresholds` (one threshold per score: each source has its own). */
export function acceptedShare(scores: number[], thresholds: number[]): number {
  let accepted = 0;
  scores.forEach((s, k) => {
    if (s >= thresholds[k]) accepted++;
  });
  return scores.length ? accepted / scores.length : 0;
}
