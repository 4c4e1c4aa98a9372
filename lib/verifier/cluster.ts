/**
 * `--workers N`: N verifier processes on one port (node:cluster hands connections out), each with
 * its own store connection. Nothing is shared between them but the store, the secrets the primary
 * passes down in the environment, the rate limits' buckets, which the primary keeps so that a
 * limit holds for the machine whichever worker a connection lands on, and the metrics, which the
 * primary gathers over IPC so that any worker's /metrics speaks for all of them.
 */
import cluster, { type Worker } from 'node:cluster';
import type { MetricsSnapshot } from './metrics';
import { type SharedRateLimits, type VerifierLimits, limiters } from './verifier';

type Message =
  | { m2m: 'ready'; url: string }
  | { m2m: 'metrics-request'; id: number }
  | { m2m: 'metrics-collect'; id: number }
  | { m2m: 'metrics-snapshot'; id: number; snapshot: MetricsSnapshot }
  | { m2m: 'metrics-reply'; id: number; snapshots: MetricsSnapshot[] }
  | { m2m: 'limit-take'; id: number; rule: keyof VerifierLimits; key: string; now: number; peek?: boolean }
  | { m2m: 'limit-answer'; id: number; allowed: boolean }
  | { m2m: 'stop' };

function isMessage(value: unknown): value is Message {
  return typeof value === 'object' && value !== null && typeof (value as { m2m?: unknown }).m2m === 'string';
}

/**
 * How long the primary waits for every worker's metrics before answering with those it has, and
 * a worker for the primary's answer to a rate-limit question.
 */
const ANSWER_MS = 1000;
/** A worker that crashes is replaced, after this pause (so a crash loop does not spin). */
const RESTART_DELAY_MS = 1000;

export interface PrimaryOptions {
  workers: number;
  /** The limits every worker enforces, kept here for all of them. */
  limits: VerifierLimits;
  /** Added to each worker's environment: the secrets the primary generated. */
  env: Record<string, string>;
  log(message: string): void;
}

export interface RunningPrimary {
  url: string;
  stop(): Promise<void>;
}

/** Forks the workers and resolves once every one is listening; rejects if one dies first. */
export function runPrimary(options: PrimaryOptions): Promise<RunningPrimary> {
  let stopping = false;
  let nextGather = 0;
  const gathering = new Map<number, { snapshots: MetricsSnapshot[]; expected: number; done: () => void }>();
  const buckets = limiters(options.limits);

  const gather = (requester: Worker, requestId: number) => {
    const id = nextGather++;
    const live = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w?.isConnected());
    const snapshots: MetricsSnapshot[] = [];
    const done = () => {
      if (!gathering.delete(id)) return;
      clearTimeout(timer);
      if (requester.isConnected()) requester.send({ m2m: 'metrics-reply', id: requestId, snapshots } satisfies Message);
    };
    const timer = setTimeout(done, ANSWER_MS);
    gathering.set(id, { snapshots, expected: live.length, done });
    for (const worker of live) worker.send({ m2m: 'metrics-collect', id } satisfies Message);
  };

  const fork = () => {
    const worker = cluster.fork(options.env);
    worker.on('message', (message: unknown) => {
      if (!isMessage(message)) return;
      if (message.m2m === 'metrics-request') gather(worker, message.id);
      if (message.m2m === 'limit-take') {
        const limiter = buckets[message.rule];
        const allowed = limiter
          ? (message.peek ? limiter.peek : limiter.take).call(limiter, message.key, message.now)
          : false;
        worker.send({ m2m: 'limit-answer', id: message.id, allowed } satisfies Message);
      }
      if (message.m2m === 'metrics-snapshot') {
        const pending = gathering.get(message.id);
        if (!pending) return;
        pending.snapshots.push(message.snapshot);
        if (pending.snapshots.length >= pending.expected) pending.done();
      }
    });
    return worker;
  };

  return new Promise((resolve, reject) => {
    const ready = new Set<number>();
    let url = '';
    const onMessage = (worker: Worker, message: unknown) => {
      if (!isMessage(message) || message.m2m !== 'ready') return;
      ready.add(worker.id);
      url = message.url;
      if (ready.size === options.workers) {
        cluster.off('message', onMessage);
        resolve({ url, stop });
      }
    };
    cluster.on('message', onMessage);
    cluster.on('exit', (worker, code, signal) => {
      if (stopping) return;
      if (ready.size < options.workers) {
        stopping = true;
        for (const other of Object.values(cluster.workers ?? {})) other?.process.kill();
        reject(new Error(`a worker exited with ${signal ?? code} while starting`));
        return;
      }
      // Exit code 0 is a worker that was told to stop (Ctrl-C reaches every process of the group).
      if (code === 0) return;
      options.log(`worker ${worker.process.pid} exited with ${signal ?? code}; starting another`);
      setTimeout(() => {
        if (!stopping) fork();
      }, RESTART_DELAY_MS).unref();
    });
    for (let i = 0; i < options.workers; i++) fork();
  });

  async function stop(): Promise<void> {
    stopping = true;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w);
    await Promise.all(
      workers.map(
        worker =>
          new Promise<void>(resolve => {
            if (worker.isDead()) return resolve();
            worker.once('exit', () => resolve());
            if (worker.isConnected()) worker.send({ m2m: 'stop' } satisfies Message);
            // A worker that cannot finish its requests in time is not waited for.
            setTimeout(() => worker.process.kill('SIGKILL'), 10_000).unref();
          }),
      ),
    );
  }
}

/** In a worker: the function that asks the primary for every worker's metrics. */
export function metricsOfAllWorkers(own: () => MetricsSnapshot): () => Promise<MetricsSnapshot[]> {
  let nextRequest = 0;
  const waiting = new Map<number, (snapshots: MetricsSnapshot[]) => void>();
  process.on('message', (message: unknown) => {
    if (!isMessage(message)) return;
    if (message.m2m === 'metrics-collect')
      process.send?.({ m2m: 'metrics-snapshot', id: message.id, snapshot: own() } satisfies Message);
    if (message.m2m === 'metrics-reply') {
      waiting.get(message.id)?.(message.snapshots);
      waiting.delete(message.id);
    }
  });
  return () =>
    new Promise(resolve => {
      const id = nextRequest++;
      // Should the primary not answer, this process speaks for itself.
      const timer = setTimeout(() => {
        waiting.delete(id);
        resolve([own()]);
      }, ANSWER_MS * 2);
      waiting.set(id, snapshots => {
        clearTimeout(timer);
        resolve(snapshots.length ? snapshots : [own()]);
      });
      process.send?.({ m2m: 'metrics-request', id } satisfies Message);
    });
}

/**
 * In a worker: the rate limits, asked of the primary. A primary that does not answer within a
 * second gets the call refused: under a flood, failing open would be the flood's way through.
 */
export function rateLimitsOfPrimary(): SharedRateLimits {
  let nextRequest = 0;
  const waiting = new Map<number, (allowed: boolean) => void>();
  process.on('message', (message: unknown) => {
    if (!isMessage(message) || message.m2m !== 'limit-answer') return;
    waiting.get(message.id)?.(message.allowed);
    waiting.delete(message.id);
  });
  return (rule, key, now, peek) =>
    new Promise(resolve => {
      const id = nextRequest++;
      const timer = setTimeout(() => {
        waiting.delete(id);
        resolve(false);
      }, ANSWER_MS);
      waiting.set(id, allowed => {
        clearTimeout(timer);
        resolve(allowed);
      });
      process.send?.({ m2m: 'limit-take', id, rule, key, now, peek } satisfies Message);
    });
}

/** In a worker: tell the primary it listens, and stop when told. */
export function serveAsWorker(url: string, stop: () => void): void {
  process.on('message', (message: unknown) => {
    if (isMessage(message) && message.m2m === 'stop') stop();
  });
  process.send?.({ m2m: 'ready', url } satisfies Message);
}
