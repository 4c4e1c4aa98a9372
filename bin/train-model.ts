#!/usr/bin/env node
/**
 * `npm run train-model`: trains the behaviour model and writes it with its measured metrics.
 *
 *   npm run train-model                                  simulator data → models/sensor-behaviour-v1/
 *                                                        (stamped/ and arrival/, card table updated)
 *   npm run train-model -- --recordings plant.csv [--out models/plant]
 *                                                        your recordings (CSV or JSON lines of
 *                                                        source, value, time in ms); without
 *                                                        --out: ./models/<file name>
 * Options: --seed N, --epochs N, --units N (simulated units). Same data + seed → same model.
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { useBackend } from '../lib/tinyml/backend';
import { MODEL_FAMILY, MODEL_VARIANTS, MODELS_DIR } from '../lib/tinyml/catalog';
import {
  readRecordings,
  simulatedTraining,
  windowFeatures,
  WindowCollector,
  type LabelledWindows,
} from '../lib/tinyml/dataset';
import { EVALUATION_PROTOCOL, evaluateRecordings, evaluateSimulated, type ModeReport } from '../lib/tinyml/evaluate';
import { FEATURE_NAMES, FEATURE_VERSION, WINDOW } from '../lib/tinyml/features';
import { BehaviourModel, saveModel, type ModelMetadata } from '../lib/tinyml/model';
import { SeededRandom } from '../lib/tinyml/random';
import { CALIBRATED_THRESHOLD } from '../lib/tinyml/profile';
import { buildNetwork, DEFAULT_TRAINING, featureStatistics, train, whitening } from '../lib/tinyml/train';
import { updateCard, writeMetrics } from './eval-model';

const { values: args } = parseArgs({
  options: {
    recordings: { type: 'string' },
    out: { type: 'string' },
    seed: { type: 'string', default: String(DEFAULT_TRAINING.seed) },
    epochs: { type: 'string', default: String(DEFAULT_TRAINING.epochs) },
    units: { type: 'string', default: '3000' },
  },
});

const log = (line: string) => console.log(`train-model: ${line}`);
const seed = Number(args.seed);
const options = { ...DEFAULT_TRAINING, seed, epochs: Number(args.epochs), log };

interface Job {
  data: LabelledWindows;
  dir: string;
  metadata: Omit<ModelMetadata, 'featureMean' | 'featureStd' | 'threshold' | 'distanceScale'>;
  /** The threshold, from data held out of training. */
  threshold(model: BehaviourModel): number;
  /** The figures for the card, from data held out of training and threshold choice. */
  evaluate(model: BehaviourModel): ModeReport<string>;
}

const common = { featureVersion: FEATURE_VERSION, window: WINDOW, featureNames: [...FEATURE_NAMES] };

function simulatedJobs(units: number): Job[] {
  return (['source', 'arrival'] as const).map(timeSource => {
    log(`simulating ${units} units × 16 windows, times from ${timeSource} (seed ${seed})`);
    return {
      data: simulatedTraining(seed, units, 16, timeSource),
      dir: path.join(path.resolve(args.out ?? path.join(MODELS_DIR, MODEL_FAMILY)), MODEL_VARIANTS[timeSource]),
      metadata: {
        ...common,
        name: `${MODEL_FAMILY}-${MODEL_VARIANTS[timeSource]}`,
        timeSource,
        trainedOn: `simulated: ${units} units (seed ${seed}), lib/tinyml/simulator.ts`,
      },
      // Validation units and test units share nothing with training or with each other.
      threshold: model =>
        evaluateSimulated(model, timeSource, { ...EVALUATION_PROTOCOL, seed: EVALUATION_PROTOCOL.seed + 1, units: 100 })
          .impostors.same_model.eerThreshold,
      evaluate: model => evaluateSimulated(model, timeSource),
    };
  });
}

async function recordedJob(file: string): Promise<Job> {
  const { sources, skipped } = await readRecordings(file);
  const minimum = (EVALUATION_PROTOCOL.enrolWindows + 8) * WINDOW;
  const usable = sources.filter(s => s.values.length >= minimum);
  log(`${file}: ${sources.length} sources, ${usable.length} with ≥ ${minimum} samples; ${skipped} rows skipped`);
  if (usable.length < 4)
    throw new Error(`need at least 4 sources with ${minimum} samples each to train and hold some out`);
  const order = new SeededRandom(seed).shuffle(usable.slice());
  const heldOut = order.slice(0, Math.max(2, Math.round(order.length / 4)));
  const training = order.slice(heldOut.length);
  const collector = new WindowCollector();
  for (const [label, s] of training.entries()) collector.add(windowFeatures(s.values, s.times), label);
  const protocol = { ...EVALUATION_PROTOCOL, seed };
  const name = path.basename(file).replace(/\.[^.]+$/, '');
  return {
    data: collector.finish(training.length),
    dir: path.resolve(args.out ?? path.join('models', name)),
    metadata: {
      ...common,
      name: path.basename(args.out ?? name),
      timeSource: 'recorded',
      trainedOn: `recordings: ${path.basename(file)}, ${training.length} sources (${heldOut.length} held out for evaluation)`,
    },
    threshold: model => evaluateRecordings(model, training, protocol).impostors.other_source.eerThreshold,
    evaluate: model => evaluateRecordings(model, heldOut, protocol),
  };
}

async function run(job: Job): Promise<void> {
  const { data } = job;
  const stats = featureStatistics(data);
  const episode = {
    ...options,
    ways: Math.min(options.ways, data.classes),
    shots: Math.min(options.shots, 2 * Math.floor(data.count / data.classes / 2)),
  };
  log(`${data.count} windows of ${data.classes} sources → ${path.relative(process.cwd(), job.dir)}`);
  const network = buildNetwork(episode, whitening(data, stats));
  train(network, data, stats, episode);
  // Scored with distanceScale 1 first, the validation equal-error point sits at exp(cos - 1);
  // the scale that maps it to CALIBRATED_THRESHOLD makes that the threshold.
  const metadata: ModelMetadata = {
    ...job.metadata,
    featureMean: stats.mean,
    featureStd: stats.std,
    threshold: CALIBRATED_THRESHOLD,
    distanceScale: 1,
  };
  await saveModel(network, metadata, job.dir);
  const draft = await BehaviourModel.load(job.dir);
  const equalErrorDistance = -Math.log(job.threshold(draft));
  draft.dispose();
  if (!Number.isFinite(equalErrorDistance))
    throw new Error('validation found no threshold between genuine and impostor scores: more data or epochs?');
  // An undertrained model can put the equal-error point at cos = 1; the floor keeps scores defined.
  metadata.distanceScale = Number(Math.max(1e-6, equalErrorDistance / -Math.log(CALIBRATED_THRESHOLD)).toPrecision(6));
  const { weightBytes } = await saveModel(network, metadata, job.dir);
  network.dispose();
  log(
    `wrote ${weightBytes} bytes of weights; distance scale ${metadata.distanceScale} (threshold ${metadata.threshold})`,
  );
  const model = await BehaviourModel.load(job.dir);
  writeMetrics(job.dir, model, job.evaluate(model), {
    seed,
    epochs: options.epochs,
    classes: data.classes,
    windows: data.count,
  });
  model.dispose();
}

async function main(): Promise<void> {
  log(`TensorFlow.js backend: ${await useBackend()}`);
  const jobs = args.recordings ? [await recordedJob(args.recordings)] : simulatedJobs(Number(args.units));
  for (const job of jobs) await run(job);
  if (!args.recordings) updateCard(path.dirname(jobs[0].dir));
}

main().then(
  () => process.exit(0),
  err => {
    console.error(`train-model: ${err instanceof Error ? err.message : err}`);
    process.exit(1);
  },
);
