/**
 * The outbox worker: sends every event to every subscriber, at least once (DESIGN.md §4). Events
 * are written in the transaction of what they report; this worker fans them out to deliveries,
 * leases due ones from the store (so several verifier processes share the work and a crashed
 * sender's deliveries come back), and records each attempt's outcome. Nothing here sits on the
 * path of an attestation: a slow or dead subscriber costs a row per event and a timer.
 */
import axios, { type AxiosInstance } from 'axios';
import * as http from 'node:http';
import * as https from 'node:https';
import { diditSignature } from '../webhooks/didit';
import { signedHeaders } from '../webhooks/standard';
import type { ClaimedDelivery, DeliveryOutcome, VerifierStore } from './store/types';
import type { Subscriber } from './subscribers';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

/**
 * The longest wait before each retry; each actual wait is uniformly random below it ("full
 * jitter"), so a receiver that comes back is not hit by every sender at once. Ten attempts; the
 * caps are twice Standard Webhooks' example schedule, so the expected span is its three days.
 */
export const DEFAULT_RETRY_CAPS_MS = [
  10 * SECOND,
  10 * MINUTE,
  HOUR,
  4 * HOUR,
  10 * HOUR,
  20 * HOUR,
  28 * HOUR,
  40 * HOUR,
  48 * HOUR,
];

/**
 * After this many failed attempts in a row a subscriber is "open": its deliveries wait, and one
 * round of them probes it after a pause that doubles up to BREAKER_MAX_MS. A receiver that is down
 * costs a probe now and then, not an attempt per event.
 */
const BREAKER_THRESHOLD = 3;
const BREAKER_MAX_MS = 5 * MINUTE;
/** Events arriving close together are fanned out and sent together: one transaction, not one each. */
const COALESCE_MS = 20;

/**
 * A receiver of events that is not a webhook (a broker kept in step): it applies an event itself
 * and says how that went, with its own retry schedule.
 */
export interface EventSink {
  id: string;
  /** What the admin API lists (no credentials). */
  url: string;
  send(delivery: Pick<ClaimedDelivery, 'eventId' | 'body'>): Promise<AttemptResult>;
  /** The longest wait before each retry, as DeliveryOptions.retryCapsMs. */
  retryCapsMs?: number[];
  /** The longest pause of a failing sink's deliveries before the next probe (5 minutes by default). */
  breakerMaxMs?: number;
  close?(): Promise<void>;
}

export interface DeliveryOptions {
  store: VerifierStore;
  subscribers: Subscriber[];
  sinks?: EventSink[];
  retryCapsMs?: number[];
  /** One attempt's deadline: connect, send, answer. */
  timeoutMs?: number;
  /** Deliveries in flight at once. */
  concurrency?: number;
  /** How often to look for events written by other verifier processes sharing the store. */
  pollMs?: number;
  userAgent?: string;
  now?: () => number;
  random?: () => number;
  /** Failures of the worker itself (the store), not of subscribers. */
  onError?: (err: unknown) => void;
  /** A receiver started failing (with the attempt's error) or answers again (no error). */
  onReceiverHealth?: (receiver: { id: string; url: string }, error?: string) => void;
}

/** What an attempt came to, from the receiver's answer or the transport error. */
export type AttemptResult =
  | { kind: 'delivered'; httpStatus?: number }
  | { kind: 'gone'; httpStatus: number }
  | {
      kind: 'failed';
      httpStatus?: number;
      error: string;
      retryAfterMs?: number;
    };

/** Seconds or an HTTP date, as RFC 9110 allows; at most a day. */
function retryAfterMs(value: unknown, now: number): number | undefined {
  if (typeof value !== 'string' || !value) return undefined;
  const ms = /^\d+$/.test(value) ? Number(value) * SECOND : Date.parse(value) - now;
  return Number.isFinite(ms) && ms > 0 ? Math.min(ms, 24 * HOUR) : undefined;
}

export class DeliveryWorker {
  private readonly store: VerifierStore;
  private readonly subscribers: Map<string, Subscriber>;
  private readonly sinks: Map<string, EventSink>;
  private readonly retryCapsMs: number[];
  private readonly timeoutMs: number;
  private readonly concurrency: number;
  private readonly pollMs: number;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly onError: (err: unknown) => void;
  private readonly onReceiverHealth: NonNullable<DeliveryOptions['onReceiverHealth']>;
  private readonly client: AxiosInstance;
  private readonly abort = new AbortController();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly outcomes: Array<{ id: number; outcome: DeliveryOutcome }> = [];
  private wake?: () => void;
  private woken = false;
  private coalescing?: NodeJS.Timeout;
  /** Subscribers whose last attempts failed: how many in a row, and until when their deliveries wait. */
  private readonly failing = new Map<string, { failures: number; until: number }>();
  private loop?: Promise<void>;

  constructor(options: DeliveryOptions) {
    this.store = options.store;
    this.subscribers = new Map(options.subscribers.map(subscriber => [subscriber.id, subscriber]));
    this.sinks = new Map((options.sinks ?? []).map(sink => [sink.id, sink]));
    this.retryCapsMs = options.retryCapsMs ?? DEFAULT_RETRY_CAPS_MS;
    this.timeoutMs = options.timeoutMs ?? 10 * SECOND;
    this.concurrency = options.concurrency ?? 8;
    this.pollMs = options.pollMs ?? 5 * SECOND;
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.onError = options.onError ?? (() => undefined);
    this.onReceiverHealth = options.onReceiverHealth ?? (() => undefined);
    const agentOptions = { keepAlive: true, maxSockets: this.concurrency };
    this.client = axios.create({
      timeout: this.timeoutMs,
      // A redirect is a failure (the spec): the subscriber should fix its URL, not have events follow it anywhere.
      maxRedirects: 0,
      validateStatus: () => true,
      responseType: 'text',
      transformResponse: [(data: unknown) => data],
      maxContentLength: 64 * 1024,
      httpAgent: new http.Agent(agentOptions),
      httpsAgent: new https.Agent(agentOptions),
      headers: { 'user-agent': options.userAgent ?? 'm2m-identity-verifier' },
    });
  }

  /** Registers the configured subscribers and starts sending. */
  async start(): Promise<void> {
    await this.store.syncSubscribers(
      [...this.subscribers.values(), ...this.sinks.values()].map(({ id, url }) => ({ id, url })),
      this.now(),
    );
    this.loop = this.run();
  }

  /** An event was written: send it now (with those that follow within a few ms) rather than at the next poll. */
  notify(): void {
    this.coalescing ??= setTimeout(() => {
      this.coalescing = undefined;
      this.wakeUp();
    }, COALESCE_MS);
  }

  private wakeUp(): void {
    this.woken = true;
    this.wake?.();
  }

  async close(): Promise<void> {
    this.abort.abort();
    clearTimeout(this.coalescing);
    this.wakeUp();
    await this.loop;
    await Promise.allSettled([...this.sinks.values()].map(sink => sink.close?.()));
    this.client.defaults.httpAgent?.destroy();
    this.client.defaults.httpsAgent?.destroy();
  }

  private get closed(): boolean {
    return this.abort.signal.aborted;
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      let waitMs = this.pollMs;
      try {
        this.woken = false;
        await this.recordOutcomes();
        while ((await this.store.fanOut(100, this.now())) === 100 && !this.closed);
        const now = this.now();
        const waiting = [...this.failing].filter(([, breaker]) => breaker.until > now);
        const skip = waiting.map(([id]) => id);
        const free = this.concurrency - this.inFlight.size;
        const claimed = free > 0 && !this.closed ? await this.store.claimDeliveries(now, free, this.leaseMs, skip) : [];
        for (const delivery of claimed) this.track(this.deliver(delivery));
        if (claimed.length === free) waitMs = 0;
        else {
          const due = await this.store.nextDeliveryAt(now, skip);
          const probe = Math.min(...waiting.map(([, breaker]) => breaker.until));
          // At least a moment: what is due now but was not claimed is another process's to send.
          waitMs = Math.max(10, Math.min(waitMs, (due ?? Infinity) - now, probe - now));
        }
      } catch (err) {
        this.onError(err);
      }
      // Full: wait for a slot; otherwise for the next due attempt, a new event or the poll.
      if (this.inFlight.size >= this.concurrency || waitMs > 0) await this.sleep(waitMs);
    }
    await Promise.allSettled([...this.inFlight]);
    await this.recordOutcomes().catch(this.onError);
  }

  /** Outcomes are written together, one transaction for all the attempts that ended since the last. */
  private async recordOutcomes(): Promise<void> {
    if (!this.outcomes.length) return;
    const outcomes = this.outcomes.splice(0);
    await this.store.finishDeliveries(outcomes, this.now());
  }

  /** How long a claimed delivery stays this worker's: an attempt's deadline and a margin for recording it. */
  private get leaseMs(): number {
    return this.timeoutMs + 5 * SECOND;
  }

  private sleep(ms: number): Promise<void> {
    if (this.woken || this.closed) return Promise.resolve();
    return new Promise(resolve => {
      const timer = setTimeout(done, this.inFlight.size >= this.concurrency ? 60 * MINUTE : ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = undefined;
        done();
      };
    });
  }

  private track(attempt: Promise<void>): void {
    this.inFlight.add(attempt);
    attempt.finally(() => {
      this.inFlight.delete(attempt);
      this.wakeUp();
    });
  }

  private async deliver(delivery: ClaimedDelivery): Promise<void> {
    const id = delivery.subscriberId;
    const subscriber = this.subscribers.get(id);
    const sink = this.sinks.get(id);
    const result = subscriber
      ? await this.attempt(subscriber, delivery)
      : sink
        ? await sink
            .send(delivery)
            .catch((err: unknown): AttemptResult => ({ kind: 'failed', error: (err as Error).message }))
        : undefined;
    if (!result) return; // claims are limited to configured subscribers
    this.trackHealth(id, result, sink?.breakerMaxMs);
    if (result.kind === 'gone')
      await this.store.setSubscriberStatus(id, 'disabled', 'answered 410 Gone', this.now()).catch(this.onError);
    this.outcomes.push({ id: delivery.id, outcome: this.outcome(delivery, result, sink?.retryCapsMs) });
  }

  private trackHealth(subscriberId: string, result: AttemptResult, breakerMaxMs = BREAKER_MAX_MS): void {
    const receiver = () => ({
      id: subscriberId,
      url: (this.subscribers.get(subscriberId) ?? this.sinks.get(subscriberId))?.url ?? '',
    });
    if (result.kind !== 'failed') {
      // A receiver that answers again gets its backlog now, not each delivery at the end of the
      // backoff it drew while the receiver was down (up to hours).
      if (this.failing.delete(subscriberId)) {
        this.onReceiverHealth(receiver());
        if (result.kind === 'delivered')
          this.store.expediteDeliveries(subscriberId, this.now()).then(() => this.wakeUp(), this.onError);
      }
      return;
    }
    const now = this.now();
    if (!this.failing.has(subscriberId)) this.onReceiverHealth(receiver(), result.error);
    const breaker = this.failing.get(subscriberId) ?? { failures: 0, until: 0 };
    // Attempts that were in flight when the breaker opened count as one probe round.
    if (breaker.until > now) return;
    breaker.failures++;
    if (breaker.failures >= BREAKER_THRESHOLD)
      breaker.until = now + Math.min(breakerMaxMs, SECOND * 2 ** (breaker.failures - BREAKER_THRESHOLD));
    this.failing.set(subscriberId, breaker);
  }

  /** One POST of the stored body, signed for this attempt. */
  async attempt(subscriber: Subscriber, delivery: Pick<ClaimedDelivery, 'eventId' | 'body'>): Promise<AttemptResult> {
    const timestamp = Math.floor(this.now() / 1000);
    try {
      const response = await this.client.post(subscriber.url, delivery.body, {
        signal: this.abort.signal,
        headers: {
          'content-type': 'application/json',
          ...signedHeaders(subscriber.keys, delivery.eventId, timestamp, delivery.body),
          'x-signature': diditSignature(subscriber.diditSecret, delivery.body),
          'x-timestamp': String(timestamp),
        },
      });
      const httpStatus = response.status;
      if (httpStatus >= 200 && httpStatus < 300) return { kind: 'delivered', httpStatus };
      if (httpStatus === 410) return { kind: 'gone', httpStatus };
      return {
        kind: 'failed',
        httpStatus,
        error: `answered ${httpStatus}`,
        retryAfterMs: retryAfterMs(response.headers['retry-after'], this.now()),
      };
    } catch (err) {
      const { code, message } = err as { code?: string; message: string };
      return { kind: 'failed', error: code === 'ECONNABORTED' ? 'timed out' : (code ?? message) };
    }
  }

  /** Delivered, disabled (kept pending for when an operator enables it again), retried, or dead. */
  private outcome(delivery: ClaimedDelivery, result: AttemptResult, retryCapsMs = this.retryCapsMs): DeliveryOutcome {
    const now = this.now();
    if (result.kind === 'delivered') return { status: 'delivered', httpStatus: result.httpStatus };
    if (result.kind === 'gone')
      return { status: 'pending', nextAttemptAt: now, httpStatus: result.httpStatus, error: 'answered 410 Gone' };
    // Stopping aborts attempts in flight: they are not the subscriber's failures.
    if (this.closed) return { status: 'pending', nextAttemptAt: now, error: 'verifier stopped during the attempt' };
    const cap = retryCapsMs[delivery.attempts - 1];
    if (cap === undefined) return { status: 'dead', httpStatus: result.httpStatus, error: result.error };
    const wait = Math.max(Math.floor(this.random() * cap), result.retryAfterMs ?? 0);
    return { status: 'pending', nextAttemptAt: now + wait, httpStatus: result.httpStatus, error: result.error };
  }
}
