#!/usr/bin/env node
/**
 * `npm run train-model`: trains the behaviour model and writes it with its measured metrics.
 *
 *   npm run train-model                                  simulator data → models/sensor-behaviour-v2/
 *                                                        (stamped/ and arrival/, card tables updated)
 *   npm run train-model -- --recordings plant.csv [--out models/plant]
 *                                                        your recordings (CSV or JSON lines of
 *                                                        source, value, time in ms); without
 *                                                        --out: ./models/<file name>
 * Options: --seed N, --epochs N, --units N (simulated units). Same data + seed → same model.
 *
 * Training needs the full @tensorflow/tfjs (a development dependency of this package; install
 * it beside the package to train on your own recordings). The node itself never loads it.
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { MODEL_FAMILY, MODEL_VARIANTS, MODELS_DIR } from '../lib/tinyml/catalog';
import {
  readRecordings,
  simulatedTraining,
  type LabelledWindows,
  WindowCollector,
  windowFeatures,
} from './tinyml/dataset';
import {
  calibrateMargin,
  EVALUATION_PROTOCOL,
  evaluateRecordings,
  evaluateSecondGenerator,
  evaluateSimulated,
  type ModeReport,
  type PartStatistics,
  partStatistics,
  recordedPartStatistics,
  TARGET_FRR,
  VALIDATION_PROTOCOL,
} from './tinyml/evaluate';
import { EMBEDDING_FEATURES, FEATURE_VERSION, WINDOW } from '../lib/tinyml/features';
import { errorRates } from './tinyml/metrics';
import type { BehaviourModel, ModelMetadata } from '../lib/tinyml/model';
import { SeededRandom } from './tinyml/random';
import { updateCard, writeMetrics } from './eval-model';

/** The score a source's own decision must reach: the verifier approves from here (DESIGN §3). */
const THRESHOLD = 0.8;
const EMBEDDING_WEIGHTS = [0, 0.125, 0.25, 0.5, 1, 2];

function fail(message: string): never {
  console.error(`train-model: ${message}`);
  process.exit(1);
}

try {
  require.resolve('@tensorflow/tfjs');
} catch {
  fail('training needs the full TensorFlow.js: npm install @tensorflow/tfjs (the node itself does not)');
}
const training = require('./tinyml/train') as typeof import('./tinyml/train');
const { useBackend } = require('./tinyml/backend') as typeof import('./tinyml/backend');
const { BehaviourModel: Model } = require('../lib/tinyml/model') as typeof import('../lib/tinyml/model');

const { values: args } = parseArgs({
  options: {
    recordings: { type: 'string' },
    out: { type: 'string' },
    seed: { type: 'string', default: String(training.DEFAULT_TRAINING.seed) },
    epochs: { type: 'string', default: String(training.DEFAULT_TRAINING.epochs) },
    units: { type: 'string', default: '3000' },
  },
});

const log = (line: string) => console.log(`train-model: ${line}`);
const seed = Number(args.seed);
const options = { ...training.DEFAULT_TRAINING, seed, epochs: Number(args.epochs), log };

type Calibration = Pick<ModelMetadata, 'embeddingWeight' | 'scoreScale' | 'oneClassScale'>;

interface Job {
  data: LabelledWindows;
  dir: string;
  metadata: Pick<ModelMetadata, 'name' | 'timeSource' | 'trainedOn'>;
  /** Each part's statistic on validation data: held out of training and of evaluation. */
  validation(model: BehaviourModel): PartStatistics;
  /** Genuine decisions rejected at the sources' own thresholds, on the same validation data. */
  validationFrr(model: BehaviourModel): number;
  /** The figures for the card, from data held out of training and calibration. */
  evaluate(model: BehaviourModel): Record<string, ModeReport<string>>;
}

function simulatedJobs(units: number): Job[] {
  return (['source', 'arrival'] as const).map(timeSource => {
    log(`simulating ${units} units × 16 windows, times from ${timeSource} (seed ${seed})`);
    return {
      data: simulatedTraining(seed, units, 16, timeSource),
      dir: path.join(path.resolve(args.out ?? path.join(MODELS_DIR, MODEL_FAMILY)), MODEL_VARIANTS[timeSource]),
      metadata: {
        name: `${MODEL_FAMILY}-${MODEL_VARIANTS[timeSource]}`,
        timeSource,
        trainedOn: `simulated: ${units} units (seed ${seed}), lib/tinyml/simulator.ts`,
      },
      // Validation units and test units share nothing with training or with each other.
      validation: model => partStatistics(model, timeSource, VALIDATION_PROTOCOL),
      validationFrr: model => evaluateSimulated(model, timeSource, VALIDATION_PROTOCOL).frrAtThreshold,
      evaluate: model => ({
        'second generator': evaluateSecondGenerator(model, timeSource),
        'training simulator': evaluateSimulated(model, timeSource),
      }),
    };
  });
}

async function recordedJob(file: string): Promise<Job> {
  const { sources, skipped } = await readRecordings(file);
  const minimum = (EVALUATION_PROTOCOL.enrolWindows + 8) * WINDOW;
  const usable = sources.filter(s => s.values.length >= minimum);
  log(`${file}: ${sources.length} sources, ${usable.length} with ≥ ${minimum} samples; ${skipped} rows skipped`);
  if (usable.length < 6) fail(`need at least 6 sources with ${minimum} samples each to train and hold some out`);
  const order = new SeededRandom(seed).shuffle(usable.slice());
  const heldOut = order.slice(0, Math.max(2, Math.round(order.length / 4)));
  const validation = order.slice(heldOut.length, heldOut.length + Math.max(2, Math.round(order.length / 4)));
  const trainingSources = order.slice(heldOut.length + validation.length);
  const collector = new WindowCollector();
  for (const [label, s] of trainingSources.entries()) collector.add(windowFeatures(s.values, s.times), label);
  const protocol = { ...EVALUATION_PROTOCOL, seed };
  const name = path.basename(file).replace(/\.[^.]+$/, '');
  return {
    data: collector.finish(trainingSources.length),
    dir: path.resolve(args.out ?? path.join('models', name)),
    metadata: {
      name: path.basename(args.out ?? name),
      timeSource: 'recorded',
      trainedOn: `recordings: ${path.basename(file)}, ${trainingSources.length} sources (${validation.length} for calibration, ${heldOut.length} held out for evaluation)`,
    },
    validation: model => recordedPartStatistics(model, validation, protocol),
    validationFrr: model => evaluateRecordings(model, validation, protocol).frrAtThreshold,
    evaluate: model => ({ recordings: evaluateRecordings(model, heldOut, protocol) }),
  };
}

/** The statistic of `parts` for each decision with the embedding weighted by `weight`. */
function combined(parts: { oneClass: number[]; embedding: number[] }, weight: number): number[] {
  return parts.oneClass.map((d, i) => d + weight * parts.embedding[i]);
}

function percentile(values: number[], share: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(share * (sorted.length - 1)))];
}

/**
 * The embedding's weight that gives the lowest validation EER, and the scales that put the
 * validation operating point (TARGET_FRR of genuine decisions below) at THRESHOLD.
 */
function calibrate(stats: PartStatistics): Calibration {
  let best = { weight: 0, eer: Infinity };
  for (const weight of EMBEDDING_WEIGHTS) {
    const eer = errorRates(
      combined(stats.genuine, weight).map(v => -v),
      combined(stats.impostor, weight).map(v => -v),
    ).eer;
    log(`  embedding weight ${weight}: validation EER ${(100 * eer).toFixed(2)} %`);
    if (eer < best.eer - 1e-4) best = { weight, eer };
  }
  const operatingPoint = (values: number[]) =>
    Math.max(1e-6, percentile(values, 1 - TARGET_FRR)) / -Math.log(THRESHOLD);
  return {
    embeddingWeight: best.weight,
    scoreScale: Number(operatingPoint(combined(stats.genuine, best.weight)).toPrecision(6)),
    oneClassScale: Number(operatingPoint(stats.genuine.oneClass).toPrecision(6)),
  };
}

async function run(job: Job): Promise<void> {
  const { data } = job;
  const inputs = training.embeddingInputs(data);
  const stats = training.featureStatistics(inputs);
  const range = training.trainingRange(data);
  const episode = {
    ...options,
    ways: Math.min(options.ways, data.classes),
    shots: Math.min(options.shots, 2 * Math.floor(data.count / data.classes / 2)),
  };
  log(`${data.count} windows of ${data.classes} sources → ${path.relative(process.cwd(), job.dir)}`);
  const network = training.buildNetwork(episode, training.whitening(inputs, stats));
  training.train(network, inputs, stats, episode);
  const metadata: ModelMetadata = {
    ...job.metadata,
    featureVersion: FEATURE_VERSION,
    window: WINDOW,
    featureNames: [...EMBEDDING_FEATURES],
    featureMean: stats.mean,
    featureStd: stats.std,
    trainingLow: range.low,
    trainingHigh: range.high,
    embeddingWeight: 1,
    scoreScale: 1,
    oneClassScale: 1,
    threshold: THRESHOLD,
  };
  await training.saveModel(network, metadata, job.dir);
  const draft = await Model.load(job.dir);
  log('calibrating on validation units');
  Object.assign(metadata, calibrate(job.validation(draft)));
  await training.saveModel(network, metadata, job.dir);
  metadata.operatingMargin = calibrateMargin(await Model.load(job.dir), job.validationFrr, TARGET_FRR);
  log(`  operating margin ${metadata.operatingMargin} (validation genuine rejected ≤ ${100 * TARGET_FRR} %)`);
  const { weightBytes } = await training.saveModel(network, metadata, job.dir);
  network.dispose();
  log(
    `wrote ${weightBytes} bytes of weights; embedding weight ${metadata.embeddingWeight}, score scale ${metadata.scoreScale}, one-class scale ${metadata.oneClassScale}`,
  );
  const model = await Model.load(job.dir);
  writeMetrics(job.dir, model, job.evaluate(model), {
    seed,
    epochs: options.epochs,
    classes: data.classes,
    windows: data.count,
  });
}

async function main(): Promise<void> {
  log(`TensorFlow.js backend: ${await useBackend()}`);
  const jobs = args.recordings ? [await recordedJob(args.recordings)] : simulatedJobs(Number(args.units));
  for (const job of jobs) await run(job);
  if (!args.recordings) updateCard(path.dirname(jobs[0].dir));
}

main().then(
  () => process.exit(0),
  err => fail(err instanceof Error ? err.message : String(err)),
);
