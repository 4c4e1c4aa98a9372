/**
 * The behaviour model on disk and in memory: a TensorFlow.js layers model (model.json +
 * weights.bin, the standard format, loadable by any tfjs tool) whose userDefinedMetadata names
 * the features it reads, their standardisation, the training range of every feature (to tell a
 * source the model never saw), and the calibration of its scores.
 *
 * Running it needs no TensorFlow.js at all: the network is a short stack of dense layers
 * (20 → 20 → 64 → 64 → 32, about 8,000 multiply-adds a window), read from the layers format's
 * topology, its float32 weights decoded from the manifest, and run as typed-array loops; a call
 * into TF.js would cost more than the arithmetic, and its packages would be most of what a
 * gateway installs. TF.js stays what trains and checks the model (tools/, a development
 * dependency). The standardisation is folded into the first layer. Embeddings are
 * L2-normalised, so cosine = dot product.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { M2MError } from '../errors';
import { array, literal, number, object, optional, string, type Infer } from '../schema';
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
  /** The model's threshold; each source's own comes from its enrolment, near it (lib/tinyml/profile). */
  threshold: number({ min: 0, max: 1 }),
  /** How far below its lowest held-out enrolment decision a source's threshold sits; set on validation units. */
  operatingMargin: optional(number({ min: 0, max: 0.5 })),
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

/** Where each input of the network sits in a full feature row. */
const INPUT_INDEX = Int32Array.from(EMBEDDING_FEATURES, name => FEATURE_INDEX[name]);

export class BehaviourModel {
  /** name@hash-of-weights: profiles record it, so a retrained model never meets stale centroids. */
  readonly id: string;
  readonly embeddingSize: number;
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
    const layers = denseLayers(manifest.modelTopology, decodeWeights(weightData, specs), dir);
    foldStandardisation(layers[0], metadata);
    const hash = crypto.createHash('sha256').update(weightData).digest('hex').slice(0, 12);
    return new BehaviourModel(metadata, layers, hash);
  }

  /**
   * L2-normalised embeddings of `rows` full feature rows (FEATURE_COUNT each, the network picks
   * its inputs), row-major in one array.
   */
  embed(features: Float32Array, rows: number): Float32Array {
    const out = new Float32Array(rows * this.embeddingSize);
    const [input] = this.scratch;
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < INPUT_INDEX.length; i++) input[i] = features[r * FEATURE_COUNT + INPUT_INDEX[i]];
      let x = input;
      for (let l = 0; l < this.layers.length; l++) {
        const layer = this.layers[l];
        const y = this.scratch[l + 1];
        y.set(layer.bias);
        for (let i = 0; i < layer.inputs; i++) {
          const xi = x[i];
          if (xi === 0) continue; // after a ReLU, most inputs are
          const row = i * layer.outputs;
          for (let o = 0; o < layer.outputs; o++) y[o] += xi * layer.kernel[row + o];
        }
        if (layer.relu) for (let o = 0; o < layer.outputs; o++) if (y[o] < 0) y[o] = 0;
        x = y;
      }
      out.set(x, r * this.embeddingSize);
    }
    normaliseRows(out, rows, this.embeddingSize);
    return out;
  }

  /** The dense weights as plain arrays, standardisation folded in (for tests and the size check). */
  weights(): ReadonlyArray<Readonly<DenseLayer>> {
    return this.layers;
  }

  /** Whether `value` of feature `index` lies inside what the model was trained on. */
  inTrainingRange(index: number, value: number): boolean {
    return value >= this.metadata.trainingLow[index] && value <= this.metadata.trainingHigh[index];
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

/** A weight tensor as the layers format's manifest describes it. */
interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: unknown;
}

interface DecodedWeight {
  shape: number[];
  values: Float32Array;
}

/** The manifest's float32 tensors, little-endian and packed in its order, by name. */
function decodeWeights(data: Buffer, specs: WeightSpec[]): Map<string, DecodedWeight> {
  const named = new Map<string, DecodedWeight>();
  let offset = 0;
  for (const spec of specs) {
    const count = spec.shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(count);
    for (let i = 0; i < count; i++) values[i] = data.readFloatLE(offset + 4 * i);
    offset += 4 * count;
    named.set(spec.name, { shape: spec.shape, values });
  }
  return named;
}

/** The dense layers of a Sequential topology, with their decoded weights. */
function denseLayers(topology: unknown, named: Map<string, DecodedWeight>, dir: string): DenseLayer[] {
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
    const kernel = named.get(`${name}/kernel`);
    const bias = named.get(`${name}/bias`);
    if (
      !kernel ||
      !bias ||
      kernel.shape.length !== 2 ||
      kernel.shape[0] !== inputs ||
      bias.shape[0] !== kernel.shape[1]
    )
      throw new ModelError(`${dir}: layer ${index} (${name}) expects ${kernel?.shape[0]} inputs, gets ${inputs}`);
    const outputs = kernel.shape[1];
    inputs = outputs;
    return { kernel: kernel.values, bias: bias.values, inputs: kernel.shape[0], outputs, relu: activation === 'relu' };
  });
}

interface Artifacts {
  manifest: { modelTopology?: unknown; userDefinedMetadata?: object };
  weightData: Buffer;
  specs: WeightSpec[];
}

function readArtifacts(dir: string): Artifacts {
  const file = path.join(dir, 'model.json');
  let json: {
    modelTopology?: object;
    weightsManifest?: Array<{ paths: string[]; weights: WeightSpec[] }>;
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
  const specs: WeightSpec[] = [];
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
  return { manifest: json, weightData: weights, specs };
}
