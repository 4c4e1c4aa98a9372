/**
 * Trains the embedding network: dense layers whose output, L2-normalised, puts the windows of
 * one source in a tight cone, so that verification by cosine to an enrolled centroid works for
 * sources never seen. Seeded throughout (weights, episode sampling), so the same data and seed
 * give the same model. The network reads EMBEDDING_FEATURES only (the scale-free ones).
 *
 * Training needs the full @tensorflow/tfjs (layers, optimisers): a development dependency,
 * required only here; the node runs the result without it (lib/tinyml/model).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { LabelledWindows } from './dataset';
import { EMBEDDING_FEATURES, FEATURE_COUNT, FEATURE_INDEX } from '../../lib/tinyml/features';
import type { ModelMetadata } from '../../lib/tinyml/model';
import { SeededRandom } from './random';

/** Width of the network's input. */
const INPUTS = EMBEDDING_FEATURES.length;

export interface TrainOptions {
  seed: number;
  epochs: number;
  /** Sources per episode, and windows per source in it (half enrol, half score). */
  ways: number;
  shots: number;
  learningRate: number;
  hidden: number[];
  embedding: number;
  /** Cosine-softmax scale and additive margin. */
  scale: number;
  margin: number;
  log?: (line: string) => void;
}

export const DEFAULT_TRAINING: TrainOptions = {
  seed: 20261125,
  epochs: 40,
  ways: 32,
  shots: 8,
  learningRate: 0.005,
  hidden: [64, 64],
  embedding: 32,
  scale: 30,
  margin: 0.1,
};

/** The network's inputs of every window: EMBEDDING_FEATURES columns of the full feature rows. */
export function embeddingInputs(data: LabelledWindows): LabelledWindows {
  const features = new Float32Array(data.count * INPUTS);
  for (let r = 0; r < data.count; r++)
    EMBEDDING_FEATURES.forEach((name, i) => {
      features[r * INPUTS + i] = data.features[r * FEATURE_COUNT + FEATURE_INDEX[name]];
    });
  return { ...data, features };
}

/** Mean and standard deviation of each input (rows of INPUTS). */
export function featureStatistics(inputs: LabelledWindows): { mean: number[]; std: number[] } {
  const mean = new Array<number>(INPUTS).fill(0);
  const std = new Array<number>(INPUTS).fill(0);
  for (let r = 0; r < inputs.count; r++)
    for (let f = 0; f < INPUTS; f++) mean[f] += inputs.features[r * INPUTS + f] / inputs.count;
  for (let r = 0; r < inputs.count; r++)
    for (let f = 0; f < INPUTS; f++) std[f] += (inputs.features[r * INPUTS + f] - mean[f]) ** 2 / inputs.count;
  return { mean, std: std.map(v => Math.sqrt(v)) };
}

/**
 * Per feature of the full set, the 0.1 % and 99.9 % points over the training windows, widened by
 * 5 % of their distance: what the network has seen, with a little room.
 */
export function trainingRange(data: LabelledWindows): { low: number[]; high: number[] } {
  const column = new Float64Array(data.count);
  const low: number[] = [];
  const high: number[] = [];
  for (let f = 0; f < FEATURE_COUNT; f++) {
    for (let r = 0; r < data.count; r++) column[r] = data.features[r * FEATURE_COUNT + f];
    column.sort();
    const from = column[Math.floor(0.001 * (data.count - 1))];
    const to = column[Math.ceil(0.999 * (data.count - 1))];
    low.push(from - 0.05 * (to - from));
    high.push(to + 0.05 * (to - from));
  }
  return { low, high };
}

/**
 * The within-source covariance of the standardised features, as the inverse of its Cholesky
 * factor: a linear map under which a source's own window-to-window variation is the same in
 * every direction. Starting the network there means it starts from what separates sources.
 */
export function whitening(data: LabelledWindows, stats: { mean: number[]; std: number[] }): number[][] {
  const F = INPUTS;
  const z = (r: number, f: number) =>
    stats.std[f] > 0 ? (data.features[r * F + f] - stats.mean[f]) / stats.std[f] : 0;
  const classMeans = Array.from({ length: data.classes }, () => new Float64Array(F));
  const counts = new Float64Array(data.classes);
  for (let r = 0; r < data.count; r++) {
    counts[data.labels[r]]++;
    for (let f = 0; f < F; f++) classMeans[data.labels[r]][f] += z(r, f);
  }
  for (const [c, m] of classMeans.entries()) for (let f = 0; f < m.length; f++) m[f] /= Math.max(1, counts[c]);
  const cov = Array.from({ length: F }, () => new Float64Array(F));
  for (let r = 0; r < data.count; r++) {
    const m = classMeans[data.labels[r]];
    for (let i = 0; i < F; i++)
      for (let j = 0; j <= i; j++) cov[i][j] += ((z(r, i) - m[i]) * (z(r, j) - m[j])) / data.count;
  }
  // Cholesky (cov = L·Lᵀ), with a ridge so that features constant within every source stay finite.
  const L = Array.from({ length: F }, () => new Float64Array(F));
  for (let i = 0; i < F; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = cov[i][j] + (i === j ? 1e-3 : 0);
      for (let k = 0; k < j; k++) sum -= L[i][k] * L[j][k];
      L[i][j] = i === j ? Math.sqrt(Math.max(sum, 1e-9)) : sum / L[j][j];
    }
  }
  // Rows of L⁻¹ by forward substitution; the layer kernel is its transpose (x · kernel).
  const inverse = Array.from({ length: F }, () => new Array<number>(F).fill(0));
  for (let col = 0; col < F; col++) {
    for (let i = 0; i < F; i++) {
      let sum = i === col ? 1 : 0;
      for (let k = 0; k < i; k++) sum -= L[i][k] * inverse[k][col];
      inverse[i][col] = sum / L[i][i];
    }
  }
  return inverse[0].map((_, i) => inverse.map(row => row[i]));
}

export function buildNetwork(options: TrainOptions, whiteningKernel: number[][]): tf.Sequential {
  const network = tf.sequential();
  network.add(
    tf.layers.dense({
      units: INPUTS,
      inputShape: [INPUTS],
      weights: [tf.tensor2d(whiteningKernel), tf.zeros([INPUTS])],
    }),
  );
  options.hidden.forEach((units, i) => {
    network.add(
      tf.layers.dense({
        units,
        activation: 'relu',
        kernelInitializer: tf.initializers.heNormal({ seed: options.seed + i }),
      }),
    );
  });
  network.add(
    tf.layers.dense({
      units: options.embedding,
      kernelInitializer: tf.initializers.glorotUniform({ seed: options.seed + 99 }),
    }),
  );
  return network;
}

/**
 * Trains `network` in place on standardised features, in episodes shaped like verification
 * (prototypical networks): each batch takes `ways` sources with `shots` windows each, averages
 * half of each source's embeddings into a centroid, and asks every other window to be closer
 * (by cosine, with an additive margin) to its own source's centroid than to the others'. That is
 * enrol-then-score, learnt on sources the model will never see again. Returns the last epoch's
 * mean loss.
 */
export function train(
  network: tf.Sequential,
  data: LabelledWindows,
  stats: { mean: number[]; std: number[] },
  options: TrainOptions,
): number {
  const rng = new SeededRandom(options.seed);
  const F = INPUTS;
  const standardised = new Float32Array(data.features.length);
  for (let r = 0; r < data.count; r++) {
    for (let f = 0; f < F; f++) {
      const i = r * F + f;
      standardised[i] = stats.std[f] > 0 ? (data.features[i] - stats.mean[f]) / stats.std[f] : 0;
    }
  }
  const byClass: number[][] = Array.from({ length: data.classes }, () => []);
  for (let r = 0; r < data.count; r++) byClass[data.labels[r]].push(r);
  const usable = byClass.map((rows, c) => (rows.length >= options.shots ? c : -1)).filter(c => c >= 0);
  if (usable.length < options.ways)
    throw new Error(`training needs ${options.ways} sources with ${options.shots} windows each, has ${usable.length}`);
  // Episodes take whole groups, so every source meets its hardest impostors: its neighbours.
  const groups = new Map<number, number[]>();
  for (const c of usable) {
    const group = Math.floor(c / data.groupSize);
    groups.set(group, [...(groups.get(group) ?? []), c]);
  }
  const groupList = [...groups.values()];
  const pickWays = (): number[] => {
    const picked: number[] = [];
    for (const group of rng.shuffle(groupList.slice())) {
      picked.push(...group.slice(0, options.ways - picked.length));
      if (picked.length === options.ways) break;
    }
    return picked;
  };
  const half = options.shots / 2;
  const batchSize = options.ways * options.shots;
  const episodes = Math.max(1, Math.floor(data.count / batchSize));
  const batch = new Float32Array(batchSize * F);
  const targets = tf.tidy(() =>
    tf.oneHot(
      tf.tensor1d(
        Array.from({ length: options.ways * half }, (_, i) => Math.floor(i / half)),
        'int32',
      ),
      options.ways,
    ),
  );
  let optimizer = tf.train.adam(options.learningRate);
  let lastLoss = NaN;
  for (let epoch = 0; epoch < options.epochs; epoch++) {
    // A last quarter at a tenth of the rate settles the embedding.
    if (epoch === Math.floor(0.75 * options.epochs)) {
      optimizer.dispose();
      optimizer = tf.train.adam(options.learningRate / 10);
    }
    let lossSum = 0;
    for (let episode = 0; episode < episodes; episode++) {
      // Rows ordered [way][shot]: the first `half` shots of a way are its support set.
      const ways = pickWays();
      ways.forEach((c, w) => {
        const rows = rng.shuffle(byClass[c].slice()).slice(0, options.shots);
        for (const [s, row] of rows.entries())
          batch.set(standardised.subarray(row * F, (row + 1) * F), (w * options.shots + s) * F);
      });
      const loss = tf.tidy(() => {
        const x = tf.tensor3d(batch, [options.ways, options.shots, F]);
        return optimizer.minimize(() => {
          const embedded = network.apply(x.reshape([batchSize, F]), { training: true }) as tf.Tensor2D;
          const unit = tf
            .div(embedded, tf.add(tf.norm(embedded, 2, 1, true), 1e-9))
            .reshape([options.ways, options.shots, -1]);
          const support = unit.slice([0, 0, 0], [-1, half, -1]).mean(1);
          const centroids = tf.div(support, tf.add(tf.norm(support, 2, 1, true), 1e-9));
          const queries = unit.slice([0, half, 0], [-1, half, -1]).reshape([options.ways * half, -1]);
          const cosine = tf.matMul(queries, centroids, false, true);
          const logits = tf.mul(tf.sub(cosine, tf.mul(targets, options.margin)), options.scale);
          return tf.losses.softmaxCrossEntropy(targets, logits) as tf.Scalar;
        }, true) as tf.Scalar;
      });
      lossSum += loss.dataSync()[0];
      loss.dispose();
    }
    lastLoss = lossSum / episodes;
    options.log?.(`epoch ${epoch + 1}/${options.epochs}  loss ${lastLoss.toFixed(4)}`);
  }
  optimizer.dispose();
  targets.dispose();
  return lastLoss;
}

/** Writes a layers model as model.json + weights.bin, the layout tf.loadLayersModel reads. */
export async function saveModel(
  network: tf.LayersModel,
  metadata: ModelMetadata,
  dir: string,
): Promise<{ weightBytes: number }> {
  fs.mkdirSync(dir, { recursive: true });
  network.setUserDefinedMetadata({ m2m: metadata });
  let weightBytes = 0;
  await network.save(
    tf.io.withSaveHandler(async artifacts => {
      const weights = Buffer.from(artifacts.weightData as ArrayBuffer);
      weightBytes = weights.length;
      fs.writeFileSync(path.join(dir, 'weights.bin'), weights);
      const manifest = {
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: null,
        modelTopology: artifacts.modelTopology,
        weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }],
        userDefinedMetadata: artifacts.userDefinedMetadata,
      };
      fs.writeFileSync(path.join(dir, 'model.json'), `${JSON.stringify(manifest, null, 1)}\n`);
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  return { weightBytes };
}
