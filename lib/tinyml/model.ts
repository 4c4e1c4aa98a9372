/**
 * The behaviour model on disk and in memory: a TensorFlow.js layers model (model.json +
 * weights.bin, the standard format, loadable by any tfjs tool) whose userDefinedMetadata names
 * the features it reads, their standardisation, the training range of every feature (to tell a
 * source the model never saw), and the calibration of its scores.
 *
 * Loading needs only @tensorflow/tfjs-core: a sequential stack of dense layers is read from the
 * topology and its weights decoded with tf.io.decodeWeights, so the layers library (and its
 * ~250 MB umbrella package) stays a training-time dependency. Inference takes two paths with the
 * same weights: single windows through plain typed-array loops (a TF.js call costs more than the
 * arithmetic at this size), batches through fused matMul+bias+relu kernels on the WASM backend.
 * The standardisation is folded into the first layer. Embeddings are L2-normalised, so cosine =
 * dot product.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { M2MError } from '../errors';
import { array, literal, number, object, string, type Infer } from '../schema';
import { EMBEDDING_FEATURES, FEATURE_COUNT, FEATURE_INDEX, FEATURE_VERSION, WINDOW } from './features';

const metadataSchema = object({
  name: string({ minLength: 1, maxLength: 100 }),
  featureVersion: number({ integer: true, min: 1 }),
  window: number({ integer: true, min: 8, max: 4096 }),
  /** The features the network reads, in order: EMBEDDING_FEATURES of the feature set. */
  featureNames: array(string(), { maxItems: 256 }),
  featureMean: array(number(), { maxItems: 256 }),
  featureStd: array(number({ min: 0 }), { maxItems: 256 }),
  /** Per feature of FEATURE_NAMES: the 0.1 % and 99.9 % points of the training data. */
  trainingLow: array(number(), { maxItems: 256 }),
  trainingHigh: array(number(), { maxItems: 256 }),
  /** How much the embedding's distance weighs beside the one-class distance (lib/tinyml/profile). */
  embeddingWeight: number({ min: 0, max: 100 }),
  /** Statistic that scores 1/e; set so that the validation operating point scores the threshold. */
  scoreScale: number({ min: 1e-9 }),
  /** The same for the one-class distance alone (sources outside the training range). */
  oneClassScale: number({ min: 1e-9 }),
  /** Score threshold; enrolment may lower it a little per source (lib/tinyml/profile). */
  threshold: number({ min: 0, max: 1 }),
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
  kernel: Float32Array;
  bias: Float32Array;
  inputs: number;
  outputs: number;
  relu: boolean;
}

interface LayerTensors {
  kernel: tf.Tensor2D;
  bias: tf.Tensor1D;
}

/** Where each input of the network sits in a full feature row. */
const INPUT_INDEX = Int32Array.from(EMBEDDING_FEATURES, name => FEATURE_INDEX[name]);
/** Rows up to this many go through the typed-array path, larger batches through TF.js. */
const LOOP_ROWS = 2;

export class BehaviourModel {
  /** name@hash-of-weights: profiles record it, so a retrained model never meets stale centroids. */
  readonly id: string;
  readonly embeddingSize: number;
  private tensors: LayerTensors[] | undefined;
  private readonly scratch: Float32Array[];

  private constructor(
    readonly metadata: ModelMetadata,
    private readonly layers: DenseLayer[],
    weightsHash: string,
  ) {
    this.id = `${metadata.name}@${weightsHash}`;
    this.embeddingSize = layers[layers.length - 1].outputs;
    this.scratch = [new Float32Array(INPUT_INDEX.length), ...layers.map(l => new Float32Array(l.outputs))];
  }

  /** Loads a directory holding model.json and its weight files. */
  static async load(dir: string): Promise<BehaviourModel> {
    const { manifest, weightData, specs } = readArtifacts(dir);
    const raw = (manifest.userDefinedMetadata as { m2m?: unknown } | undefined)?.m2m;
    let metadata: ModelMetadata;
    try {
      metadata = metadataSchema.parse(raw, 'userDefinedMetadata.m2m');
    } catch (err) {
      throw new ModelError(`${dir}: model metadata: ${(err as Error).message}`);
    }
    if (
      metadata.featureVersion !== FEATURE_VERSION ||
      metadata.window !== WINDOW ||
      metadata.featureNames.join() !== EMBEDDING_FEATURES.join() ||
      metadata.trainingLow.length !== FEATURE_COUNT ||
      metadata.trainingHigh.length !== FEATURE_COUNT
    ) {
      throw new ModelError(
        `${dir}: model was trained on feature set v${metadata.featureVersion} (window ${metadata.window}); this package extracts v${FEATURE_VERSION} (window ${WINDOW})`,
      );
    }
    const named = tf.tidy(() => tf.io.decodeWeights(weightData, specs));
    try {
      const layers = denseLayers(manifest.modelTopology, named, dir);
      foldStandardisation(layers[0], metadata);
      const hash = crypto.createHash('sha256').update(new Uint8Array(weightData)).digest('hex').slice(0, 12);
      return new BehaviourModel(metadata, layers, hash);
    } finally {
      tf.dispose(Object.values(named));
    }
  }

  /**
   * L2-normalised embeddings of `rows` full feature rows (FEATURE_COUNT each, the network picks
   * its inputs), row-major in one array.
   */
  embed(features: Float32Array, rows: number): Float32Array {
    const out = rows <= LOOP_ROWS ? this.embedByLoops(features, rows) : this.embedByKernels(features, rows);
    normaliseRows(out, rows, this.embeddingSize);
    return out;
  }

  private embedByLoops(features: Float32Array, rows: number): Float32Array {
    const out = new Float32Array(rows * this.embeddingSize);
    const [input] = this.scratch;
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < INPUT_INDEX.length; i++) input[i] = features[r * FEATURE_COUNT + INPUT_INDEX[i]];
      let x = input;
      this.layers.forEach((layer, l) => {
        const y = this.scratch[l + 1];
        y.set(layer.bias);
        for (let i = 0; i < layer.inputs; i++) {
          const xi = x[i];
          if (xi === 0) continue;
          const row = i * layer.outputs;
          for (let o = 0; o < layer.outputs; o++) y[o] += xi * layer.kernel[row + o];
        }
        if (layer.relu) for (let o = 0; o < layer.outputs; o++) if (y[o] < 0) y[o] = 0;
        x = y;
      });
      out.set(x, r * this.embeddingSize);
    }
    return out;
  }

  private embedByKernels(features: Float32Array, rows: number): Float32Array {
    this.tensors ??= this.layers.map(layer => ({
      kernel: tf.tensor2d(layer.kernel, [layer.inputs, layer.outputs]),
      bias: tf.tensor1d(layer.bias),
    }));
    const tensors = this.tensors;
    const inputs = new Float32Array(rows * INPUT_INDEX.length);
    for (let r = 0; r < rows; r++)
      for (let i = 0; i < INPUT_INDEX.length; i++)
        inputs[r * INPUT_INDEX.length + i] = features[r * FEATURE_COUNT + INPUT_INDEX[i]];
    const result = tf.tidy(() => {
      let x: tf.Tensor2D = tf.tensor2d(inputs, [rows, INPUT_INDEX.length]);
      this.layers.forEach((layer, l) => {
        x = tf.fused.matMul({
          a: x,
          b: tensors[l].kernel,
          bias: tensors[l].bias,
          activation: layer.relu ? 'relu' : 'linear',
        }) as tf.Tensor2D;
      });
      return x;
    });
    const data = result.dataSync() as Float32Array;
    result.dispose();
    return data;
  }

  /** The dense weights as plain arrays, standardisation folded in (for tests and the size check). */
  weights(): ReadonlyArray<Readonly<DenseLayer>> {
    return this.layers;
  }

  /** Whether `value` of feature `index` lies inside what the model was trained on. */
  inTrainingRange(index: number, value: number): boolean {
    return value >= this.metadata.trainingLow[index] && value <= this.metadata.trainingHigh[index];
  }

  dispose(): void {
    for (const layer of this.tensors ?? []) tf.dispose([layer.kernel, layer.bias]);
    this.tensors = undefined;
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

/** x' = (x - mean) / std, so x'W + b = x (W / std) + (b - (mean / std) W). */
function foldStandardisation(first: DenseLayer, metadata: ModelMetadata): void {
  const { featureMean, featureStd } = metadata;
  for (let i = 0; i < first.inputs; i++) {
    const scale = featureStd[i] > 0 ? 1 / featureStd[i] : 0;
    for (let o = 0; o < first.outputs; o++) {
      const w = first.kernel[i * first.outputs + o] * scale;
      first.kernel[i * first.outputs + o] = w;
      first.bias[o] -= featureMean[i] * w;
    }
  }
}

interface LayerConfig {
  class_name?: string;
  config?: { name?: string; units?: number; activation?: string; use_bias?: boolean };
}

/** The dense layers of a Sequential topology, with their decoded weights. */
function denseLayers(topology: unknown, named: tf.NamedTensorMap, dir: string): DenseLayer[] {
  const config = (topology as { config?: { layers?: LayerConfig[] } | LayerConfig[] } | undefined)?.config;
  const list = Array.isArray(config) ? config : config?.layers;
  if (!Array.isArray(list) || list.length === 0) throw new ModelError(`${dir}: model.json has no sequential layers`);
  let inputs = INPUT_INDEX.length;
  return list.map((layer, index) => {
    const name = layer.config?.name;
    const activation = layer.config?.activation ?? 'linear';
    if (layer.class_name !== 'Dense' || !name || layer.config?.use_bias === false)
      throw new ModelError(`${dir}: layer ${index} is not a dense layer with bias`);
    if (activation !== 'relu' && activation !== 'linear')
      throw new ModelError(`${dir}: layer ${index}: unsupported activation ${activation}`);
    const kernel = named[`${name}/kernel`];
    const bias = named[`${name}/bias`];
    if (!kernel || !bias || kernel.rank !== 2 || kernel.shape[0] !== inputs)
      throw new ModelError(`${dir}: layer ${index} (${name}) expects ${kernel?.shape[0]} inputs, gets ${inputs}`);
    const outputs = kernel.shape[1] as number;
    inputs = outputs;
    return {
      kernel: Float32Array.from(kernel.dataSync()),
      bias: Float32Array.from(bias.dataSync()),
      inputs: kernel.shape[0],
      outputs,
      relu: activation === 'relu',
    };
  });
}

interface Artifacts {
  manifest: { modelTopology?: unknown; userDefinedMetadata?: object };
  weightData: ArrayBuffer;
  specs: tf.io.WeightsManifestEntry[];
}

function readArtifacts(dir: string): Artifacts {
  const file = path.join(dir, 'model.json');
  let json: {
    modelTopology?: object;
    weightsManifest?: Array<{ paths: string[]; weights: tf.io.WeightsManifestEntry[] }>;
    userDefinedMetadata?: object;
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
  if (specs.some(spec => spec.dtype !== 'float32' || spec.quantization))
    throw new ModelError(`${dir}: only float32 weights without quantisation are supported`);
  const weights = Buffer.concat(buffers);
  const expected = specs.reduce((sum, spec) => sum + 4 * spec.shape.reduce((a, b) => a * b, 1), 0);
  if (weights.length !== expected)
    throw new ModelError(`${dir}: weights are ${weights.length} bytes, the manifest needs ${expected}`);
  return {
    manifest: json,
    weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.length) as ArrayBuffer,
    specs,
  };
}
