/**
 * The evaluation protocol behind the model card: units never seen in training are enrolled from
 * one session, then scored hours later (temperature has moved) against genuine windows and each
 * impostor kind, through the same window, replay memory, features and scoring the node uses.
 */
import type { RecordedSource } from './dataset';
import { FEATURE_COUNT, FeatureExtractor, WINDOW } from './features';
import { acceptedShare, errorRates, type ErrorRates } from './metrics';
import type { BehaviourModel } from './model';
import { cosineTo, enrol, scoreOf, type SourceProfile } from './profile';
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
import { DECISION_WINDOWS, SourceWindow } from './source-window';

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
  replayMemory: 65536,
};

export interface KindReport extends ErrorRates {
  /** Decisions scored (each over DECISION_WINDOWS windows). */
  decisions: number;
  /** Equal error rate of single windows, without the decision's averaging. */
  windowEer: number;
  /** Share accepted at each source's calibrated threshold. */
  farAtThreshold: number;
  /** Share caught by the replay memory alone, before the model scores it. */
  replayFlagged: number;
}

export interface ModeReport<K extends string = ImpostorKind> {
  genuineDecisions: number;
  frrAtThreshold: number;
  genuineReplayFlagged: number;
  impostors: Record<K, KindReport>;
}

interface ScoredWindows {
  /** Decision scores (DECISION_WINDOWS windows each) and each one's source threshold. */
  scores: number[];
  /** Single-window scores, for the card's per-window column. */
  windowScores: number[];
  thresholds: number[];
  flagged: number;
}

const HOUR = 3_600_000;

/** Scores windows of one source through its SourceWindow, as the node does. */
class ScoredSource {
  private readonly window: SourceWindow;
  private readonly extractor = new FeatureExtractor();
  profile: SourceProfile | undefined;

  constructor(
    private readonly model: BehaviourModel,
    replayMemory: number,
  ) {
    this.window = new SourceWindow(replayMemory);
  }

  /** Pushes a recording; returns the features and replay flags of each whole window in it. */
  feed(values: ArrayLike<number>, times: ArrayLike<number>): { features: Float32Array; replayed: boolean[] } {
    const windows = Math.floor(values.length / WINDOW);
    const features = new Float32Array(windows * FEATURE_COUNT);
    const replayed: boolean[] = [];
    for (let i = 0; i < windows * WINDOW; i++) {
      this.window.push(values[i], times[i]);
      if ((i + 1) % WINDOW === 0) {
        this.window.features(this.extractor, features, replayed.length * FEATURE_COUNT);
        replayed.push(this.window.replayed);
      }
    }
    return { features, replayed };
  }

  enrol(recording: Recording, timeSource: TimeSource): void {
    const { features, replayed } = this.feed(recording.values, timesOf(recording, timeSource));
    const embeddings = this.model.embed(features, replayed.length);
    this.profile = enrol(embeddings, replayed.length, this.model.embeddingSize, this.model.metadata, DECISION_WINDOWS);
  }

  /**
   * Scores a run of windows. Every window gets a window score; from the DECISION_WINDOWS-th on,
   * each also gets a decision (the score of the mean cosine of the run's last DECISION_WINDOWS
   * windows, as SourceWindow.decide gives the node), so decisions never mix two kinds of data.
   */
  score(values: ArrayLike<number>, times: ArrayLike<number>, into: ScoredWindows): void {
    const { features, replayed } = this.feed(values, times);
    const embeddings = this.model.embed(features, replayed.length);
    const run: number[] = [];
    const calibration = this.model.metadata;
    replayed.forEach((flag, row) => {
      run.push(cosineTo(embeddings, row, this.profile!.centroid));
      into.windowScores.push(flag ? 0 : scoreOf(run[row], calibration));
      if (run.length < DECISION_WINDOWS) return;
      const decision = scoreOf(run.slice(-DECISION_WINDOWS).reduce((a, b) => a + b, 0) / DECISION_WINDOWS, calibration);
      into.scores.push(flag ? 0 : decision);
      into.thresholds.push(this.profile!.threshold);
      if (flag) into.flagged++;
    });
  }

  get lastTime(): number {
    return this.window.lastTime;
  }
}

function emptyScores(): ScoredWindows {
  return { scores: [], windowScores: [], thresholds: [], flagged: 0 };
}

export function evaluateSimulated(
  model: BehaviourModel,
  timeSource: TimeSource,
  options: ProtocolOptions = EVALUATION_PROTOCOL,
): ModeReport {
  const genuine = emptyScores();
  const impostors = Object.fromEntries(IMPOSTOR_KINDS.map(kind => [kind, emptyScores()])) as Record<
    ImpostorKind,
    ScoredWindows
  >;
  const rng = new SeededRandom(options.seed);
  for (let u = 0; u < options.units; u++) {
    const installation = drawInstallation(rng);
    const sensor = new SimulatedSensor(installation, drawUnit(rng), rng.int(2 ** 31));
    const otherUnit = new SimulatedSensor(installation, drawUnit(rng), rng.int(2 ** 31));
    const simulator = new SoftwareImpostor(installation, rng.int(2 ** 31));
    const t0 = rng.uniform(0, 86_400_000);
    const source = new ScoredSource(model, options.replayMemory);

    const enrolment = sensor.record(t0, options.enrolWindows * WINDOW);
    source.enrol(enrolment, timeSource);
    const later = sensor.record(t0 + 3 * HOUR, options.testWindows * WINDOW);
    source.score(later.values, timesOf(later, timeSource), genuine);

    const swapped = otherUnit.record(t0 + 4 * HOUR, options.testWindows * WINDOW);
    source.score(swapped.values, timesOf(swapped, timeSource), impostors.same_model);
    const faked = simulator.record(t0 + 5 * HOUR, options.testWindows * WINDOW);
    source.score(faked.values, timesOf(faked, timeSource), impostors.simulator);

    replayRuns(source, [enrolment, later], timeSource, options.testWindows, rng, impostors.replay);
  }
  return modeReport(genuine, impostors);
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
  into: ScoredWindows,
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

function modeReport<K extends string>(genuine: ScoredWindows, impostors: Record<K, ScoredWindows>): ModeReport<K> {
  return {
    genuineDecisions: genuine.scores.length,
    frrAtThreshold: 1 - acceptedShare(genuine.scores, genuine.thresholds),
    genuineReplayFlagged: genuine.flagged / Math.max(1, genuine.scores.length),
    impostors: Object.fromEntries(
      Object.entries<ScoredWindows>(impostors).map(([kind, scored]) => [
        kind,
        {
          ...errorRates(genuine.scores, scored.scores),
          decisions: scored.scores.length,
          windowEer: errorRates(genuine.windowScores, scored.windowScores).eer,
          farAtThreshold: acceptedShare(scored.scores, scored.thresholds),
          replayFlagged: scored.flagged / Math.max(1, scored.scores.length),
        },
      ]),
    ) as Record<K, KindReport>,
  };
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
  const rng = new SeededRandom(options.seed);
  const genuine = emptyScores();
  const impostors = { other_source: emptyScores(), replay: emptyScores() };
  const enrolSamples = options.enrolWindows * WINDOW;
  sources.forEach((own, index) => {
    const source = new ScoredSource(model, options.replayMemory);
    const enrolment = {
      values: own.values.subarray(0, enrolSamples),
      sourceTimes: own.times.subarray(0, enrolSamples),
      arrivalTimes: own.times.subarray(0, enrolSamples),
    };
    source.enrol(enrolment, 'source');
    const rest = {
      values: own.values.subarray(enrolSamples),
      sourceTimes: own.times.subarray(enrolSamples),
      arrivalTimes: own.times.subarray(enrolSamples),
    };
    source.score(rest.values, rest.sourceTimes, genuine);
    sources.forEach((other, k) => {
      if (k === index) return;
      const samples = Math.min(other.values.length, options.testWindows * WINDOW);
      const shift = source.lastTime + 1 - other.times[0];
      source.score(
        other.values.subarray(0, samples),
        other.times.subarray(0, samples).map(t => t + shift),
        impostors.other_source,
      );
    });
    replayRuns(source, [enrolment, rest], 'source', options.testWindows, rng, impostors.replay);
  });
  return modeReport(genuine, impostors);
}
