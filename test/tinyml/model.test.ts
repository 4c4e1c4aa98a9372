import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { EMBEDDING_FEATURES, FEATURE_COUNT, FEATURE_INDEX } from '../../lib/tinyml/features';
import { BehaviourModel, ModelError } from '../../lib/tinyml/model';
import { modelCopy, SHIPPED_MODEL, shippedModel } from './fixtures';

function randomFeatures(rows: number, seed: number): Float32Array {
  return Float32Array.from({ length: rows * FEATURE_COUNT }, (_, i) => Math.sin(seed * 7919 + i * 12.9898) * 2);
}

describe('tinyml model', function () {
  this.timeout(60_000);

  it('ships at most 32 KB of weights, described by its model.json', async () => {
    const model = await shippedModel();
    const bytes = model.weights().reduce((sum, l) => sum + 4 * (l.kernel.length + l.bias.length), 0);
    assert.ok(bytes <= 32 * 1024, `${bytes} bytes`);
    assert.equal(fs.statSync(path.join(SHIPPED_MODEL, 'weights.bin')).size, bytes);
    assert.match(model.id, /^sensor-behaviour-v2-stamped@[0-9a-f]{12}$/);
  });

  it('computes what the layers model computes, as unit-length embeddings', async () => {
    const model = await shippedModel();
    const layers = await tf.loadLayersModel(tf.io.fromMemory(readArtifacts()));
    const { featureMean, featureStd } = model.metadata;
    const rows = 5;
    const features = randomFeatures(rows, 1);
    const inputs = EMBEDDING_FEATURES.length;
    const standardised = new Float32Array(rows * inputs);
    for (let r = 0; r < rows; r++)
      EMBEDDING_FEATURES.forEach((name, i) => {
        standardised[r * inputs + i] =
          (features[r * FEATURE_COUNT + FEATURE_INDEX[name]] - featureMean[i]) / featureStd[i];
      });
    const reference = tf.tidy(
      () => (layers.predict(tf.tensor2d(standardised, [rows, inputs])) as tf.Tensor).arraySync() as number[][],
    );
    layers.dispose();
    const embedded = model.embed(features, rows);
    for (let r = 0; r < rows; r++) {
      const norm = Math.hypot(...reference[r]);
      for (const [c, v] of reference[r].entries())
        assert.ok(Math.abs(v / norm - embedded[r * model.embeddingSize + c]) < 1e-4);
    }
  });

  it('gives the same embedding for a window alone as in a batch', async () => {
    const model = await shippedModel();
    const batch = randomFeatures(8, 4);
    const together = model.embed(batch, 8);
    for (let r = 0; r < 8; r++) {
      const alone = model.embed(batch.subarray(r * FEATURE_COUNT, (r + 1) * FEATURE_COUNT), 1);
      for (let c = 0; c < model.embeddingSize; c++)
        assert.ok(Math.abs(alone[c] - together[r * model.embeddingSize + c]) < 1e-5, `row ${r}`);
    }
  });

  it('runs without TensorFlow.js: the gateway loads none of it', () => {
    const loaded = Object.keys(require.cache).filter(file => file.includes(`${path.sep}@tensorflow${path.sep}`));
    const script = `require(${JSON.stringify(require.resolve('../../lib/tinyml/runtime'))});
      const tf = Object.keys(require.cache).filter(f => f.includes('@tensorflow'));
      process.stdout.write(String(tf.length));`;
    const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
    assert.equal(execFileSync(process.execPath, ['-e', script]).toString(), '0');
    assert.ok(loaded.length > 0, 'this test process does load it, for the reference computation');
  });

  describe('refuses a broken model with a clear error', () => {
    let dir: string;
    beforeEach(() => {
      dir = modelCopy();
    });
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

    const cases: Array<[string, (dir: string) => void, RegExp]> = [
      ['a missing model.json', d => fs.rmSync(path.join(d, 'model.json')), /model\.json: not found/],
      ['a corrupt model.json', d => fs.writeFileSync(path.join(d, 'model.json'), '{"modelTop'), /model\.json: .*JSON/],
      ['missing weights', d => fs.rmSync(path.join(d, 'weights.bin')), /weights file missing/],
      ['truncated weights', d => fs.truncateSync(path.join(d, 'weights.bin'), 100), /weights are 100 bytes/],
      [
        'another feature set',
        d => {
          const json = JSON.parse(fs.readFileSync(path.join(d, 'model.json'), 'utf8'));
          json.userDefinedMetadata.m2m.featureVersion = 99;
          fs.writeFileSync(path.join(d, 'model.json'), JSON.stringify(json));
        },
        /feature set v99/,
      ],
    ];
    for (const [what, breakIt, message] of cases) {
      it(what, async () => {
        breakIt(dir);
        await assert.rejects(
          BehaviourModel.load(dir),
          (err: Error) => err instanceof ModelError && message.test(err.message),
        );
      });
    }
  });
});

function readArtifacts(): tf.io.ModelArtifacts {
  const json = JSON.parse(fs.readFileSync(path.join(SHIPPED_MODEL, 'model.json'), 'utf8'));
  const weights = fs.readFileSync(path.join(SHIPPED_MODEL, 'weights.bin'));
  return {
    modelTopology: json.modelTopology,
    weightSpecs: json.weightsManifest[0].weights,
    weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.length),
  };
}
