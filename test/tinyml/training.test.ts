import * as assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { readRecordings, simulatedTraining } from '../../tools/tinyml/dataset';
import { WINDOW } from '../../lib/tinyml/features';
import { BehaviourModel } from '../../lib/tinyml/model';
import {
  buildNetwork,
  DEFAULT_TRAINING,
  embeddingInputs,
  featureStatistics,
  train,
  whitening,
} from '../../tools/tinyml/train';
import { plant, shippedModel, tempDir } from './fixtures';

const trainModel = path.join(__dirname, '..', '..', 'tools', 'train-model.js');

describe('tinyml training', function () {
  this.timeout(120_000);
  let dir: string;
  before(() => shippedModel()); // the backend, initialised once
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('is reproducible: same data and seed, same weights', () => {
    const data = embeddingInputs(simulatedTraining(3, 6, 8, 'source'));
    const options = { ...DEFAULT_TRAINING, epochs: 2, ways: 4, shots: 4 };
    const weights = () => {
      const stats = featureStatistics(data);
      const network = buildNetwork(options, whitening(data, stats));
      train(network, data, stats, options);
      const values = network.getWeights().map(w => Array.from(w.dataSync()));
      network.dispose();
      return values;
    };
    assert.deepEqual(weights(), weights());
  });

  it('reads CSV and JSON-lines recordings, skipping and counting bad rows', async () => {
    const csv = path.join(dir, 'r.csv');
    fs.writeFileSync(csv, 'time,source,value\n1,a,1.5\n2,a,1.6\n2,a,1.7\n3,a,warm\n1,b,2\n"4","a","1.8"\n');
    const fromCsv = await readRecordings(csv);
    assert.deepEqual(
      fromCsv.sources.map(s => [s.source, Array.from(s.values), Array.from(s.times)]),
      [
        ['a', [1.5, 1.6, 1.8], [1, 2, 4]],
        ['b', [2], [1]],
      ],
    );
    assert.equal(fromCsv.skipped, 2);
    const jsonl = path.join(dir, 'r.jsonl');
    fs.writeFileSync(
      jsonl,
      '{"source":"a","value":1,"time":10}\n{"source":"a","value":2}\nnot json\n{"source":"a","value":3,"time":20}\n',
    );
    const fromJsonl = await readRecordings(jsonl);
    assert.deepEqual(Array.from(fromJsonl.sources[0].values), [1, 3]);
    assert.equal(fromJsonl.skipped, 2);
  });

  it("trains on a user's recordings with `train-model --recordings` and writes a loadable model with metrics", async () => {
    const csv = path.join(dir, 'plant.csv');
    const rows = ['source,value,time'];
    for (let s = 0; s < 8; s++) {
      const recording = plant(900 + s).genuine.record(1e6, 30 * WINDOW);
      for (const [i, v] of recording.values.entries()) rows.push(`sensor-${s},${v},${recording.sourceTimes[i]}`);
    }
    fs.writeFileSync(csv, rows.join('\n'));
    const out = path.join(dir, 'plant-model');
    const { stdout } = await promisify(execFile)(process.execPath, [
      trainModel,
      '--recordings',
      csv,
      '--out',
      out,
      '--epochs',
      '2',
    ]);
    assert.match(stdout, /8 sources, 8 with/);
    const metrics = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    assert.equal(metrics.timeSource, 'recorded');
    assert.ok(metrics.reports.recordings.impostors.other_source.decisions > 0);
    const model = await BehaviourModel.load(out);
    assert.equal(model.metadata.name, 'plant-model');
    assert.match(model.metadata.trainedOn, /plant\.csv, 4 sources \(2 for calibration, 2 held out/);
  });

  it('refuses recordings with too few sources, saying what it needs', async () => {
    const csv = path.join(dir, 'tiny.csv');
    fs.writeFileSync(csv, 'source,value,time\na,1,1\n');
    await assert.rejects(
      promisify(execFile)(process.execPath, [trainModel, '--recordings', csv, '--out', path.join(dir, 'x')]),
      /need at least 6 sources/,
    );
  });
});
