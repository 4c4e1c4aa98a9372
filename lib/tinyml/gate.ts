/**
 * The policy behind m2m-tinyml-verify, free of Node-RED: turns each message's verdict into a
 * route (trusted or not) and the report that travels on it (`msg.m2m.tinyml`), and decides what
 * happens to messages that have no verdict yet.
 *
 * Policy for readings without a verdict: `pass` (output 1, marked unverified), `reject` (output
 * 2), or `hold` them until the source's first verdict routes them all. Only readings that will
 * get a verdict are held (a source enrolling or warming up); one from a source that is not
 * enrolled, and never will be here, leaves on output 2 at once. Each source holds at most
 * `holdPerSource` readings (room for a whole enrolment) and at most `maxSources` sources hold
 * any: past either bound the oldest held reading leaves on output 2 as `hold_overflow`. Nothing
 * is ever dropped: `drain` routes what is still held when the node closes.
 */
import type { FeatureName } from './features';
import type { Separation, Verdict } from './behaviour-monitor';

export type Policy = 'pass' | 'hold' | 'reject';

/** What `msg.m2m.tinyml` says. */
export interface TinymlReport {
  source: string;
  score: number | null;
  threshold?: number;
  trusted: boolean;
  reason?: string;
  /** It waited for the source's first verdict. */
  held?: true;
  /** Enrolment windows collected so far. */
  enrolled?: number;
  /** The source's features lie outside the model's training range (scored by its own statistics only). */
  ood?: true;
  outOfRange?: FeatureName[];
  /** The nearest other enrolled source, when it is too close to tell apart. */
  separation?: Separation;
  /** The source's enrolment could not support a confident threshold of its own (too short, too scattered). */
  weakEnrolment?: true;
  /** The model that judged it (its id), named by the node. */
  model?: string;
}

export interface GateOptions {
  policy: Policy;
  holdPerSource: number;
  maxSources: number;
}

export type Route<T> = (item: T, trusted: boolean, report: TinymlReport) => void;

function round(value: number): number {
  return Math.round(value * 1e4) / 1e4;
}

/** The report of a verdict for `source`. */
export function reportOf(source: string, verdict: Verdict): TinymlReport {
  if (verdict.status === 'scored') {
    return {
      source,
      score: round(verdict.score),
      threshold: round(verdict.threshold),
      trusted: verdict.trusted,
      ...(verdict.trusted ? {} : { reason: verdict.replay ? 'replay' : (verdict.refused ?? 'score_below_threshold') }),
      ...(verdict.outOfRange ? { ood: true as const, outOfRange: verdict.outOfRange } : {}),
      ...(verdict.separation ? { separation: verdict.separation } : {}),
      ...(verdict.weakEnrolment ? { weakEnrolment: true as const } : {}),
    };
  }
  return {
    source,
    score: null,
    trusted: false,
    reason: verdict.reason,
    ...(verdict.status === 'unverified' && verdict.enrolled !== undefined ? { enrolled: verdict.enrolled } : {}),
  };
}

export class BehaviourGate<T> {
  /** Held readings by source, oldest source first. */
  private readonly held = new Map<string, T[]>();

  constructor(
    private readonly options: GateOptions,
    private readonly route: Route<T>,
  ) {}

  /** Routes `item` by its verdict, or holds it until its source has one. */
  handle(source: string, item: T, verdict: Verdict): void {
    const report = reportOf(source, verdict);
    if (verdict.status === 'scored') {
      const waiting = this.held.get(source);
      if (waiting) {
        this.held.delete(source);
        for (const earlier of waiting) this.route(earlier, verdict.trusted, { ...report, held: true });
      }
      this.route(item, verdict.trusted, report);
      return;
    }
    const willGetVerdict = verdict.status === 'unverified' && verdict.reason !== 'not_enrolled';
    if (
      verdict.status === 'rejected' ||
      this.options.policy === 'reject' ||
      (this.options.policy === 'hold' && !willGetVerdict)
    ) {
      this.route(item, false, report);
    } else if (this.options.policy === 'pass') {
      this.route(item, true, report);
    } else {
      this.hold(source, item);
    }
  }

  /** Routes `item` to output 2 for a reason found before any verdict (a bad peer signature, no model). */
  reject(source: string, item: T, reason: string): void {
    this.route(item, false, { source, score: null, trusted: false, reason });
  }

  private hold(source: string, item: T): void {
    const list = this.held.get(source);
    if (list) list.push(item);
    else this.held.set(source, [item]);
    const own = this.held.get(source)!;
    if (own.length > this.options.holdPerSource) this.overflow(source, own);
    if (this.held.size > this.options.maxSources) {
      const [oldest, theirs] = this.held.entries().next().value!;
      while (theirs.length) this.overflow(oldest, theirs);
    }
  }

  private overflow(source: string, list: T[]): void {
    const pushedOut = list.shift()!;
    if (!list.length) this.held.delete(source);
    this.route(pushedOut, false, { source, score: null, trusted: false, reason: 'hold_overflow' });
  }

  /** Readings held now, across sources. */
  get heldCount(): number {
    let count = 0;
    for (const list of this.held.values()) count += list.length;
    return count;
  }

  /** Routes every held reading to output 2 with `reason` (the node is closing). */
  drain(reason: string): void {
    const all = [...this.held];
    this.held.clear();
    for (const [source, list] of all)
      for (const item of list) this.route(item, false, { source, score: null, trusted: false, reason });
  }
}
