/**
 * The behaviour model on disk and in memory: a TensorFlow.js layers model (model.json +
 * weights.bin, the standard format, loadable by any tfjs tool) whose userDefinedMetadata names
 * the feature set and carries the feature standardisation and the calibrated threshold.
 *
 * Inference runs the same dense layers as fused matMul+bias+relu ops with the standardisation
 * folded into the first layer: three kernels per batch instead of the layers API's bookkeeping,
 * which dominates at this size. Results are L2-normalised embeddings, so cosine = dot product.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { M2MError } from '../errors';
import { array, literal, number, object, string, type Infer } from '../schema';
import { FEATURE_COUNT, FEATURE_NAMES, FEATURE_VERSION, WINDOW } from './features';

const metadataSchema = object({
  name: string({ minLength: 1, maxLength: 100 }),
  featureVersion: number({ integer: true, min: 1 }),
  window: number({ integer: true, min: 8, max: 4096 }),
  featureNames: array(string(), { maxItems: 256 }),
  featureMean: array(number(), { maxItems: 256 }),
  featureStd: array(number({ min: 0 }), { maxItems: 256 }),
  /** Score threshold; enrolment may lower it a little per source (lib/tinyml/profile). */
  threshold: number({ min: 0, max: 1 }),
  /** Cosine distance that scores 1/e: maps the validation equal-error point to the threshold. */
  distanceScale: number({ min: 1e-9 }),
  /** What the times were in training: the sources' own stamps, arrival times, or recordings. */
  timeSource: literal('source', 'arrival', 'recorded'),
  trainedOn: string({ maxLength: 1000 }),
});

export type ModelMetadata = Infer<typeof metadataSchema>;

/** A model file that is missing, unreadable, or not one this version of the package can use. */
export class ModelError extends M2MError {
  constructor(message: string) {
    super('model_invalid', message, 500);
  }
}

interface DenseLayer {
  kernel: tf.Tensor2D;
  bias: tf.Tensor1D;
  relu: boolean;
}

export class BehaviourModel {
  /** name@hash-of-weights: profiles record it, so a retrained model never meets stale centroids. */
  readonly id: string;
  readonly embeddingSize: number;

  private constructor(
    readonly metadata: ModelMetadata,
    private readonly layers: DenseLayer[],
    weightsHash: string,
  ) {
    this.id = `${metadata.name}@${weightsHash}`;
    this.embeddingSize = layers[layers.length - 1].kernel.shape[1];
  }

  static async fromLayers(
    network: tf.LayersModel,
    metadata: ModelMetadata,
    weightsHash: string,
  ): Promise<BehaviourModel> {
    const dense = network.layers.map((layer, index) => {
      const [kernel, bias] = layer.getWeights() as [tf.Tensor2D, tf.Tensor1D];
      if (!kernel || !bias || kernel.rank !== 2) throw new ModelError(`layer ${index} is not a dense layer with bias`);
      const activation = (layer.getConfig() as { activation?: string }).activation ?? 'linear';
      if (activation !== 'relu' && activation !== 'linear')
        throw new ModelError(`layer ${index}: unsupported activation ${activation}`);
      return { kernel: kernel.clone(), bias: bias.clone(), relu: activation === 'relu' };
    });
    if (dense[0].kernel.shape[0] !== FEATURE_COUNT)
      throw new ModelError(
        `model expects ${dense[0].kernel.shape[0]} features, this package extracts ${FEATURE_COUNT}`,
      );
    // x' = (x - mean) / std, so x'W + b = x (W / std) + (b - (mean / std) W).
    const mean = tf.tensor1d(metadata.featureMean);
    const invStd = tf.tensor1d(metadata.featureStd.map(s => (s > 0 ? 1 / s : 0)));
    const first = dense[0];
    const scaled = tf.tidy(() => tf.mul(first.kernel, invStd.reshape([-1, 1])) as tf.Tensor2D);
    const shifted = tf.tidy(
      () => tf.sub(first.bias, tf.matMul(mean.reshape([1, -1]), scaled).reshape([-1])) as tf.Tensor1D,
    );
    tf.dispose([mean, invStd, first.kernel, first.bias]);
    dense[0] = { kernel: scaled, bias: shifted, relu: first.relu };
    return new BehaviourModel(metadata, dense, weightsHash);
  }

  /** Loads a directory holding model.json and its weight files. */
  static async load(dir: string): Promise<BehaviourModel> {
    const artifacts = readArtifacts(dir);
    const raw = (artifacts.userDefinedMetadata as { m2m?: unknown } | undefined)?.m2m;
    let metadata: ModelMetadata;
    try {
      metadata = metadataSchema.parse(raw, 'userDefinedMetadata.m2m');
    } catch (err) {
      throw new ModelError(`${dir}: model metadata: ${(err as Error).message}`);
    }
    if (
      metadata.featureVersion !== FEATURE_VERSION ||
      metadata.window !== WINDOW ||
      metadata.featureNames.join() !== FEATURE_NAMES.join()
    ) {
      throw new ModelError(
        `${dir}: model was trained on feature set v${metadata.featureVersion} (window ${metadata.window}); this package extracts v${FEATURE_VERSION} (window ${WINDOW})`,
      );
    }
    let network: tf.LayersModel;
    try {
      network = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
    } catch (err) {
      throw new ModelError(`${dir}: ${(err as Error).message}`);
    }
    try {
      const hash = crypto
        .createHash('sha256')
        .update(new Uint8Array(artifacts.weightData as ArrayBuffer))
        .digest('hex')
        .slice(0, 12);
      return await BehaviourModel.fromLayers(network, metadata, hash);
    } finally {
      network.dispose();
    }
  }

  /** L2-normalised embeddings of `rows` feature rows, row-major in one array. */
  embed(features: Float32Array, rows: number): Float32Array {
    const out = tf.tidy(() => {
      let x: tf.Tensor2D = tf.tensor2d(features.subarray(0, rows * FEATURE_COUNT), [rows, FEATURE_COUNT]);
      for (const layer of this.layers) {
        x = tf.fused.matMul({
          a: x,
          b: layer.kernel,
          bias: layer.bias,
          activation: layer.relu ? 'relu' : 'linear',
        }) as tf.Tensor2D;
      }
      return x;
    });
    const data = out.dataSync() as Float32Array;
    out.dispose();
    normaliseRows(data, rows, this.embeddingSize);
    return data;
  }

  /** The dense weights as plain arrays (for the typed-array reference and the size check). */
  weights(): Array<{ kernel: Float32Array; bias: Float32Array; inputs: number; outputs: number; relu: boolean }> {
    return this.layers.map(l => ({
      kernel: l.kernel.dataSync() as Float32Array,
      bias: l.bias.dataSync() as Float32Array,
      inputs: l.kernel.shape[0],
      outputs: l.kernel.shape[1],
      relu: l.relu,
    }));
  }

  dispose(): void {
    for (const layer of this.layers) tf.dispose([layer.kernel, layer.bias]);
  }
}

function normaliseRows(data: Float32Array, rows: number, width: number): void {
  for (let r = 0; r < rows; r++) {
    let norm = 0;
    for (let c = 0; c < width; c++) norm += data[r * width + c] ** 2;
    const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
    for (let c = 0; c < width; c++) data[r * width + c] *= scale;
  }
}

function readArtifacts(dir: string): tf.io.ModelArtifacts {
  const file = path.join(dir, 'model.json');
  let json: {
    modelTopology?: object;
    weightsManifest?: Array<{ paths: string[]; weights: tf.io.WeightsManifestEntry[] }>;
    userDefinedMetadata?: object;
    format?: string;
  };
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : (err as Error).message;
    throw new ModelError(`${file}: ${reason}`);
  }
  if (!json || typeof json !== 'object' || !json.modelTopology || !Array.isArray(json.weightsManifest)) {
    throw new ModelError(`${file}: not a TensorFlow.js layers model (no modelTopology or weightsManifest)`);
  }
  const specs: tf.io.WeightsManifestEntry[] = [];
  const buffers: Buffer[] = [];
  for (const group of json.weightsManifest) {
    for (const part of group.paths) {
      const weightsFile = path.join(dir, path.basename(part));
      try {
        buffers.push(fs.readFileSync(weightsFile));
      } catch {
        throw new ModelError(`${weightsFile}: weights file missing or unreadable`);
      }
    }
    specs.push(...group.weights);
  }
  const weights = Buffer.concat(buffers);
  const expected = specs.reduce((sum, spec) => sum + 4 * spec.shape.reduce((a, b) => a * b, 1), 0);
  if (weights.length !== expected)
    throw new ModelError(`${dir}: weights are ${weights.length} bytes, the manifest needs ${expected}`);
  return {
    modelTopology: json.modelTopology,
    weightSpecs: specs,
    weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.length),
    userDefinedMetadata: json.userDefinedMetadata as Record<string, object>,
    format: json.format,
  };
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
