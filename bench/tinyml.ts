/**
 * The behaviour model per window, single (one window per call, as the node scores) and batched
 * (64 per call: what batching would save, nothing, so the node does not batch), as the gateway
 * runs it (lib/tinyml/model: plain typed-array loops, no framework) beside the same network in
 * TensorFlow.js (its cpu backend, a development dependency here: what the runtime used to load).
 * Feature extraction is listed on its own: it runs on every window decided. Then the whole check
 * per reading (BehaviourMonitor.observe: window and replay memory at every reading; features,
 * network and decision at every DECISION_EVERY-th), p50 and p99, and the
 * resident memory a deployed m2m-tinyml-verify adds to an idle Node-RED.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { prepareUserDir, startNodeRed } from '../tools/node-red-home';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '../tools/tinyml/backend';
import { shippedModelDir } from '../lib/tinyml/catalog';
import { FEATURE_COUNT, FeatureExtractor, WINDOW } from '../lib/tinyml/features';
import { BehaviourMonitor } from '../lib/tinyml/behaviour-monitor';
import { BehaviourModel } from '../lib/tinyml/model';
import { ProfileStore } from '../lib/tinyml/profile-store';
import { SeededRandom } from '../tools/tinyml/random';
import { drawInstallation, drawUnit, SimulatedSensor } from '../tools/tinyml/simulator';
import { percentile, table } from './stats';

const BATCH = 64;

/** Microseconds per call of `op`, p50 over `calls` calls after a warm-up. */
function p50(op: () => void, calls: number): number {
  for (let i = 0; i < 200; i++) op();
  const times: number[] = [];
  for (let i = 0; i < calls; i++) {
    const start = process.hrtime.bigint();
    op();
    times.push(Number(process.hrtime.bigint() - start) / 1000);
  }
  return percentile(
    times.sort((a, b) => a - b),
    50,
  );
}

/** The same network as TF.js tensors (weights with the standardisation folded in, as the runtime has them). */
function tfjsForward(model: BehaviourModel): (x: Float32Array, rows: number) => void {
  const layers = model.weights().map(layer => ({
    kernel: tf.tensor2d(layer.kernel, [layer.inputs, layer.outputs]),
    bias: tf.tensor1d(layer.bias),
    relu: layer.relu,
  }));
  const inputs = layers[0].kernel.shape[0];
  return (x, rows) => {
    const out = tf.tidy(() => {
      let y: tf.Tensor2D = tf.tensor2d(x.subarray(0, rows * inputs), [rows, inputs]);
      for (const layer of layers)
        y = tf.fused.matMul({
          a: y,
          b: layer.kernel,
          bias: layer.bias,
          activation: layer.relu ? 'relu' : 'linear',
        }) as tf.Tensor2D;
      return y;
    });
    out.dataSync();
    out.dispose();
  };
}

async function latency(): Promise<void> {
  const features = Float32Array.from({ length: BATCH * FEATURE_COUNT }, (_, i) => Math.sin(i));
  const model = await BehaviourModel.load(shippedModelDir('source'));
  const single = p50(() => model.embed(features, 1), 5000);
  const batched = p50(() => model.embed(features, BATCH), 2000) / BATCH;
  const backend = await useBackend();
  const reference = tfjsForward(model);
  const tfSingle = p50(() => reference(features, 1), 3000);
  const tfBatched = p50(() => reference(features, BATCH), 1000) / BATCH;
  const rows: Array<Record<string, string | number>> = [
    {
      engine: 'runtime (plain typed-array loops)',
      'single µs (p50)': single,
      'batched µs/window': batched,
      'single vs TF.js': single / tfSingle,
    },
    { engine: `TF.js ${backend}`, 'single µs (p50)': tfSingle, 'batched µs/window': tfBatched, 'single vs TF.js': 1 },
  ];
  const extractor = new FeatureExtractor();
  const values = Float64Array.from({ length: WINDOW }, (_, i) => 40 + 0.0244 * Math.round(2 * Math.sin(i * 78.233)));
  const times = Float64Array.from({ length: WINDOW }, (_, i) => 1.7e12 + i * 10.0003);
  const out = new Float32Array(FEATURE_COUNT);
  rows.push({
    engine: 'feature extraction',
    'single µs (p50)': p50(() => extractor.extract(values, times, out), 5000),
    'batched µs/window': '-',
    'single vs TF.js': '-',
  });
  table(rows);
}

/** Each reading of an enrolled 100 Hz source through the monitor, timed one by one. */
async function perReading(): Promise<void> {
  const model = await BehaviourModel.load(shippedModelDir('source'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-monitor-'));
  try {
    const store = new ProfileStore(path.join(dir, 'profiles.json'), model.id, model.embeddingSize);
    const monitor = new BehaviourMonitor(model, store, {
      enrolWindows: 20,
      maxSources: 100,
      replayMemory: 32768,
      autoEnrol: false,
    });
    const rng = new SeededRandom(4242);
    const installation = drawInstallation(rng, { rateHz: 100 });
    const sensor = new SimulatedSensor(installation, drawUnit(rng, installation), 4243);
    const readings = 20_000;
    const recording = sensor.record(1e6, 21 * WINDOW + readings);
    monitor.startEnrolment('press-1');
    for (let i = 0; i < 21 * WINDOW; i++) monitor.observe('press-1', recording.values[i], recording.sourceTimes[i]);
    const times: number[] = [];
    let scored = 0;
    for (let i = 21 * WINDOW; i < recording.values.length; i++) {
      const start = process.hrtime.bigint();
      const verdict = monitor.observe('press-1', recording.values[i], recording.sourceTimes[i]);
      times.push(Number(process.hrtime.bigint() - start) / 1000);
      if (verdict.status === 'scored') scored++;
    }
    if (scored < readings * 0.9) throw new Error(`only ${scored} of ${readings} readings were scored`);
    times.sort((a, b) => a - b);
    table([
      {
        'whole check per reading (BehaviourMonitor.observe)': `${readings} readings, ${scored} scored`,
        'p50 µs': percentile(times, 50),
        'p99 µs': percentile(times, 99),
        'max µs': times[times.length - 1],
      },
    ]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** RSS of a Node-RED child once it has settled with `flows` deployed. */
async function nodeRedRss(flows: object[]): Promise<number> {
  const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-rss-'));
  prepareUserDir(userDir, () => JSON.stringify(flows));
  const child = startNodeRed(userDir, 18000 + Math.floor(Math.random() * 1000), 'pipe');
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('Node-RED did not start within 60 s')), 60_000);
      child.stdout!.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('Started flows')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on('exit', code => reject(new Error(`Node-RED exited with ${code}`)));
    });
    await new Promise(resolve => setTimeout(resolve, 5000)); // model load, then idle
    const status = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
  } finally {
    child.kill();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
}

async function memory(): Promise<void> {
  if (!fs.existsSync('/proc/self/status')) {
    console.log('memory: skipped (needs /proc)');
    return;
  }
  const idle = await nodeRedRss([{ id: 'tab', type: 'tab', label: 'idle' }]);
  const loaded = await nodeRedRss([
    { id: 'tab', type: 'tab', label: 'tinyml' },
    {
      id: 'verify',
      z: 'tab',
      type: 'm2m-tinyml-verify',
      mode: 'enrol',
      keyProperty: 'topic',
      valueProperty: 'payload',
      timeProperty: '',
      enrolWindows: 20,
      unverified: 'hold',
      threshold: '',
      maxSources: 1000,
      wires: [[], []],
    },
  ]);
  table([
    { 'Node-RED': 'idle (package installed)', 'RSS MB': idle },
    { 'Node-RED': 'with m2m-tinyml-verify deployed', 'RSS MB': loaded },
    { 'Node-RED': 'difference (target ≤ 60)', 'RSS MB': loaded - idle },
  ]);
}

export async function run(): Promise<void> {
  await latency();
  await perReading();
  await memory();
}
