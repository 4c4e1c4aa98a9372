/**
 * The evaluation protocol behind the model card: units never seen in training are enrolled from
 * one session, then scored in a later one (hours on, temperature moved) against their own
 * windows and each impostor kind, through the same window, replay memory, features and scoring
 * the node uses. It runs on two sources of units: the training simulator's (held out) and the
 * second generator's (./generator-b, written separately and never used for training or tuning).
 *
 * Besides the combined score it keeps each part's own statistic, so the card shows what the
 * one-class part and the embedding contribute.
 */
import type { RecordedSource } from './dataset';
import { FEATURE_COUNT, FeatureExtractor, WINDOW } from '../../lib/tinyml/features';
import { generateCases } from './generator-b';
import { acceptedShare, errorRates, type ErrorRates } from './metrics';
import type { BehaviourModel } from '../../lib/tinyml/model';
import { OneClassScorer } from '../../lib/tinyml/one-class';
import { cosineTo, enrol, scoreOf, type SourceProfile } from '../../lib/tinyml/profile';
import { SeededRandom } from './random';
import {
  drawInstallation,
  drawUnit,
  replay,
  SimulatedSensor,
  SoftwareImpostor,
  timesOf,
  type Recording,
  type TimeSource,
} from './simulator';
import { DECISION_WINDOWS, SourceWindow } from '../../lib/tinyml/source-window';
import { SEPARATION_WARNING } from '../../lib/tinyml/behaviour-monitor';

export const IMPOSTOR_KINDS = ['same_model', 'simulator', 'replay'] as const;
export type ImpostorKind = (typeof IMPOSTOR_KINDS)[number];

export interface ProtocolOptions {
  seed: number;
  units: number;
  enrolWindows: number;
  testWindows: number;
  replayMemory: number;
}

export const EVALUATION_PROTOCOL: ProtocolOptions = {
  seed: 7_000_000,
  units: 200,
  enrolWindows: 20,
  testWindows: 40,
  replayMemory: 32768,
};

/** The share of genuine validation decisions a source's operating point may reject. */
export const TARGET_FRR = 0.05;

/** Units for calibration: held out of training and of the evaluation above. */
export const VALIDATION_PROTOCOL: ProtocolOptions = { ...EVALUATION_PROTOCOL, seed: EVALUATION_PROTOCOL.seed + 1, units: 150 };

export interface KindReport extends ErrorRates {
  /** Decisions scored (each over DECISION_WINDOWS windows). */
  decisions: number;
  /** Equal error rate of single windows, without the decision's averaging. */
  windowEer: number;
  /** Share accepted at each source's calibrated threshold. */
  farAtThreshold: number;
  /** Share caught by the replay memory alone, before the model scores it. */
  replayFlagged: number;
  /** Equal error rates of each part's statistic alone, and of the two combined before calibration. */
  oneClassEer: number;
  embeddingEer: number;
}

/** What one group of sources (a sensor kind, slow fine-grained sensors) gets at its operating points. */
export interface GroupReport<K extends string = ImpostorKind> {
  sources: number;
  genuineRejected: number;
  impostors: Record<K, { eer: number; accepted: number }>;
}

/** Sensors where a careful simulator has least to imitate (issue #24 item 5): slow, and fine-grained. */
export const SLOW_FINE = 'slow, fine (≤ 2 Hz, ≥ 20 bit)';
const slowFine = (rateHz: number, bits: number): string[] => (rateHz <= 2 && bits >= 20 ? [SLOW_FINE] : []);

export interface ModeReport<K extends string = ImpostorKind> {
  genuineDecisions: number;
  frrAtThreshold: number;
  genuineReplayFlagged: number;
  /** Enrolled sources whose features lay outside the training range (one-class part only). */
  outOfRangeSources: number;
  /**
   * Share of sources whose enrolment would finish in the node within the readings of its
   * windows, give or take one window: the node closes a window only on a whole window of readings
   * since the last fresh start, and a stream that keeps starting afresh never enrols.
   */
  finishedEnrolling: number;
  sources: number;
  /** Enrolments too short or too scattered for a threshold of their own (the node says weakEnrolment). */
  weakEnrolments: number;
  /**
   * The look-alike warning, per source and its same-model neighbour (enrolled from the neighbour's
   * own first windows): warned when the node would warn (one-class separation below
   * SEPARATION_WARNING); passing when the neighbour passes at least half of its decisions at the
   * source's threshold. Precision is both / warned, recall both / passing.
   */
  lookAlike: LookAlikeTally;
  impostors: Record<K, KindReport>;
  /** The same at each source's operating point, per group of sources. */
  groups: Record<string, GroupReport<K>>;
}

/** What became of the sources' enrolments. */
interface EnrolmentTally {
  sources: number;
  outOfRange: number;
  finished: number;
  weak: number;
}

export interface LookAlikeTally {
  warned: number;
  passing: number;
  both: number;
}

/** What the protocol keeps of each decision: its score and each part's statistic (larger = worse). */
interface Decisions {
  scores: number[];
  thresholds: number[];
  oneClass: number[];
  embedding: number[];
  windowScores: number[];
  flagged: number;
}

function emptyDecisions(): Decisions {
  return { scores: [], thresholds: [], oneClass: [], embedding: [], windowScores: [], flagged: 0 };
}

/** Scores windows of one source through its SourceWindow, as the node does. */
class ScoredSource {
  private readonly window: SourceWindow;
  private readonly extractor = new FeatureExtractor();
  profile: SourceProfile | undefined;
  scorer: OneClassScorer | undefined;
  /** Windows the node would have closed from the last stream fed. */
  closedWindows = 0;

  constructor(
    readonly model: BehaviourModel,
    replayMemory: number,
  ) {
    this.window = new SourceWindow(replayMemory);
  }

  /** Pushes a stream; returns the features and replay flags of each whole window in it. */
  private feed(values: ArrayLike<number>, times: ArrayLike<number>): { features: Float32Array; replayed: boolean[] } {
    const windows = Math.floor(values.length / WINDOW);
    const features = new Float32Array(windows * FEATURE_COUNT);
    const replayed: boolean[] = [];
    this.closedWindows = 0;
    for (let i = 0; i < windows * WINDOW; i++) {
      this.window.push(values[i], times[i]);
      if (this.window.closesWindow) this.closedWindows++;
      if ((i + 1) % WINDOW === 0) {
        this.window.features(this.extractor, features, replayed.length * FEATURE_COUNT);
        replayed.push(this.window.replayed);
      }
    }
    return { features, replayed };
  }

  enrol(values: ArrayLike<number>, times: ArrayLike<number>): void {
    const { features, replayed } = this.feed(values, times);
    this.profile = enrol(features, this.model.embed(features, replayed.length), replayed.length, this.model);
    this.scorer = new OneClassScorer(this.profile.oneClass);
    this.window.resetDecisions();
  }

  /** Scores a run of windows; each window past the first DECISION_WINDOWS - 1 is a decision. */
  score(values: ArrayLike<number>, times: ArrayLike<number>, into: Decisions): void {
    const profile = this.profile!;
    const scorer = this.scorer!;
    const { features, replayed } = this.feed(values, times);
    const embeddings = this.model.embed(features, replayed.length);
    const calibration = this.model.metadata;
    this.window.resetDecisions();
    replayed.forEach((flag, row) => {
      const cosine = cosineTo(embeddings, row, profile.centroid);
      into.windowScores.push(
        flag ? 0 : scoreOf(scorer.distance(features, row * FEATURE_COUNT, 1), cosine, profile, calibration),
      );
      const decision = this.window.decide(features, row * FEATURE_COUNT, cosine, 1);
      if (decision.windows < DECISION_WINDOWS) return;
      const distance = scorer.distance(decision.features, 0, decision.windows);
      into.scores.push(flag ? 0 : scoreOf(distance, decision.cosine, profile, calibration));
      into.thresholds.push(profile.threshold);
      into.oneClass.push(Math.log1p(distance));
      into.embedding.push(Math.log1p(Math.max(0, 1 - decision.cosine) / profile.spread));
      if (flag) into.flagged++;
    });
  }

  get lastTime(): number {
    return this.window.lastTime;
  }
}

/** One enrolled source's streams: enrolment, its later session and the impostors in its place. */
interface Case {
  /** The groups the card breaks figures down by. */
  groups: string[];
  enrol: Recording;
  genuine: Recording;
  impostors: { same_model: Recording; simulator: Recording };
}

/** Runs the protocol over `cases`, seen through `timeSource`. */
function evaluateCases(
  model: BehaviourModel,
  cases: Iterable<Case>,
  timeSource: TimeSource,
  options: ProtocolOptions,
): ModeReport {
  const rng = new SeededRandom(options.seed ^ 0x5eed);
  const genuine = emptyDecisions();
  const impostors = emptyKinds();
  const tally: EnrolmentTally = { sources: 0, outOfRange: 0, finished: 0, weak: 0 };
  const lookAlike: LookAlikeTally = { warned: 0, passing: 0, both: 0 };
  const groups = new Map<string, GroupDecisions>();
  for (const c of cases) {
    const before = { genuine: genuine.scores.length, impostors: IMPOSTOR_KINDS.map(k => impostors[k].scores.length) };
    const source = new ScoredSource(model, options.replayMemory);
    source.enrol(c.enrol.values, timesOf(c.enrol, timeSource));
    count(tally, source, options);
    source.score(c.genuine.values, timesOf(c.genuine, timeSource), genuine);
    for (const kind of ['same_model', 'simulator'] as const) {
      const stream = c.impostors[kind];
      source.score(stream.values, followOn(timesOf(stream, timeSource), source.lastTime), impostors[kind]);
    }
    replayRuns(source, [c.enrol, c.genuine], timeSource, options.testWindows, rng, impostors.replay);
    // This source's decisions, for its groups and its look-alike.
    const own = {
      genuine: since(genuine, before.genuine),
      impostors: Object.fromEntries(
        IMPOSTOR_KINDS.map((kind, k) => [kind, since(impostors[kind], before.impostors[k])]),
      ) as Record<ImpostorKind, Scored>,
    };
    tallyLookAlike(lookAlike, source, c.impostors.same_model, timeSource, options, own.impostors.same_model);
    for (const name of c.groups) {
      const group = groups.get(name) ?? { sources: 0, genuine: noScores(), impostors: emptyKinds() };
      groups.set(name, group);
      group.sources++;
      append(group.genuine, own.genuine);
      for (const kind of IMPOSTOR_KINDS) append(group.impostors[kind], own.impostors[kind]);
    }
  }
  return modeReport(genuine, impostors, tally, groups, lookAlike);
}

/** Whether the node would warn of the source's same-model neighbour, and whether it would be right to. */
function tallyLookAlike(
  tally: LookAlikeTally,
  source: ScoredSource,
  neighbourStream: Recording,
  timeSource: TimeSource,
  options: ProtocolOptions,
  neighbourDecisions: Scored,
): void {
  const neighbour = new ScoredSource(source.model, options.replayMemory);
  const head = options.enrolWindows * WINDOW;
  neighbour.enrol(neighbourStream.values.subarray(0, head), timesOf(neighbourStream, timeSource).subarray(0, head));
  const warned = source.scorer!.separation(neighbour.scorer!, DECISION_WINDOWS) < SEPARATION_WARNING;
  const passing = acceptedShare(neighbourDecisions.scores, neighbourDecisions.thresholds) >= 0.5;
  if (warned) tally.warned++;
  if (passing) tally.passing++;
  if (warned && passing) tally.both++;
}

/** Decisions as a source's operating point judges them: each score with its threshold. */
type Scored = Pick<Decisions, 'scores' | 'thresholds'>;

interface GroupDecisions<K extends string = ImpostorKind> {
  sources: number;
  genuine: Scored;
  impostors: Record<K, Scored>;
}

const noScores = (): Scored => ({ scores: [], thresholds: [] });

function emptyKinds(): Record<ImpostorKind, Decisions> {
  return Object.fromEntries(IMPOSTOR_KINDS.map(kind => [kind, emptyDecisions()])) as Record<ImpostorKind, Decisions>;
}

/** The decisions `from` gained since it held `start` of them. */
function since(from: Scored, start: number): Scored {
  return { scores: from.scores.slice(start), thresholds: from.thresholds.slice(start) };
}

function append(into: Scored, part: Scored): void {
  into.scores.push(...part.scores);
  into.thresholds.push(...part.thresholds);
}

function groupReport<K extends string>(group: GroupDecisions<K>): GroupReport<K> {
  const { genuine } = group;
  return {
    sources: group.sources,
    genuineRejected: 1 - acceptedShare(genuine.scores, genuine.thresholds),
    impostors: Object.fromEntries(
      Object.entries<Scored>(group.impostors).map(([kind, scored]) => [
        kind,
        { eer: errorRates(genuine.scores, scored.scores).eer, accepted: acceptedShare(scored.scores, scored.thresholds) },
      ]),
    ) as Record<K, { eer: number; accepted: number }>,
  };
}

function count(tally: EnrolmentTally, enrolled: ScoredSource, options: ProtocolOptions): void {
  tally.sources++;
  if (enrolled.profile!.outOfRange.length) tally.outOfRange++;
  if (enrolled.profile!.weakEnrolment) tally.weak++;
  if (enrolled.closedWindows >= options.enrolWindows - 1) tally.finished++;
}

/** Times moved to follow on from `after`: impostors take over a live stream, they do not go back in time. */
function followOn(times: Float64Array, after: number): Float64Array {
  const shift = Math.max(0, after + (times[1] - times[0]) - times[0]);
  return shift > 0 ? times.map(t => t + shift) : times;
}

/** The training simulator's held-out units: each enrolled, then scored 3 hours later. */
export function evaluateSimulated(
  model: BehaviourModel,
  timeSource: TimeSource,
  options: ProtocolOptions = EVALUATION_PROTOCOL,
): ModeReport {
  function* cases(): Generator<Case> {
    const rng = new SeededRandom(options.seed);
    for (let u = 0; u < options.units; u++) {
      const installation = drawInstallation(rng);
      const sensor = new SimulatedSensor(installation, drawUnit(rng, installation), rng.int(2 ** 31));
      const otherUnit = new SimulatedSensor(installation, drawUnit(rng, installation), rng.int(2 ** 31));
      const simulator = new SoftwareImpostor(installation, rng.int(2 ** 31));
      const t0 = rng.uniform(0, 86_400_000);
      const later = t0 + options.enrolWindows * WINDOW * installation.periodMs + 3 * 3_600_000;
      yield {
        groups: slowFine(1000 / installation.periodMs, installation.adcBits),
        enrol: sensor.record(t0, options.enrolWindows * WINDOW),
        genuine: sensor.record(later, options.testWindows * WINDOW),
        impostors: {
          same_model: otherUnit.record(later, options.testWindows * WINDOW),
          simulator: simulator.record(later, options.testWindows * WINDOW),
        },
      };
    }
  }
  return evaluateCases(model, cases(), timeSource, options);
}

/** The second generator's units (never seen in training or tuning): enrolled, then scored an hour later, 7 K warmer. */
export function evaluateSecondGenerator(
  model: BehaviourModel,
  timeSource: TimeSource,
  options: ProtocolOptions = EVALUATION_PROTOCOL,
): ModeReport {
  const generated = generateCases({
    seed: options.seed,
    cases: options.units,
    enrolSamples: options.enrolWindows * WINDOW,
    testSamples: options.testWindows * WINDOW,
  });
  const cases = generated.map(c => ({
    groups: [c.kind, ...slowFine(c.rateHz, c.bits)],
    enrol: c.enrol,
    genuine: c.genuine,
    impostors: { same_model: c.sameModel, simulator: c.simulator },
  }));
  return evaluateCases(model, cases, timeSource, options);
}

/**
 * The attacker recorded what a source sent (enrolment and later traffic) and plays a decision's
 * worth of it back from arbitrary offsets, re-stamped to follow on from the live stream.
 */
function replayRuns(
  source: ScoredSource,
  seen: Recording[],
  timeSource: TimeSource,
  runs: number,
  rng: SeededRandom,
  into: Decisions,
): void {
  const length = DECISION_WINDOWS * WINDOW;
  for (let run = 0; run < runs; run++) {
    const from = seen[rng.int(seen.length)];
    const start = rng.int(from.values.length - length);
    const times = timesOf(from, timeSource);
    const shift = source.lastTime + (times[start + 1] - times[start]) - times[start];
    const played = replay(from, start, length, shift, rng);
    source.score(played.values, timesOf(played, timeSource), into);
  }
}

const negate = (values: number[]) => values.map(v => -v);

function modeReport<K extends string>(
  genuine: Decisions,
  impostors: Record<K, Decisions>,
  tally: EnrolmentTally,
  groups = new Map<string, GroupDecisions<K>>(),
  lookAlike: LookAlikeTally = { warned: 0, passing: 0, both: 0 },
): ModeReport<K> {
  return {
    genuineDecisions: genuine.scores.length,
    frrAtThreshold: 1 - acceptedShare(genuine.scores, genuine.thresholds),
    genuineReplayFlagged: genuine.flagged / Math.max(1, genuine.scores.length),
    outOfRangeSources: tally.outOfRange,
    finishedEnrolling: tally.finished / Math.max(1, tally.sources),
    sources: tally.sources,
    weakEnrolments: tally.weak,
    lookAlike,
    impostors: Object.fromEntries(
      Object.entries<Decisions>(impostors).map(([kind, scored]) => [
        kind,
        {
          ...errorRates(genuine.scores, scored.scores),
          decisions: scored.scores.length,
          windowEer: errorRates(genuine.windowScores, scored.windowScores).eer,
          farAtThreshold: acceptedShare(scored.scores, scored.thresholds),
          replayFlagged: scored.flagged / Math.max(1, scored.scores.length),
          oneClassEer: errorRates(negate(genuine.oneClass), negate(scored.oneClass)).eer,
          embeddingEer: errorRates(negate(genuine.embedding), negate(scored.embedding)).eer,
        },
      ]),
    ) as Record<K, KindReport>,
    groups: Object.fromEntries([...groups].map(([name, group]) => [name, groupReport(group)])),
  };
}

/** Each part's statistic of genuine and impostor decisions, for fitting the combination. */
export interface PartStatistics {
  genuine: { oneClass: number[]; embedding: number[] };
  impostor: { oneClass: number[]; embedding: number[] };
}

/** The parts' statistics on the training simulator's units (validation, in training). */
export function partStatistics(
  model: BehaviourModel,
  timeSource: TimeSource,
  options: ProtocolOptions,
): PartStatistics {
  const genuine = emptyDecisions();
  const impostor = emptyDecisions();
  const rng = new SeededRandom(options.seed);
  for (let u = 0; u < options.units; u++) {
    const installation = drawInstallation(rng);
    const sensor = new SimulatedSensor(installation, drawUnit(rng, installation), rng.int(2 ** 31));
    const otherUnit = new SimulatedSensor(installation, drawUnit(rng, installation), rng.int(2 ** 31));
    const simulator = new SoftwareImpostor(installation, rng.int(2 ** 31));
    const t0 = rng.uniform(0, 86_400_000);
    const later = t0 + options.enrolWindows * WINDOW * installation.periodMs + 3 * 3_600_000;
    const source = new ScoredSource(model, options.replayMemory);
    const enrolment = sensor.record(t0, options.enrolWindows * WINDOW);
    source.enrol(enrolment.values, timesOf(enrolment, timeSource));
    const own = sensor.record(later, options.testWindows * WINDOW);
    source.score(own.values, timesOf(own, timeSource), genuine);
    for (const other of [
      otherUnit.record(later, options.testWindows * WINDOW),
      simulator.record(later, options.testWindows * WINDOW),
    ]) {
      source.score(other.values, followOn(timesOf(other, timeSource), source.lastTime), impostor);
    }
  }
  return {
    genuine: { oneClass: genuine.oneClass, embedding: genuine.embedding },
    impostor: { oneClass: impostor.oneClass, embedding: impostor.embedding },
  };
}

/** Each held-out source enrolled from its first windows, scored on the rest and on the other sources. */
function scoreRecordings(
  model: BehaviourModel,
  sources: RecordedSource[],
  options: ProtocolOptions,
  into: { genuine: Decisions; other: Decisions; replay?: Decisions },
): EnrolmentTally {
  const rng = new SeededRandom(options.seed);
  const enrolSamples = options.enrolWindows * WINDOW;
  const tally: EnrolmentTally = { sources: 0, outOfRange: 0, finished: 0, weak: 0 };
  sources.forEach((own, index) => {
    const source = new ScoredSource(model, options.replayMemory);
    const asRecording = (from: number, to?: number): Recording => {
      const times = own.times.subarray(from, to);
      return { values: own.values.subarray(from, to), sourceTimes: times, arrivalTimes: times };
    };
    const enrolment = asRecording(0, enrolSamples);
    const rest = asRecording(enrolSamples);
    source.enrol(enrolment.values, enrolment.sourceTimes);
    count(tally, source, options);
    source.score(rest.values, rest.sourceTimes, into.genuine);
    sources.forEach((other, k) => {
      if (k === index) return;
      const samples = Math.min(other.values.length, options.testWindows * WINDOW);
      source.score(
        other.values.subarray(0, samples),
        followOn(other.times.subarray(0, samples), source.lastTime),
        into.other,
      );
    });
    if (into.replay) replayRuns(source, [enrolment, rest], 'source', options.testWindows, rng, into.replay);
  });
  return tally;
}

/**
 * The protocol on a user's recordings: each held-out source is enrolled from its first
 * `enrolWindows` windows and scored on the rest; the other held-out sources are its impostors
 * (moved in time to follow its stream), and replays of its own data the third kind.
 */
export function evaluateRecordings(
  model: BehaviourModel,
  sources: RecordedSource[],
  options: ProtocolOptions,
): ModeReport<'other_source' | 'replay'> {
  const genuine = emptyDecisions();
  const impostors = { other_source: emptyDecisions(), replay: emptyDecisions() };
  const tally = scoreRecordings(model, sources, options, {
    genuine,
    other: impostors.other_source,
    replay: impostors.replay,
  });
  return modeReport(genuine, impostors, tally);
}

/** The parts' statistics on recordings set aside for calibration (see partStatistics). */
export function recordedPartStatistics(
  model: BehaviourModel,
  sources: RecordedSource[],
  options: ProtocolOptions,
): PartStatistics {
  const genuine = emptyDecisions();
  const impostor = emptyDecisions();
  scoreRecordings(model, sources, options, { genuine, other: impostor });
  return {
    genuine: { oneClass: genuine.oneClass, embedding: genuine.embedding },
    impostor: { oneClass: impostor.oneClass, embedding: impostor.embedding },
  };
}

/**
 * The smallest operating margin (lib/tinyml/profile) at which `frr(model)` of validation units is
 * at most `target`: each source's threshold then sits just low enough for its own genuine
 * decisions later on. Searched in steps of 0.005 up to 0.3; FRR falls as the margin grows.
 */
export function calibrateMargin(model: BehaviourModel, frr: (model: BehaviourModel) => number, target: number): number {
  const metadata = model.metadata as { operatingMargin?: number };
  const at = (step: number) => {
    metadata.operatingMargin = step * 0.005;
    return frr(model);
  };
  let [low, high] = [0, 60];
  while (low < high) {
    const middle = (low + high) >> 1;
    if (at(middle) <= target) high = middle;
    else low = middle + 1;
  }
  metadata.operatingMargin = Number((low * 0.005).toFixed(3));
  return metadata.operatingMargin;
}
