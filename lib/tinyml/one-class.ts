/**
 * The per-source half of the behaviour check: a one-class model of the source's own features,
 * learnt from its enrolment alone, so it holds on sensors the network never saw. Enrolment
 * windows give the mean and the window-to-window covariance (shrunk towards its diagonal, as
 * Schäfer and Strimmer 2005, because 20 windows cannot pin down 24 × 24 covariances); each
 * feature's variance also gets a floor: how far it may drift between enrolment and use for
 * physical reasons the enrolment cannot show (a crystal warming by some ppm, a gain by its
 * tempco). A window, or the mean of a decision's windows, is then scored by its Mahalanobis
 * distance per dimension: about 1 for the source itself, more for anything else.
 */
import { FEATURE_COUNT, FEATURE_NAMES, type FeatureName } from './features';

/**
 * Standard deviations each feature may drift by over hours and a few kelvin, in its own units.
 * Timing: 20 ppm of period (log10: 20e-6 / ln 10), a TCXO-less crystal over ±10 K or a MEMS
 * oscillator over a few K. Values: 0.05 % of gain (5 × 10⁻⁴ / ln 10) for the step, 12 % for the
 * noise floor. Shape features: what their estimators scatter by from one session to the next.
 */
export const DRIFT_FLOORS: Record<FeatureName, number> = {
  period_log: 8.7e-6,
  period_span_log: 8.7e-6,
  jitter_grid_log: 0.08,
  jitter_step_log: 0.08,
  interval_autocorr: 0.05,
  jitter_tail: 0.25,
  clock_resolution_log: 0.15,
  interval_variety: 0.03,
  missing_share: 0.02,
  step_log: 2.2e-4,
  noise_log: 0.05,
  lattice_fit: 0.03,
  still_share: 0.03,
  noise_in_steps: 0.1,
  roughness: 0.05,
  diff_autocorr1: 0.04,
  diff_autocorr2: 0.04,
  diff_kurtosis: 0.1,
  flicker_log: 0.1,
  band_1: 0.02,
  band_2: 0.02,
  band_3: 0.02,
  band_4: 0.02,
  band_5: 0.02,
};

const FLOORS = Float64Array.from(FEATURE_NAMES, name => DRIFT_FLOORS[name]);

export interface OneClassProfile {
  mean: number[];
  /** Covariance of one window's features, shrunk (row-major FEATURE_COUNT²), without the floors. */
  covariance: number[];
  /** The shrinkage intensity used (0: sample covariance, 1: its diagonal only). */
  shrinkage: number;
}

/** Cholesky inverse of a symmetric positive-definite matrix (row-major, n × n). */
function invert(matrix: Float64Array, n: number): number[] {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = matrix[i * n + j];
      for (let k = 0; k < j; k++) sum -= L[i * n + k] * L[j * n + k];
      L[i * n + j] = i === j ? Math.sqrt(Math.max(sum, 1e-300)) : sum / L[j * n + j];
    }
  }
  // inv(A) = inv(L)ᵀ inv(L)
  const Linv = new Float64Array(n * n);
  for (let col = 0; col < n; col++) {
    for (let i = col; i < n; i++) {
      let sum = i === col ? 1 : 0;
      for (let k = col; k < i; k++) sum -= L[i * n + k] * Linv[k * n + col];
      Linv[i * n + col] = sum / L[i * n + i];
    }
  }
  const inverse = new Array<number>(n * n).fill(0);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = 0;
      for (let k = i; k < n; k++) sum += Linv[k * n + i] * Linv[k * n + j];
      inverse[i * n + j] = sum;
      inverse[j * n + i] = sum;
    }
  }
  return inverse;
}

/** Learns a source's one-class profile from `count` feature rows (FEATURE_COUNT each). */
export function fitOneClass(rows: Float32Array, count: number): OneClassProfile {
  const n = FEATURE_COUNT;
  const mean = new Float64Array(n);
  for (let r = 0; r < count; r++) for (let f = 0; f < n; f++) mean[f] += rows[r * n + f] / count;
  const centred = new Float64Array(count * n);
  for (let r = 0; r < count; r++) for (let f = 0; f < n; f++) centred[r * n + f] = rows[r * n + f] - mean[f];
  const divisor = Math.max(1, count - 1);
  const covariance = new Float64Array(n * n);
  for (let r = 0; r < count; r++)
    for (let i = 0; i < n; i++)
      for (let j = 0; j <= i; j++) covariance[i * n + j] += (centred[r * n + i] * centred[r * n + j]) / divisor;
  // Schäfer-Strimmer intensity towards the diagonal: the off-diagonal entries' estimation
  // variance against their size.
  let variance = 0;
  let size = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) {
      const s = covariance[i * n + j];
      let spread = 0;
      for (let r = 0; r < count; r++) spread += (centred[r * n + i] * centred[r * n + j] - s) ** 2;
      variance += (count / divisor ** 3) * spread;
      size += s * s;
    }
  }
  const shrinkage = count < 3 || size === 0 ? 1 : Math.min(1, Math.max(0, variance / size));
  const shrunk = new Array<number>(n * n).fill(0);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const value = i === j ? covariance[i * n + i] : (1 - shrinkage) * covariance[i * n + j];
      shrunk[i * n + j] = shrunk[j * n + i] = value;
    }
  }
  return { mean: Array.from(mean), covariance: shrunk, shrinkage };
}

/**
 * Scores against one profile. The mean of k windows varies by covariance / k around the
 * source's mean, but drift does not average out: its floor stays. Precisions are built once per
 * window count.
 */
export class OneClassScorer {
  private readonly precisions = new Map<number, number[]>();

  constructor(readonly profile: OneClassProfile) {}

  /**
   * How far another source's profile lies from this one, as a decision of `windows` windows:
   * each mean seen through the other's model, the nearer view counting (about 1 or less: the
   * two cannot be told apart).
   */
  separation(other: OneClassScorer, windows: number): number {
    return Math.min(this.distance(other.profile.mean, 0, windows), other.distance(this.profile.mean, 0, windows));
  }

  private precision(windows: number): number[] {
    let precision = this.precisions.get(windows);
    if (!precision) {
      const n = FEATURE_COUNT;
      const matrix = new Float64Array(n * n);
      for (let i = 0; i < n * n; i++) matrix[i] = this.profile.covariance[i] / windows;
      for (let i = 0; i < n; i++) matrix[i * n + i] += FLOORS[i] ** 2;
      precision = invert(matrix, n);
      this.precisions.set(windows, precision);
    }
    return precision;
  }

  /**
   * Squared Mahalanobis distance per dimension of the row at `offset` of `features` (the mean
   * of `windows` windows' features) from the profile: about 1 for the source itself.
   */
  distance(features: ArrayLike<number>, offset: number, windows: number): number {
    const n = FEATURE_COUNT;
    const { mean } = this.profile;
    const precision = this.precision(windows);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const di = features[offset + i] - mean[i];
      if (di === 0) continue;
      let row = 0;
      for (let j = 0; j < n; j++) row += precision[i * n + j] * (features[offset + j] - mean[j]);
      sum += di * row;
    }
    return Math.max(0, sum) / n;
  }
}
