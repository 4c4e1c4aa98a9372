#!/usr/bin/env node
/**
 * `npm run eval-model`: re-measures the shipped models (or `--model DIR`, one trained on the
 * simulator) on the evaluation protocol and checks every figure against their metrics.json,
 * from which the model card's table is generated. Exits 1 when a figure differs by more than
 * 0.5 percentage points.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { useBackend } from '../lib/tinyml/backend';
import { MODELS_DIR, shippedModelDir } from '../lib/tinyml/catalog';
import { EVALUATION_PROTOCOL, evaluateSimulated, type ModeReport, type ProtocolOptions } from '../lib/tinyml/evaluate';
import { BehaviourModel } from '../lib/tinyml/model';

const TOLERANCE = 0.005;
const CARD_START = '<!-- metrics:start -->';
const CARD_END = '<!-- metrics:end -->';

interface MetricsFile {
  model: string;
  timeSource: 'source' | 'arrival' | 'recorded';
  weightBytes: number;
  threshold: number;
  protocol: ProtocolOptions;
  report: ModeReport<string>;
}

const percent = (value: number) => `${(100 * value).toFixed(2)} %`;

/** The model card's table: one row per model and impostor kind. */
export function metricsTable(reports: Record<string, ModeReport<string>>): string {
  const lines = [
    '| model | impostor | decisions | EER (1 window) | EER | FAR at FRR=1 % | FRR at FAR=1 % | FAR at threshold | caught as replay |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const [model, report] of Object.entries(reports)) {
    for (const [kind, k] of Object.entries(report.impostors)) {
      lines.push(
        `| ${model} | ${kind} | ${k.decisions} | ${percent(k.windowEer)} | ${percent(k.eer)} | ${percent(k.farAtFrr1)} | ${percent(k.frrAtFar1)} | ${percent(k.farAtThreshold)} | ${percent(k.replayFlagged)} |`,
      );
    }
    lines.push(
      `| ${model} | (genuine) | ${report.genuineDecisions} | | | | | FRR ${percent(report.frrAtThreshold)} | ${percent(report.genuineReplayFlagged)} |`,
    );
  }
  return lines.join('\n');
}

export function writeMetrics(
  dir: string,
  model: BehaviourModel,
  report: ModeReport<string>,
  training: Record<string, unknown>,
): void {
  const weightBytes = model.weights().reduce((sum, l) => sum + 4 * (l.kernel.length + l.bias.length), 0);
  const metrics: MetricsFile & { training: object } = {
    model: model.id,
    timeSource: model.metadata.timeSource,
    weightBytes,
    threshold: model.metadata.threshold,
    training,
    protocol: EVALUATION_PROTOCOL,
    report,
  };
  fs.writeFileSync(
    path.join(dir, 'metrics.json'),
    `${JSON.stringify(metrics, (_k, v) => (typeof v === 'number' ? Math.round(v * 1e6) / 1e6 : v), 2)}\n`,
  );
  console.log(metricsTable({ [model.metadata.name]: report }));
}

/** Regenerates the table in `<familyDir>/README.md` from the metrics.json of its models. */
export function updateCard(familyDir: string): void {
  const reports: Record<string, ModeReport<string>> = {};
  for (const entry of fs.readdirSync(familyDir).sort().reverse()) {
    const file = path.join(familyDir, entry, 'metrics.json');
    if (fs.existsSync(file)) reports[entry] = (JSON.parse(fs.readFileSync(file, 'utf8')) as MetricsFile).report;
  }
  const card = path.join(familyDir, 'README.md');
  const text = fs.existsSync(card) ? fs.readFileSync(card, 'utf8') : '';
  const start = text.indexOf(CARD_START);
  const end = text.indexOf(CARD_END);
  if (start >= 0 && end > start)
    fs.writeFileSync(card, `${text.slice(0, start + CARD_START.length)}\n${metricsTable(reports)}\n${text.slice(end)}`);
}

/** Every number of `actual` that differs from `expected` by more than TOLERANCE, by path. */
function differences(expected: unknown, actual: unknown, at = ''): string[] {
  if (typeof expected === 'number' && typeof actual === 'number') {
    return Math.abs(expected - actual) > TOLERANCE ? [`${at}: card ${expected}, measured ${actual.toFixed(6)}`] : [];
  }
  if (expected && typeof expected === 'object' && actual && typeof actual === 'object') {
    return Object.keys(expected).flatMap(key =>
      differences(
        (expected as Record<string, unknown>)[key],
        (actual as Record<string, unknown>)[key],
        at ? `${at}.${key}` : key,
      ),
    );
  }
  return [];
}

async function check(dir: string): Promise<string[]> {
  const expected = JSON.parse(fs.readFileSync(path.join(dir, 'metrics.json'), 'utf8')) as MetricsFile;
  if (expected.timeSource === 'recorded')
    throw new Error(`${dir} was evaluated on recordings: re-run train-model with them to re-measure`);
  const model = await BehaviourModel.load(dir);
  console.log(`\neval-model: ${model.id}, ${expected.protocol.units} unseen units, times from ${expected.timeSource}`);
  if (model.id !== expected.model) console.log(`eval-model: note: metrics.json was measured on ${expected.model}`);
  const measured = evaluateSimulated(model, expected.timeSource, expected.protocol);
  model.dispose();
  console.log(metricsTable({ [path.basename(dir)]: measured }));
  return differences(expected.report, measured).map(d => `${path.basename(dir)}: ${d}`);
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({ options: { model: { type: 'string' } } });
  const dirs = args.model ? [path.resolve(args.model)] : [shippedModelDir('source'), shippedModelDir('arrival')];
  console.log(
    `eval-model: TensorFlow.js backend ${await useBackend()}; protocol ${JSON.stringify(EVALUATION_PROTOCOL)}`,
  );
  const differing: string[] = [];
  for (const dir of dirs) differing.push(...(await check(dir)));
  if (differing.length) {
    console.log(`\neval-model: ${differing.length} figures differ from metrics.json:\n  ${differing.join('\n  ')}`);
    process.exit(1);
  }
  console.log(
    `\neval-model: every figure of ${dirs.map(d => path.relative(MODELS_DIR, d)).join(' and ')} reproduced (within 0.5 percentage points)`,
  );
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    err => {
      console.error(`eval-model: ${err instanceof Error ? err.message : err}`);
      process.exit(1);
    },
  );
}
