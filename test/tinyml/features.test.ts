import * as assert from 'node:assert/strict';
import fc from 'fast-check';
import { FEATURE_COUNT, FEATURE_NAMES, FeatureExtractor, WINDOW } from '../../lib/tinyml/features';

const at = (features: Float32Array, name: (typeof FEATURE_NAMES)[number]) => features[FEATURE_NAMES.indexOf(name)];

function extract(values: ArrayLike<number>, times: ArrayLike<number>): Float32Array {
  const out = new Float32Array(FEATURE_COUNT);
  new FeatureExtractor().extract(values, times, out);
  return out;
}

/** A quiet sensor: values on a lattice of `step` around 40, one sample per `periodMs`. */
function window(options: { periodMs?: number; ppm?: number; step?: number; jitterMs?: number; hum?: number } = {}) {
  const { periodMs = 10, ppm = 0, step = 0.0244, jitterMs = 0, hum = 0 } = options;
  const times = Array.from(
    { length: WINDOW },
    (_, i) => 1.7e12 + i * periodMs * (1 + ppm * 1e-6) + jitterMs * Math.sin(i * 12.9898),
  );
  // A deterministic pseudo-noise of a few steps, plus optional hum at the Nyquist frequency.
  const values = Array.from(
    { length: WINDOW },
    (_, i) => 40 + step * Math.round(2 * Math.sin(i * 78.233) + hum * (i % 2 ? 1 : -1)),
  );
  return { values, times };
}

describe('tinyml features', () => {
  it('extracts the documented number of features', () => {
    assert.equal(FEATURE_COUNT, FEATURE_NAMES.length);
    const { values, times } = window();
    assert.equal(extract(values, times).length, FEATURE_COUNT);
  });

  it('recovers a clock offset in ppm from the source timestamps', () => {
    for (const ppm of [-40, -7, 0, 25]) {
      const { values, times } = window({ ppm });
      assert.ok(Math.abs(at(extract(values, times), 'clock_ppm') * 50 - ppm) < 0.5, `ppm ${ppm}`);
    }
  });

  it('measures the quantisation step and how well values sit on it', () => {
    const step = 0.0244 * 1.003;
    const { values, times } = window({ step });
    const features = extract(values, times);
    assert.ok(Math.abs(10 ** at(features, 'step_log') - step) < 1e-6);
    assert.equal(at(features, 'lattice_fit'), 1);
    const nominal = 0.0245;
    assert.ok(Math.abs(at(features, 'step_ppm') * 2000 - (step / nominal - 1) * 1e6) < 1);
  });

  it('sees more timing jitter as a larger jitter feature', () => {
    const { values, times: steady } = window({ jitterMs: 0.001 });
    const { times: shaky } = window({ jitterMs: 0.5 });
    assert.ok(at(extract(values, shaky), 'jitter_log') > at(extract(values, steady), 'jitter_log') + 1);
  });

  it('puts hum at the Nyquist frequency into the top band', () => {
    const { values, times } = window({ hum: 3 });
    const features = extract(values, times);
    assert.ok(at(features, 'band_5') > 0.5, `band_5 ${at(features, 'band_5')}`);
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
