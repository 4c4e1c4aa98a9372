/**
 * The behaviour model per window: single (one window per call, a quiet source) and batched (64
 * windows per call, what the node's micro-batching does under load) on the WASM backend, the
 * pure-JS cpu backend, and the same network as plain typed-array loops (no framework at all:
 * the floor of per-call overhead, though not of arithmetic, where WASM SIMD wins). Feature extraction is listed on its own: it runs on every window whatever the
 * backend. Then the resident memory a deployed m2m-tinyml-verify adds to an idle Node-RED.
 * Targets: single ≤ 100 µs p50, batched ≤ 5 µs per window, ≤ 60 MB RSS over idle.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { prepareUserDir, startNodeRed } from '../bin/node-red-home';
import { switchBackend, type BackendName } from '../lib/tinyml/backend';
import { shippedModelDir } from '../lib/tinyml/catalog';
import { FEATURE_COUNT, FeatureExtractor, WINDOW } from '../lib/tinyml/features';
import { BehaviourModel } from '../lib/tinyml/model';
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

/** The network in plain loops over the model's own (standardisation-folded) weights. */
function typedArrayForward(model: BehaviourModel): (x: Float32Array, rows: number) => Float32Array {
  const layers = model.weights();
  const widest = Math.max(...layers.map(l => l.outputs));
  const buffers = [new Float32Array(BATCH * widest), new Float32Array(BATCH * widest)];
  return (x, rows) => {
    let input = x;
    layers.forEach((layer, index) => {
      const output = buffers[index % 2];
      for (let r = 0; r < rows; r++) {
        for (let o = 0; o < layer.outputs; o++) {
          let sum = layer.bias[o];
          for (let i = 0; i < layer.inputs; i++)
            sum += input[r * layer.inputs + i] * layer.kernel[i * layer.outputs + o];
          output[r * layer.outputs + o] = layer.relu && sum < 0 ? 0 : sum;
        }
      }
      input = output;
    });
    return input;
  };
}

async function latency(): Promise<void> {
  const features = Float32Array.from({ length: BATCH * FEATURE_COUNT }, (_, i) => Math.sin(i));
  const rows: Array<Record<string, string | number>> = [];
  let wasmSingle = NaN;
  for (const backend of ['wasm', 'cpu'] as BackendName[]) {
    const got = await switchBackend(backend);
    const model = await BehaviourModel.load(shippedModelDir('source'));
    const single = p50(() => model.embed(features, 1), 3000);
    const batched = p50(() => model.embed(features, BATCH), 1000) / BATCH;
    if (got === 'wasm') wasmSingle = single;
    rows.push({
      engine: `tfjs ${got}`,
      'single µs (p50)': single,
      'batched µs/window': batched,
      'single vs wasm': single / wasmSingle,
    });
    if (backend === 'wasm') {
      const forward = typedArrayForward(model);
      const floorSingle = p50(() => forward(features, 1), 5000);
      const floorBatched = p50(() => forward(features, BATCH), 2000) / BATCH;
      rows.push({
        engine: 'plain typed-array loops',
        'single µs (p50)': floorSingle,
        'batched µs/window': floorBatched,
        'single vs wasm': floorSingle / wasmSingle,
      });
    }
    model.dispose();
  }
  const extractor = new FeatureExtractor();
  const values = Float64Array.from({ length: WINDOW }, (_, i) => 40 + 0.0244 * Math.round(2 * Math.sin(i * 78.233)));
  const times = Float64Array.from({ length: WINDOW }, (_, i) => 1.7e12 + i * 10.0003);
  const out = new Float32Array(FEATURE_COUNT);
  rows.push({
    engine: 'feature extraction',
    'single µs (p50)': p50(() => extractor.extract(values, times, out), 5000),
    'batched µs/window': '-',
    'single vs wasm': '-',
  });
  table(rows);
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
  await memory();
}
