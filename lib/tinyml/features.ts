/**
 * The feature extractor: a window of WINDOW (value, time) samples from one source → FEATURE_NAMES.
 * The same code runs in training, evaluation and the node, so what the model learnt is what it
 * sees. Every feature is finite and clipped, whatever the input (flat windows, repeated values,
 * identical intervals, coarse clocks).
 *
 * Every feature means the same thing at any rate and any scale: nothing is rounded to a guessed
 * nominal period or value, times are read in units of the window's own period and values in
 * units of their own noise or quantisation step. Two features of each kind are absolute (the
 * period, the step, the noise level, the clock's resolution): they carry a unit's identity (its
 * crystal, its calibration gain) but only mean something against the same source's own
 * enrolment, so only the per-source one-class check reads them (EMBEDDING_FEATURES leaves them
 * out of the network). The model card documents the physics of each.
 */
export const WINDOW = 64;

export const FEATURE_NAMES = [
  // timing: the sampling clock, seen through the timestamps
  'period_log', //         log10 of the period (ms) by least squares over the window: crystal offset
  'period_span_log', //    log10 of (last − first) / 63: the same, unbiased when jitter accumulates
  'jitter_grid_log', //    log10(1 + ppm of the period) of the residual after the straight-line fit
  'jitter_step_log', //    log10(1 + ppm of the period) of the interval spread
  'interval_autocorr', //  lag-1 autocorrelation of intervals: −0.5 stamped on a grid, ~0 a re-armed timer
  'jitter_tail', //        largest interval deviation / their spread: scheduler hiccups
  'clock_resolution_log', // log10 of the finest step between interval values (ms): the clock's tick
  'interval_variety', //   share of distinct interval values: 1/63 for a timer that never wavers
  'missing_share', //      share of periods without a reading (lost packets, missed polls)
  // values: the converter and what the unit adds to the process
  'step_log', //           log10 of the quantisation step (LSB × calibration gain, or firmware rounding)
  'noise_log', //          log10 of the noise (from first differences, robust to the process's steps)
  'lattice_fit', //        share of value gaps that are whole steps: ADC codes vs floats
  'still_share', //        share of consecutive readings that are equal
  'noise_in_steps', //     log2 of noise / step: the noise floor in LSB
  'roughness', //          log10 of noise / residual after a quadratic detrend: noise vs process motion
  'diff_autocorr1', //     autocorrelation of first differences, lag 1 (−0.5 for white noise)
  'diff_autocorr2', //     lag 2
  'diff_kurtosis', //      of first differences: spikes, quantisation
  'flicker_log', //        log2 of 4 × variance of steps between 4-reading means / that of single steps:
  //                       0 for white noise, above it for 1/f noise below the front end's corner
  'band_1', //             shares of residual energy in DFT bins 1-3, 4-7, 8-15, 16-27, 28-32 of the window:
  'band_2', //             at any rate, where mains pickup and its alias land, and how the process moves
  'band_3',
  'band_4',
  'band_5',
] as const;

export type FeatureName = (typeof FEATURE_NAMES)[number];
export const FEATURE_COUNT = FEATURE_NAMES.length;

/** Index of each feature in a row: rows are written and read by name. */
export const FEATURE_INDEX = Object.fromEntries(FEATURE_NAMES.map((name, i) => [name, i])) as Record<
  FeatureName,
  number
>;

/** Absolute features: meaningful only against the same source's enrolment (see the header). */
export const ABSOLUTE_FEATURES: readonly FeatureName[] = ['period_log', 'period_span_log', 'step_log', 'noise_log'];

/** What the embedding network reads: every feature but the absolute ones, in FEATURE_NAMES order. */
export const EMBEDDING_FEATURES: readonly FeatureName[] = FEATURE_NAMES.filter(
  name => !ABSOLUTE_FEATURES.includes(name),
);

/** Bumped whenever a feature's definition changes: models and profiles name the version they fit. */
export const FEATURE_VERSION = 3;

const F = FEATURE_INDEX;
const BAND_EDGES = [1, 4, 8, 16, 28, 33];
const HALF = WINDOW / 2;
const DIFFS = WINDOW - 1;
/** Readings per block for flicker_log: 16 blocks of 4 look an octave and more below single steps. */
const BLOCK = 4;
const BLOCK_DIFFS = WINDOW / BLOCK - 1;

// Orthogonal polynomial basis over the sample index: centred linear and quadratic terms, so the
// trend fit is three dot products with no matrix to invert.
const LINEAR = new Float64Array(WINDOW);
const QUADRATIC = new Float64Array(WINDOW);
let linearNorm = 0;
let quadraticNorm = 0;
{
  const centre = (WINDOW - 1) / 2;
  let meanSquare = 0;
  for (let i = 0; i < WINDOW; i++) meanSquare += (i - centre) ** 2 / WINDOW;
  for (let i = 0; i < WINDOW; i++) {
    LINEAR[i] = i - centre;
    QUADRATIC[i] = (i - centre) ** 2 - meanSquare;
    linearNorm += LINEAR[i] ** 2;
    quadraticNorm += QUADRATIC[i] ** 2;
  }
}
const COS = new Float64Array(WINDOW * (HALF + 1));
const SIN = new Float64Array(WINDOW * (HALF + 1));
for (let k = 0; k <= HALF; k++) {
  for (let i = 0; i < WINDOW; i++) {
    COS[k * WINDOW + i] = Math.cos((2 * Math.PI * k * i) / WINDOW);
    SIN[k * WINDOW + i] = Math.sin((2 * Math.PI * k * i) / WINDOW);
  }
}

function clip(value: number, low: number, high: number): number {
  if (Number.isNaN(value)) return low;
  return Math.min(high, Math.max(low, value));
}

function mean(series: Float64Array, length: number): number {
  let sum = 0;
  for (let i = 0; i < length; i++) sum += series[i];
  return sum / length;
}

function standardDeviation(series: Float64Array, length: number, centre = mean(series, length)): number {
  let sum = 0;
  for (let i = 0; i < length; i++) sum += (series[i] - centre) ** 2;
  return Math.sqrt(sum / length);
}

function autocorrelation(series: Float64Array, length: number, lag: number): number {
  const centre = mean(series, length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < length; i++) {
    const d = series[i] - centre;
    den += d * d;
    if (i >= lag) num += d * (series[i - lag] - centre);
  }
  return den > 0 ? num / den : 0;
}

/** The spacing of the lattice that `sorted` (ascending) sits on, and how well it fits. */
function lattice(sorted: Float64Array, length: number, tolerance: number): { step: number; fit: number } {
  let smallest = Infinity;
  for (let i = 1; i < length; i++) {
    const gap = sorted[i] - sorted[i - 1];
    if (gap > tolerance && gap < smallest) smallest = gap;
  }
  if (!Number.isFinite(smallest)) return { step: 0, fit: 0 };
  let gaps = 0;
  let onLattice = 0;
  let gapSum = 0;
  let multiples = 0;
  for (let i = 1; i < length; i++) {
    const gap = sorted[i] - sorted[i - 1];
    if (gap <= tolerance) continue;
    gaps++;
    const ratio = gap / smallest;
    const whole = Math.round(ratio);
    if (Math.abs(ratio - whole) < 0.05) {
      onLattice++;
      gapSum += gap;
      multiples += whole;
    }
  }
  return { step: gapSum / multiples, fit: onLattice / gaps };
}

/** The spacing of doubles near `magnitude`: finer differences are rounding, not signal. */
function ulp(magnitude: number): number {
  return Math.max(Math.abs(magnitude) * 2 ** -52, Number.MIN_VALUE);
}

/** Reusable scratch space: one extractor per caller keeps extraction allocation-free. */
export class FeatureExtractor {
  private readonly times = new Float64Array(WINDOW);
  private readonly values = new Float64Array(WINDOW);
  private readonly residual = new Float64Array(WINDOW);
  private readonly intervals = new Float64Array(DIFFS);
  private readonly steps = new Float64Array(WINDOW);
  private readonly diffs = new Float64Array(DIFFS);
  private readonly sorted = new Float64Array(WINDOW);
  private readonly blockDiffs = new Float64Array(BLOCK_DIFFS);
  private readonly energies = new Float64Array(BAND_EDGES.length - 1);

  /**
   * Writes FEATURE_COUNT features of the WINDOW samples starting at `start` of `values`/`times`
   * (ring buffers are read modulo their length) into `out` at `outOffset`. Times are in ms.
   */
  extract(values: ArrayLike<number>, times: ArrayLike<number>, out: Float32Array, outOffset = 0, start = 0): void {
    const ring = values.length;
    const t0 = times[start % ring];
    let largest = 0;
    for (let i = 0; i < WINDOW; i++) {
      const j = (start + i) % ring;
      // Relative times keep the fits exact; the absolute time's rounding still bounds what a
      // difference of two stamps can show (clockResolution's tolerance).
      this.times[i] = times[j] - t0;
      this.values[i] = values[j];
      largest = Math.max(largest, Math.abs(values[j]));
    }
    this.timing(out, outOffset, 2 * ulp(t0) + 1e-9);
    this.valueFeatures(out, outOffset, 4 * ulp(largest));
  }

  /**
   * Readings get lost (a dropped packet, a missed poll): every interval is read as the whole
   * number of periods it spans, from the median interval, so one lost reading does not move the
   * period by 1/63 (16 000 ppm). When jitter is too large for that (over half a period), the
   * intervals are taken as one period each.
   */
  private timing(out: Float32Array, o: number, timeTolerance: number): void {
    const { times, residual, intervals, sorted, steps } = this;
    for (let i = 0; i < DIFFS; i++) intervals[i] = times[i + 1] - times[i];
    sorted.set(intervals);
    const ascending = sorted.subarray(0, DIFFS).sort();
    const median = Math.max(ascending[DIFFS >> 1], 1e-9);
    let distinct = 1;
    let finest = Infinity;
    for (let i = 1; i < DIFFS; i++) {
      const gap = ascending[i] - ascending[i - 1];
      if (gap > timeTolerance) {
        distinct++;
        finest = Math.min(finest, gap);
      }
    }
    let counted = true;
    steps[0] = 0;
    for (let i = 1; i < WINDOW; i++) {
      const periods = Math.round(intervals[i - 1] / median);
      if (periods < 1) counted = false;
      steps[i] = steps[i - 1] + Math.max(1, periods);
    }
    if (!counted) for (let i = 0; i < WINDOW; i++) steps[i] = i;
    const total = steps[WINDOW - 1];

    // Least squares of time on the period count: the period, and what the line leaves (grid jitter).
    const stepMean = mean(steps, WINDOW);
    const timeMean = mean(times, WINDOW);
    let sxy = 0;
    let sxx = 0;
    for (let i = 0; i < WINDOW; i++) {
      sxy += (steps[i] - stepMean) * (times[i] - timeMean);
      sxx += (steps[i] - stepMean) ** 2;
    }
    const period = Math.max(sxy / sxx, 1e-9);
    for (let i = 0; i < WINDOW; i++) residual[i] = times[i] - timeMean - period * (steps[i] - stepMean);
    const span = Math.max(times[WINDOW - 1] / total, 1e-9);
    // Per-period intervals: an interval over two periods counts as two of half its length.
    for (let i = 0; i < DIFFS; i++) intervals[i] /= steps[i + 1] - steps[i];
    const intervalSpread = standardDeviation(intervals, DIFFS, span);
    let worst = 0;
    for (let i = 0; i < DIFFS; i++) worst = Math.max(worst, Math.abs(intervals[i] - span));

    out[o + F.period_log] = clip(Math.log10(period), -3, 7);
    out[o + F.period_span_log] = clip(Math.log10(span), -3, 7);
    out[o + F.jitter_grid_log] = clip(Math.log10(1 + (standardDeviation(residual, WINDOW, 0) / period) * 1e6), 0, 7);
    out[o + F.jitter_step_log] = clip(Math.log10(1 + (intervalSpread / span) * 1e6), 0, 7);
    out[o + F.interval_autocorr] = clip(autocorrelation(intervals, DIFFS, 1), -1, 1);
    out[o + F.jitter_tail] = intervalSpread > 0 ? clip(worst / intervalSpread, 0, 8) : 0;
    // No two intervals differ: the clock's tick is at least the period (a timer that never wavers).
    // Below 1 µs every clock looks continuous (epoch milliseconds in a double resolve ~0.24 µs).
    out[o + F.clock_resolution_log] = clip(Math.log10(Number.isFinite(finest) ? finest : span), -3, 4);
    out[o + F.interval_variety] = distinct / DIFFS;
    out[o + F.missing_share] = (total - DIFFS) / total;
  }

  private valueFeatures(out: Float32Array, o: number, valueTolerance: number): void {
    const { values, residual, diffs, sorted } = this;
    let still = 0;
    for (let i = 0; i < DIFFS; i++) {
      diffs[i] = values[i + 1] - values[i];
      if (Math.abs(diffs[i]) <= valueTolerance) still++;
    }
    // White noise of σ gives differences of σ√2; a slow process adds little, a step adds one outlier.
    const diffSpread = standardDeviation(diffs, DIFFS);
    const noise = diffSpread / Math.SQRT2;
    let trendMean = 0;
    let b = 0;
    let c = 0;
    for (let i = 0; i < WINDOW; i++) {
      trendMean += values[i] / WINDOW;
      b += values[i] * LINEAR[i];
      c += values[i] * QUADRATIC[i];
    }
    b /= linearNorm;
    c /= quadraticNorm;
    for (let i = 0; i < WINDOW; i++) residual[i] = values[i] - trendMean - b * LINEAR[i] - c * QUADRATIC[i];
    const residualSpread = standardDeviation(residual, WINDOW, 0);

    sorted.set(values);
    sorted.sort();
    const { step, fit } = lattice(sorted, WINDOW, valueTolerance);

    out[o + F.step_log] = step > 0 ? clip(Math.log10(step), -12, 9) : -12;
    out[o + F.noise_log] = noise > 0 ? clip(Math.log10(noise), -12, 9) : -12;
    out[o + F.lattice_fit] = fit;
    out[o + F.still_share] = still / DIFFS;
    out[o + F.noise_in_steps] = step > 0 ? clip(Math.log2(noise / step + 1e-6), -20, 20) : 20;
    out[o + F.roughness] = residualSpread > 0 ? clip(Math.log10(noise / residualSpread + 1e-6), -6, 2) : 0;
    out[o + F.diff_autocorr1] = clip(autocorrelation(diffs, DIFFS, 1), -1, 1);
    out[o + F.diff_autocorr2] = clip(autocorrelation(diffs, DIFFS, 2), -1, 1);
    let m2 = 0;
    let m4 = 0;
    const diffMean = mean(diffs, DIFFS);
    for (let i = 0; i < DIFFS; i++) {
      const sq = (diffs[i] - diffMean) ** 2;
      m2 += sq / DIFFS;
      m4 += (sq * sq) / DIFFS;
    }
    out[o + F.diff_kurtosis] = m2 > 0 ? clip(Math.log(m4 / (m2 * m2)), -2, 5) : 0;
    out[o + F.flicker_log] = m2 > 0 ? clip(Math.log2((BLOCK * this.blockStepVariance()) / m2), -4, 8) : 0;
    this.bands(out, o);
  }

  /**
   * Variance of the steps between means of BLOCK readings. White noise of σ gives 2σ²/BLOCK, as
   * single steps give 2σ²; 1/f noise has more power an octave down, so its ratio exceeds 1. A
   * simulator drawing white noise around a process model does not, whatever its level.
   */
  private blockStepVariance(): number {
    const { values, blockDiffs } = this;
    let previous = 0;
    for (let b = 0; b <= BLOCK_DIFFS; b++) {
      let sum = 0;
      for (let i = 0; i < BLOCK; i++) sum += values[b * BLOCK + i];
      if (b > 0) blockDiffs[b - 1] = sum / BLOCK - previous;
      previous = sum / BLOCK;
    }
    return standardDeviation(blockDiffs, BLOCK_DIFFS) ** 2;
  }

  private bands(out: Float32Array, o: number): void {
    const { residual, energies } = this;
    energies.fill(0);
    let total = 0;
    let band = 0;
    for (let k = 1; k <= HALF; k++) {
      let re = 0;
      let im = 0;
      const row = k * WINDOW;
      for (let i = 0; i < WINDOW; i++) {
        re += residual[i] * COS[row + i];
        im -= residual[i] * SIN[row + i];
      }
      const energy = re * re + im * im;
      while (k >= BAND_EDGES[band + 1]) band++;
      energies[band] += energy;
      total += energy;
    }
    const names = ['band_1', 'band_2', 'band_3', 'band_4', 'band_5'] as const;
    for (let b = 0; b < names.length; b++) out[o + F[names[b]]] = total > 0 ? energies[b] / total : 1 / names.length;
  }
}
