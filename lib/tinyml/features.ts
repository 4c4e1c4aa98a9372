/**
 * The feature extractor: a window of (value, time) samples from one source → FEATURE_NAMES.
 * The same code runs in training, evaluation and the node, so what the model learnt is what it
 * sees. Every feature is finite and clipped, whatever the input (flat windows, repeated times).
 *
 * Timing (from the source's own timestamps, or arrival times):
 *   clock_ppm         sample period vs the nearest 3-significant-digit period, in units of 50 ppm
 *   jitter_log        log10(1 + timing residual std in ppm of the period), after a quadratic fit
 *   jitter_tail       largest timing residual / residual std
 *   interval_autocorr lag-1 autocorrelation of the sample intervals
 *   clock_drift       change of the period across the window (crystal warming), units of 50 ppm
 * Values (after removing a quadratic trend, i.e. the process):
 *   step_log          log10 of the quantisation step (LSB × calibration gain, or firmware rounding)
 *   step_ppm          that step vs its nearest 3-significant-digit value, in units of 2000 ppm: the
 *                     unit's calibration gain, resolved far finer than step_log can show it
 *   lattice_fit       share of value gaps that are whole multiples of that step
 *   noise_lsb         log2 of the residual std in quantisation steps
 *   noise_log         log10 of the residual std
 *   noise_autocorr1/2 autocorrelation of the residual at lags 1 and 2
 *   band_1..band_5    share of residual energy in DFT bins 1-7, 8-15, 16-23, 24-27, 28-32 (bin 32 =
 *                     Nyquist: at 100 Hz sampling 50 Hz hum lands there, 60 Hz near bin 26)
 *   kurtosis          of the residual (hum and quantisation move it off the Gaussian 3)
 */
export const WINDOW = 64;

export const FEATURE_NAMES = [
  'clock_ppm',
  'jitter_log',
  'jitter_tail',
  'interval_autocorr',
  'clock_drift',
  'step_log',
  'step_ppm',
  'lattice_fit',
  'noise_lsb',
  'noise_log',
  'noise_autocorr1',
  'noise_autocorr2',
  'band_1',
  'band_2',
  'band_3',
  'band_4',
  'band_5',
  'kurtosis',
] as const;

export const FEATURE_COUNT = FEATURE_NAMES.length;

/** Bumped whenever a feature's definition changes: models and profiles name the version they fit. */
export const FEATURE_VERSION = 1;

const BAND_EDGES = [1, 8, 16, 24, 28, 33];
const HALF = WINDOW / 2;

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
  if (Number.isNaN(value)) return 0;
  return Math.min(high, Math.max(low, value));
}

/** Nearest value with three significant digits: the nominal period a sensor was configured for. */
function nominal(value: number): number {
  if (!(value > 0)) return 1;
  const scale = 10 ** (Math.floor(Math.log10(value)) - 2);
  return Math.round(value / scale) * scale;
}

function autocorrelation(series: Float64Array, length: number, lag: number): number {
  let mean = 0;
  for (let i = 0; i < length; i++) mean += series[i] / length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < length; i++) {
    const d = series[i] - mean;
    den += d * d;
    if (i >= lag) num += d * (series[i - lag] - mean);
  }
  return den > 0 ? num / den : 0;
}

/** Fits a + b·LINEAR + c·QUADRATIC to `series`, leaves the residual in `residual`, returns [b, c]. */
function detrend(series: Float64Array, residual: Float64Array): [number, number] {
  let mean = 0;
  let b = 0;
  let c = 0;
  for (let i = 0; i < WINDOW; i++) {
    mean += series[i] / WINDOW;
    b += series[i] * LINEAR[i];
    c += series[i] * QUADRATIC[i];
  }
  b /= linearNorm;
  c /= quadraticNorm;
  for (let i = 0; i < WINDOW; i++) residual[i] = series[i] - mean - b * LINEAR[i] - c * QUADRATIC[i];
  return [b, c];
}

function standardDeviation(series: Float64Array): number {
  let sum = 0;
  for (let i = 0; i < WINDOW; i++) sum += series[i] * series[i];
  return Math.sqrt(sum / WINDOW);
}

/** Reusable scratch space: one extractor per caller keeps extraction allocation-free. */
export class FeatureExtractor {
  private readonly times = new Float64Array(WINDOW);
  private readonly values = new Float64Array(WINDOW);
  private readonly residual = new Float64Array(WINDOW);
  private readonly sorted = new Float64Array(WINDOW);
  private readonly intervals = new Float64Array(WINDOW - 1);
  private readonly energies = new Float64Array(BAND_EDGES.length - 1);

  /**
   * Writes FEATURE_COUNT features of the WINDOW samples starting at `start` of `values`/`times`
   * (ring buffers are read modulo their length) into `out` at `outOffset`.
   */
  extract(values: ArrayLike<number>, times: ArrayLike<number>, out: Float32Array, outOffset = 0, start = 0): void {
    const ring = values.length;
    const t0 = times[start % ring];
    for (let i = 0; i < WINDOW; i++) {
      const j = (start + i) % ring;
      // Relative times keep the fit exact: epoch milliseconds in a double only resolve ~0.2 µs.
      this.times[i] = times[j] - t0;
      this.values[i] = values[j];
    }
    const o = outOffset;
    this.timing(out, o);
    this.valueFeatures(out, o + 5);
  }

  private timing(out: Float32Array, o: number): void {
    const { times, residual, intervals } = this;
    const [period, curvature] = detrend(times, residual);
    const jitter = standardDeviation(residual);
    let largest = 0;
    for (let i = 0; i < WINDOW; i++) largest = Math.max(largest, Math.abs(residual[i]));
    for (let i = 0; i < WINDOW - 1; i++) intervals[i] = times[i + 1] - times[i];
    const safePeriod = Math.max(period, 1e-9);
    out[o] = clip(((period / nominal(period) - 1) * 1e6) / 50, -20, 20);
    out[o + 1] = clip(Math.log10(1 + (jitter / safePeriod) * 1e6), 0, 7);
    out[o + 2] = jitter > 0 ? clip(largest / jitter, 0, 8) : 0;
    out[o + 3] = clip(autocorrelation(intervals, WINDOW - 1, 1), -1, 1);
    out[o + 4] = clip((((2 * curvature * (WINDOW - 1)) / safePeriod) * 1e6) / 50, -20, 20);
  }

  private valueFeatures(out: Float32Array, o: number): void {
    const { values, residual, sorted } = this;
    detrend(values, residual);
    const noise = standardDeviation(residual);
    const step = this.quantisationStep(sorted);

    out[o] = clip(Math.log10(step.step + 1e-9), -9, 6);
    out[o + 1] = step.step > 0 ? clip(((step.step / nominal(step.step) - 1) * 1e6) / 2000, -3, 3) : 0;
    out[o + 2] = step.latticeFit;
    out[o + 3] = clip(Math.log2((noise + 1e-12) / (step.step + 1e-12)), -10, 20);
    out[o + 4] = clip(Math.log10(noise + 1e-9), -9, 6);
    out[o + 5] = clip(autocorrelation(residual, WINDOW, 1), -1, 1);
    out[o + 6] = clip(autocorrelation(residual, WINDOW, 2), -1, 1);
    this.bands(out, o + 7);
    let m2 = 0;
    let m4 = 0;
    for (let i = 0; i < WINDOW; i++) {
      const sq = residual[i] * residual[i];
      m2 += sq / WINDOW;
      m4 += (sq * sq) / WINDOW;
    }
    out[o + 12] = m2 > 0 ? clip(m4 / (m2 * m2), 0, 20) : 0;
  }

  /**
   * The step of the lattice the values sit on: the smallest gap between distinct values,
   * refined over every gap that is a whole multiple of it.
   */
  private quantisationStep(sorted: Float64Array): { step: number; latticeFit: number } {
    sorted.set(this.values);
    sorted.sort();
    const tolerance = 1e-6 * Math.max(1, Math.abs(sorted[0]), Math.abs(sorted[WINDOW - 1]));
    let smallest = Infinity;
    for (let i = 1; i < WINDOW; i++) {
      const gap = sorted[i] - sorted[i - 1];
      if (gap > tolerance && gap < smallest) smallest = gap;
    }
    if (!Number.isFinite(smallest)) return { step: 0, latticeFit: 0 };
    let gaps = 0;
    let onLattice = 0;
    let gapSum = 0;
    let multiples = 0;
    for (let i = 1; i < WINDOW; i++) {
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
    return { step: gapSum / multiples, latticeFit: onLattice / gaps };
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
    for (let b = 0; b < energies.length; b++) out[o + b] = total > 0 ? energies[b] / total : 1 / energies.length;
  }
}
