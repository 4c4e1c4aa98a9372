#!/usr/bin/env node
/**
 * `npm run eval-model`: re-measures the shipped models (or `--model DIR`, one trained on the
 * simulator) on the evaluation protocol, on the second generator's units and on the training
 * simulator's held-out units, and checks every figure against their metrics.json, from which
 * the model card's tables are generated. Exits 1 when a figure differs by more than 0.5
 * percentage points. `--calibrate` sets the shipped models' operating margin again on their
 * validation units (as training does), re-measures, and writes metrics.json and the card.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { useBackend } from './tinyml/backend';
import { MODELS_DIR, shippedModelDir } from '../lib/tinyml/catalog';
import {
  calibrateMargin,
  EVALUATION_PROTOCOL,
  evaluateSecondGenerator,
  evaluateSimulated,
  type GroupReport,
  type ModeReport,
  type ProtocolOptions,
  TARGET_FRR,
  VALIDATION_PROTOCOL,
} from './tinyml/evaluate';
import { BehaviourModel } from '../lib/tinyml/model';

const TOLERANCE = 0.005;
const CARD_BLOCKS = {
  metrics: ['<!-- metrics:start -->', '<!-- metrics:end -->'],
  goals: ['<!-- goals:start -->', '<!-- goals:end -->'],
  groups: ['<!-- groups:start -->', '<!-- groups:end -->'],
} as const;

/** The data the card reports on, headline first. */
export const EVALUATIONS = {
  'second generator': evaluateSecondGenerator,
  'training simulator': evaluateSimulated,
} as const;

interface MetricsFile {
  model: string;
  timeSource: 'source' | 'arrival' | 'recorded';
  weightBytes: number;
  threshold: number;
  protocol: ProtocolOptions;
  reports: Record<string, ModeReport<string>>;
}

const percent = (value: number) => `${(100 * value).toFixed(1)} %`;

/**
 * The model card's table for one kind of data: a row per model and impostor kind, with what the
 * one-class part and the embedding each achieve alone beside the combined score.
 */
export function metricsTable(reports: Record<string, ModeReport<string>>): string {
  const lines = [
    '| model | impostor | decisions | EER | one-class alone | embedding alone | EER (1 window) | FAR at FRR=1 % | accepted at threshold | caught as replay |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const [model, report] of Object.entries(reports)) {
    for (const [kind, k] of Object.entries(report.impostors)) {
      lines.push(
        `| ${model} | ${kind} | ${k.decisions} | ${percent(k.eer)} | ${percent(k.oneClassEer)} | ${percent(k.embeddingEer)} | ${percent(k.windowEer)} | ${percent(k.farAtFrr1)} | ${percent(k.farAtThreshold)} | ${percent(k.replayFlagged)} |`,
      );
    }
    lines.push(
      `| ${model} | (genuine) | ${report.genuineDecisions} | | | | | | rejected: ${percent(report.frrAtThreshold)} | ${percent(report.genuineReplayFlagged)} |`,
    );
    if (report.outOfRangeSources)
      lines.push(
        `| ${model} | (outside training range) | ${report.outOfRangeSources} of ${report.sources} sources | | | | | | | |`,
      );
    lines.push(
      `| ${model} | (finished enrolling) | ${percent(report.finishedEnrolling)} of ${report.sources} sources | | | | | | | |`,
    );
    const { warned, passing, both } = report.lookAlike;
    lines.push(
      `| ${model} | (look-alike warning) | ${warned} of ${report.sources} sources warned | | | | | | true: ${percent(both / Math.max(1, warned))}; caught ${percent(both / Math.max(1, passing))} of ${passing} look-alikes | |`,
      `| ${model} | (weak enrolment) | ${report.weakEnrolments} of ${report.sources} sources | | | | | | | |`,
    );
  }
  return lines.join('\n');
}

/**
 * Issue #24's goals, on the generator training never saw, per decision at each source's own
 * operating point, beside what was measured. Limits per model (stamped, arrival); a negative
 * limit is a floor.
 */
const GOALS: Array<{ goal: string; limits: Record<string, number>; measure: (r: ModeReport<string>) => number }> = [
  { goal: 'genuine rejected at the operating point', limits: { stamped: 0.05, arrival: 0.05 }, measure: r => r.frrAtThreshold },
  { goal: 'same-model EER', limits: { stamped: 0.05, arrival: 0.1 }, measure: r => r.impostors.same_model.eer },
  {
    goal: 'same-model accepted at the operating point',
    limits: { stamped: 0.1, arrival: 0.2 },
    measure: r => r.impostors.same_model.farAtThreshold,
  },
  {
    goal: 'careful simulator accepted',
    limits: { stamped: 0.01, arrival: 0.05 },
    measure: r => r.impostors.simulator.farAtThreshold,
  },
  {
    goal: 're-stamped replay accepted',
    limits: { stamped: 0.01, arrival: 0.05 },
    measure: r => r.impostors.replay.farAtThreshold,
  },
  {
    goal: 'sources that finish enrolling',
    limits: { stamped: -0.99, arrival: -0.99 },
    measure: r => r.finishedEnrolling,
  },
];

function goalsTable(files: Record<string, MetricsFile>): string {
  const lines = ['| goal (second generator, per decision) | model | goal | measured | |', '|---|---|---|---|---|'];
  for (const { goal, limits, measure } of GOALS) {
    for (const [variant, limit] of Object.entries(limits)) {
      const report = files[variant]?.reports['second generator'];
      if (!report) continue;
      const value = measure(report);
      const met = limit < 0 ? value >= -limit : value <= limit;
      lines.push(
        `| ${goal} | ${variant} | ${limit < 0 ? '≥' : '≤'} ${percent(Math.abs(limit))} | ${percent(value)} | ${met ? 'met' : 'not met'} |`,
      );
    }
  }
  return lines.join('\n');
}

/**
 * Each data set's figures at the operating point per group of sources (sensor kind; slow,
 * fine-grained sensors), every cell one figure per model ("stamped / arrival").
 */
function groupsTable(files: Record<string, MetricsFile>): string {
  const variants = Object.keys(files);
  const figure = (report: ModeReport<string> | undefined, name: string, pick: (g: GroupReport<string>) => number) => {
    const group = report?.groups?.[name];
    return group ? percent(pick(group)) : '–';
  };
  const columns: Array<[string, (g: GroupReport<string>) => number]> = [
    ['genuine rejected', g => g.genuineRejected],
    ['same-model EER', g => g.impostors.same_model.eer],
    ['same-model accepted', g => g.impostors.same_model.accepted],
    ['simulator accepted', g => g.impostors.simulator.accepted],
    ['replay accepted', g => g.impostors.replay.accepted],
  ];
  return Object.keys(EVALUATIONS)
    .map(data => {
      const reports = variants.map(variant => files[variant].reports[data]);
      const names = [...new Set(reports.flatMap(report => Object.keys(report?.groups ?? {})))];
      if (!names.length) return '';
      const lines = [
        `**${data}** (${variants.join(' / ')})`,
        '',
        `| sources | count | ${columns.map(([title]) => title).join(' | ')} |`,
        `|---|---|${columns.map(() => '---|').join('')}`,
      ];
      for (const name of names) {
        const sources = reports.find(report => report?.groups?.[name])?.groups[name].sources;
        const cells = columns.map(([, pick]) => reports.map(report => figure(report, name, pick)).join(' / '));
        lines.push(`| ${name} | ${sources} | ${cells.join(' | ')} |`);
      }
      return lines.join('\n');
    })
    .filter(Boolean)
    .join('\n\n');
}

/** All the card's tables: one per kind of data, each with a row group per model. */
function cardTables(files: Record<string, MetricsFile>): string {
  return Object.keys(EVALUATIONS)
    .map(data => {
      const reports = Object.fromEntries(
        Object.entries(files)
          .filter(([, file]) => file.reports[data])
          .map(([variant, file]) => [variant, file.reports[data]]),
      );
      return `**${data}**\n\n${metricsTable(reports)}`;
    })
    .join('\n\n');
}

export function writeMetrics(
  dir: string,
  model: BehaviourModel,
  reports: Record<string, ModeReport<string>>,
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
    reports,
  };
  fs.writeFileSync(
    path.join(dir, 'metrics.json'),
    `${JSON.stringify(metrics, (_k, v) => (typeof v === 'number' ? Math.round(v * 1e6) / 1e6 : v), 2)}\n`,
  );
  for (const [data, report] of Object.entries(reports))
    console.log(`${data}\n${metricsTable({ [model.metadata.name]: report })}`);
}

function readMetrics(file: string): MetricsFile {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as MetricsFile;
}

/** What each generated block of the card should hold. */
function cardBlocks(familyDir: string): Record<keyof typeof CARD_BLOCKS, string> {
  const files = familyMetrics(familyDir);
  return { metrics: cardTables(files), goals: goalsTable(files), groups: groupsTable(files) };
}

/** Regenerates the tables in `<familyDir>/README.md` from the metrics.json of its models. */
export function updateCard(familyDir: string): void {
  const card = path.join(familyDir, 'README.md');
  let text = fs.existsSync(card) ? fs.readFileSync(card, 'utf8') : '';
  for (const [block, content] of Object.entries(cardBlocks(familyDir))) {
    const [startMark, endMark] = CARD_BLOCKS[block as keyof typeof CARD_BLOCKS];
    const start = text.indexOf(startMark);
    const end = text.indexOf(endMark);
    if (start >= 0 && end > start) text = `${text.slice(0, start + startMark.length)}\n${content}\n${text.slice(end)}`;
  }
  fs.writeFileSync(card, text);
}

/** The metrics.json of every model in a family folder, by variant (stamped first). */
export function familyMetrics(familyDir: string): Record<string, MetricsFile> {
  const files: Record<string, MetricsFile> = {};
  for (const entry of fs.readdirSync(familyDir).sort().reverse()) {
    const file = path.join(familyDir, entry, 'metrics.json');
    if (fs.existsSync(file)) files[entry] = readMetrics(file);
  }
  return files;
}

/** The card's generated blocks as updateCard would write them, for a test to compare with the card. */
export function expectedCardBlocks(familyDir: string): string[] {
  return Object.values(cardBlocks(familyDir));
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
  const expected = readMetrics(path.join(dir, 'metrics.json'));
  if (expected.timeSource === 'recorded')
    throw new Error(`${dir} was evaluated on recordings: re-run train-model with them to re-measure`);
  const model = await BehaviourModel.load(dir);
  if (model.id !== expected.model) console.log(`eval-model: note: metrics.json was measured on ${expected.model}`);
  const found: string[] = [];
  for (const [data, evaluate] of Object.entries(EVALUATIONS)) {
    console.log(
      `\neval-model: ${model.id} on the ${data}, ${expected.protocol.units} unseen units, times from ${expected.timeSource}`,
    );
    const measured = evaluate(model, expected.timeSource, expected.protocol);
    console.log(metricsTable({ [path.basename(dir)]: measured }));
    found.push(...differences(expected.reports[data], measured).map(d => `${path.basename(dir)} ${data}: ${d}`));
  }
  return found;
}

/** Sets a shipped model's operating margin on validation units, then re-measures it into metrics.json. */
async function recalibrate(dir: string): Promise<void> {
  const model = await BehaviourModel.load(dir);
  const timeSource = model.metadata.timeSource;
  if (timeSource === 'recorded') throw new Error(`${dir} was trained on recordings: re-run train-model with them`);
  const margin = calibrateMargin(
    model,
    draft => evaluateSimulated(draft, timeSource, VALIDATION_PROTOCOL).frrAtThreshold,
    TARGET_FRR,
  );
  console.log(`eval-model: ${model.id}: operating margin ${margin}`);
  const file = path.join(dir, 'model.json');
  const manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
  manifest.userDefinedMetadata.m2m.operatingMargin = margin;
  fs.writeFileSync(file, `${JSON.stringify(manifest, null, 1)}\n`);
  const calibrated = await BehaviourModel.load(dir);
  const reports = Object.fromEntries(
    Object.entries(EVALUATIONS).map(([data, evaluate]) => [data, evaluate(calibrated, timeSource, EVALUATION_PROTOCOL)]),
  );
  const { training } = readMetrics(path.join(dir, 'metrics.json')) as MetricsFile & { training: Record<string, unknown> };
  writeMetrics(dir, calibrated, reports, training);
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: { model: { type: 'string' }, calibrate: { type: 'boolean', default: false } },
  });
  if (args.calibrate) {
    for (const dir of [shippedModelDir('source'), shippedModelDir('arrival')]) await recalibrate(dir);
    updateCard(path.dirname(shippedModelDir('source')));
    return;
  }
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
