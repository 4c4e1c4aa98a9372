/** Simulated sensors and the shipped model, shared by the TinyML tests. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { shippedModelDir } from '../../lib/tinyml/catalog';
import { BehaviourModel } from '../../lib/tinyml/model';
import { SeededRandom } from '../../tools/tinyml/random';
import {
  drawInstallation,
  drawUnit,
  SimulatedSensor,
  SoftwareImpostor,
  type Installation,
  type InstallationOptions,
  type Recording,
} from '../../tools/tinyml/simulator';

/** The shipped model for sources that stamp their readings, as the fixtures' sensors do. */
export const SHIPPED_MODEL = shippedModelDir('source');

let shipped: Promise<BehaviourModel> | undefined;

export function shippedModel(): Promise<BehaviourModel> {
  shipped ??= BehaviourModel.load(SHIPPED_MODEL);
  return shipped;
}

export interface Plant {
  installation: Installation;
  genuine: SimulatedSensor;
  otherUnit: SimulatedSensor;
  simulator: SoftwareImpostor;
}

/**
 * A sensor at its installation, another unit of its model, and a software simulator posing as it.
 * The tests pin a 100 Hz transmitter unless told otherwise, so a test's timing reads the same on
 * every seed; the model card measures the whole range.
 */
export function plant(seed: number, options: InstallationOptions = { rateHz: 100 }): Plant {
  const rng = new SeededRandom(seed);
  const installation = drawInstallation(rng, options);
  return {
    installation,
    genuine: new SimulatedSensor(installation, drawUnit(rng, installation), seed + 1),
    otherUnit: new SimulatedSensor(installation, drawUnit(rng, installation), seed + 2),
    simulator: new SoftwareImpostor(installation, seed + 3),
  };
}

export function samples(recording: Recording): Array<{ value: number; time: number }> {
  return Array.from(recording.values, (value, i) => ({ value, time: recording.sourceTimes[i] }));
}

export function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-tinyml-'));
}

/** A copy of the shipped model in a temp dir, to break in a test. */
export function modelCopy(): string {
  const dir = tempDir();
  for (const file of ['model.json', 'weights.bin'])
    fs.copyFileSync(path.join(SHIPPED_MODEL, file), path.join(dir, file));
  return dir;
}
