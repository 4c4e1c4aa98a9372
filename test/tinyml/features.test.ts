import * as assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ABSOLUTE_FEATURES,
  EMBEDDING_FEATURES,
  FEATURE_COUNT,
  FEATURE_INDEX,
  FEATURE_NAMES,
  type FeatureName,
  FeatureExtractor,
  WINDOW,
} from '../../lib/tinyml/features';

const at = (features: Float32Array, name: FeatureName) => features[FEATURE_INDEX[name]];

function extract(values: ArrayLike<number>, times: ArrayLike<number>): Float32Array {
  const out = new Float32Array(FEATURE_COUNT);
  new FeatureExtractor().extract(values, times, out);
  return out;
}

interface WindowOptions {
  periodMs?: number;
  ppm?: number;
  step?: number;
  jitterMs?: number;
  hum?: number;
  scale?: number;
  /** Indices of readings that were lost (the window spans the periods they would have filled). */
  lost?: number[];
}

/** Deterministic white noise in [-0.5, 0.5): the fractional part of a scrambled sine. */
const noise = (i: number) => {
  const x = Math.sin(i * 12.9898) * 43758.5453;
  return x - Math.floor(x) - 0.5;
};

/** A quiet sensor: values on a lattice of `step` around 40, one reading per period. */
function window(options: WindowOptions = {}) {
  const { periodMs = 10, ppm = 0, step = 0.0244, jitterMs = 0, hum = 0, scale = 1, lost = [] } = options;
  const ticks = Array.from({ length: WINDOW + lost.length }, (_, i) => i).filter(i => !lost.includes(i));
  const times = ticks.slice(0, WINDOW).map(i => 1.7e12 + i * periodMs * (1 + ppm * 1e-6) + jitterMs * noise(i));
  // A deterministic pseudo-noise of a few steps, plus optional hum at the Nyquist frequency.
  const values = ticks
    .slice(0, WINDOW)
    .map(i => scale * (40 + step * Math.round(2 * Math.sin(i * 78.233) + hum * (i % 2 ? 1 : -1))));
  return { values, times };
}

describe('tinyml features', () => {
  it('writes every feature of a row exactly once, by name', () => {
    const writes = new Array<number>(FEATURE_COUNT).fill(0);
    const row = new Proxy(new Float32Array(FEATURE_COUNT), {
      set(target, key, value) {
        const index = Number(key);
        if (Number.isInteger(index)) writes[index]++;
        return Reflect.set(target, key, value);
      },
    });
    const { values, times } = window({ jitterMs: 0.002 });
    new FeatureExtractor().extract(values, times, row);
    assert.deepEqual(writes, new Array(FEATURE_COUNT).fill(1));
    assert.equal(new Set(Object.values(FEATURE_INDEX)).size, FEATURE_NAMES.length);
  });

  it('leaves the absolute features out of the network inputs', () => {
    assert.equal(EMBEDDING_FEATURES.length + ABSOLUTE_FEATURES.length, FEATURE_COUNT);
    for (const name of ABSOLUTE_FEATURES) assert.ok(!EMBEDDING_FEATURES.includes(name), name);
  });

  it('measures the period from the source itself, at any rate, without rounding to a nominal value', () => {
    for (const periodMs of [1, 10, 100, 1000, 10_000]) {
      for (const ppm of [-80, 0, 37]) {
        const { values, times } = window({ periodMs, ppm, jitterMs: periodMs * 1e-6 });
        const measured = 10 ** at(extract(values, times), 'period_log');
        assert.ok(Math.abs((measured / (periodMs * (1 + ppm * 1e-6)) - 1) * 1e6) < 0.5, `${periodMs} ms, ${ppm} ppm`);
      }
    }
  });

  it('reads a lost reading as a gap of two periods, not as a slower clock', () => {
    const { values, times } = window({ periodMs: 100, ppm: 20, lost: [30] });
    const features = extract(values, times);
    const measured = 10 ** at(features, 'period_log');
    assert.ok(Math.abs((measured / (100 * (1 + 20e-6)) - 1) * 1e6) < 0.5, `${measured}`);
    assert.ok(Math.abs(at(features, 'missing_share') - 1 / 64) < 1e-3);
  });

  it('tells white jitter on a grid from jitter that accumulates', () => {
    const grid = window({ periodMs: 100, jitterMs: 1 });
    let t = 1.7e12;
    const rearmed = grid.times.map((_, i) => (t += 100 + noise(i)));
    const white = at(extract(grid.values, grid.times), 'interval_autocorr');
    const accumulated = at(extract(grid.values, rearmed), 'interval_autocorr');
    assert.ok(white < -0.3, `grid ${white}`);
    assert.ok(Math.abs(accumulated) < 0.3, `re-armed ${accumulated}`);
  });

  it('measures the quantisation step, and the noise in steps whatever the scale', () => {
    const step = 0.0244 * 1.003;
    const quiet = window({ step });
    const small = extract(quiet.values, quiet.times);
    assert.ok(Math.abs(10 ** at(small, 'step_log') - step) < 1e-6);
    assert.equal(at(small, 'lattice_fit'), 1);
    const scaled = window({ step, scale: 1000 });
    const large = extract(scaled.values, scaled.times);
    assert.ok(Math.abs(at(large, 'noise_in_steps') - at(small, 'noise_in_steps')) < 1e-3);
    assert.ok(Math.abs(at(large, 'step_log') - at(small, 'step_log') - 3) < 1e-3);
  });

  it('sees the clock tick of stamps: 1 ms against 1 µs', () => {
    const { values, times } = window({ periodMs: 10, jitterMs: 0.05 });
    const fine = at(extract(values, times), 'clock_resolution_log');
    const coarse = at(extract(values, times.map(Math.floor)), 'clock_resolution_log');
    assert.ok(coarse >= -0.01 && fine < -2, `coarse ${coarse}, fine ${fine}`);
  });

  it('puts hum at the Nyquist frequency into the top band', () => {
    const { values, times } = window({ hum: 3 });
    const features = extract(values, times);
    assert.ok(at(features, 'band_5') > 0.5, `band_5 ${at(features, 'band_5')}`);
  });

  it('tells 1/f noise from white noise of the same level, at any scale', () => {
    // Flicker as a sum of random steps held for 1, 2, 4 ... 32 readings (Voss): equal power per octave.
    const flicker = (i: number) => {
      let sum = 0;
      for (let octave = 0; octave < 6; octave++) sum += noise(1000 * (octave + 1) + (i >> octave));
      return sum;
    };
    const mean = (make: (i: number) => number, scale: number) => {
      let total = 0;
      for (let w = 0; w < 16; w++) {
        const values = Array.from({ length: WINDOW }, (_, i) => scale * (40 + make(w * WINDOW + i)));
        total += at(extract(values, window().times), 'flicker_log') / 16;
      }
      return total;
    };
    const white = mean(i => noise(i), 1);
    const pink = mean(flicker, 1);
    assert.ok(Math.abs(white) < 0.3, `white noise ${white}`);
    assert.ok(pink > 1, `1/f noise ${pink}`);
    assert.ok(Math.abs(mean(flicker, 1000) - pink) < 1e-3);
  });

  it('reads ring buffers from any start, oldest first', () => {
    const { values, times } = window({ ppm: 12 });
    const shift = 23;
    const rotate = (a: number[]) => [...a.slice(WINDOW - shift), ...a.slice(0, WINDOW - shift)];
    const out = new Float32Array(FEATURE_COUNT);
    new FeatureExtractor().extract(rotate(values), rotate(times), out, 0, shift);
    assert.deepEqual(out, extract(values, times));
  });

  it('gives finite, bounded features for flat windows and repeated times', () => {
    const flat = extract(new Array(WINDOW).fill(5), new Array(WINDOW).fill(1000));
    assert.ok(flat.every(Number.isFinite));
  });

  it('gives finite features for any finite input (property)', () => {
    const finite = fc.double({ min: -1e9, max: 1e9, noNaN: true, noDefaultInfinity: true });
    fc.assert(
      fc.property(
        fc.array(finite, { minLength: WINDOW, maxLength: WINDOW }),
        fc.array(finite, { minLength: WINDOW, maxLength: WINDOW }),
        (values, times) => {
          const features = extract(values, times);
          return features.every(v => Number.isFinite(v) && Math.abs(v) <= 20);
        },
      ),
      { numRuns: 300 },
    );
  });
});
