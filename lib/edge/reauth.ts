/**
 * Keeps one current token for a device, free of Node-RED: re-attests at a fraction of the
 * token's lifetime with jitter (SPIRE's default: half, ±10 %; a fleet restarted at once does not
 * come back at once), at once on triggers (network change, a new task, a low behaviour score, a
 * 401 downstream, a request), and after failures with capped exponential backoff and full jitter
 * (AWS's "full jitter": a random delay up to base · 2^n, capped).
 *
 * While the identity API is unreachable a token that has not expired is kept (grace); a decline
 * drops it at once. Time and randomness come from a Clock, so tests run the schedule on fake time.
 */
import { ApiError, type AttestAnswer } from './api-client';

/**
 * Answers that say the verifier will not vouch for the device (a challenge for an unknown or
 * revoked device is 404 device_unknown): they drop the token at once, as a decline does.
 */
const DECISIVE_CODES = new Set(['device_unknown', 'device_revoked']);

export type Trigger =
  | 'start'
  | 'schedule'
  | 'retry'
  | 'network'
  | 'task'
  | 'risk'
  | 'request'
  | 'unauthorized'
  /** The verifier's revocation list shows the device active again after a revocation. */
  | 'reinstated'
  /** The device's key is not the one the token is bound to (a keystore replaced while running). */
  | 'key_changed'
  /** A client certificate is wanted and there is none (or it ran out): the next approval brings one. */
  | 'certificate';

export interface ReauthOptions {
  /** Re-attest when this share of the token's lifetime has passed. */
  lifetimeFraction: number;
  /** ± this share of that interval, at random. */
  jitter: number;
  /** Never sooner than this after an approval (ms). */
  floorMs: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  /**
   * After a decision against the device (declined, revoked) the next attempt waits at least half
   * this, and its backoff starts here: asking again within seconds only repeats the answer.
   */
  declineBackoffBaseMs: number;
  /** The first attestation waits a random moment up to this (ms): a plant restarted at once does not attest at once. */
  startSpreadMs: number;
}

export const DEFAULT_REAUTH: ReauthOptions = {
  lifetimeFraction: 0.5,
  jitter: 0.1,
  floorMs: 30_000,
  backoffBaseMs: 1000,
  backoffCapMs: 300_000,
  declineBackoffBaseMs: 30_000,
  startSpreadMs: 5000,
};

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  /** Uniform in [0, 1). */
  random(): number;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: handle => clearTimeout(handle as NodeJS.Timeout),
  random: () => Math.random(),
};

export interface CurrentToken {
  deviceId: string;
  token: string;
  /** Epoch ms. */
  expiresAt: number;
}

export type KeeperEvent =
  | { type: 'approved'; trigger: Trigger; token: CurrentToken; nextAt: number }
  | { type: 'declined'; trigger: Trigger; decision: string; reasons: string[]; retryAt: number }
  | {
      type: 'failed';
      trigger: Trigger;
      code: string;
      message: string;
      retryAt: number;
      grace: boolean;
      /** The identity API answered or could not be reached (else: a local fault, the keystore, the set-up). */
      remote: boolean;
    };

/** When to re-attest after an approval at `now` of a token expiring at `expiresAt`. */
export function renewalDelay(now: number, expiresAt: number, options: ReauthOptions, random: () => number): number {
  const lifetime = Math.max(0, expiresAt - now);
  const planned = lifetime * options.lifetimeFraction * (1 + options.jitter * (2 * random() - 1));
  // The floor keeps a short-lived token from hammering the verifier; it never outlasts the token.
  return Math.min(Math.max(planned, options.floorMs), Math.max(0, lifetime - 1000));
}

/**
 * Full-jitter backoff before attempt `failures` (1 for the first retry); after a decline, from
 * `declineBackoffBaseMs` and never below half of it.
 */
export function backoffDelay(
  failures: number,
  options: ReauthOptions,
  random: () => number,
  afterDecline = false,
): number {
  const base = afterDecline ? options.declineBackoffBaseMs : options.backoffBaseMs;
  const ceiling = Math.min(options.backoffCapMs, base * 2 ** Math.max(0, failures - 1));
  return Math.max(afterDecline ? base / 2 : 1, random() * ceiling);
}

/**
 * Attempts that a trigger caused start at least this far apart: a flood of 401s or requests
 * becomes one attempt every few seconds, not a burst that the verifier's per-device rate limit
 * refuses (and whose failures would then back the device off for minutes).
 */
export const TRIGGER_SPACING_MS = 5_000;
const SCHEDULED = new Set<Trigger>(['start', 'schedule', 'retry']);

/** Performs one attestation (challenge → signed attestation → decision). */
export type Attest = (trigger: Trigger) => Promise<AttestAnswer>;

export class TokenKeeper {
  private token: CurrentToken | undefined;
  private timer: unknown;
  private failures = 0;
  private running: Promise<void> | undefined;
  private pending: Trigger | undefined;
  private stopped = false;
  private lastTriggeredAt = Number.NEGATIVE_INFINITY;
  /** When the next attempt is planned (epoch ms), for the status. */
  nextAttemptAt: number | undefined;
  onEvent: (event: KeeperEvent) => void = () => {};

  constructor(
    private readonly attest: Attest,
    private readonly deviceId: string,
    private readonly options: ReauthOptions = DEFAULT_REAUTH,
    private readonly clock: Clock = systemClock,
    initial?: CurrentToken,
  ) {
    if (initial && initial.deviceId === deviceId) this.token = initial;
  }

  /**
   * Attests within startSpreadMs unless a token that is still good was handed in, which is then
   * renewed on schedule.
   */
  start(): void {
    const now = this.clock.now();
    if (this.token && this.token.expiresAt > now)
      this.plan(renewalDelay(now, this.token.expiresAt, this.options, () => this.clock.random()));
    else this.plan(this.clock.random() * this.options.startSpreadMs, 'start');
  }

  /** The current token while it has not expired. */
  current(): CurrentToken | undefined {
    return this.token && this.token.expiresAt > this.clock.now() ? this.token : undefined;
  }

  get attempting(): boolean {
    return this.running !== undefined;
  }

  /**
   * Re-attests now, or for a trigger within TRIGGER_SPACING_MS of the last one's attempt, as soon
   * as that has passed; a trigger during an attempt runs one more attempt after it.
   */
  trigger(why: Trigger): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) {
      this.pending ??= why;
      return this.running;
    }
    if (!SCHEDULED.has(why)) {
      const now = this.clock.now();
      const wait = this.lastTriggeredAt + TRIGGER_SPACING_MS - now;
      if (wait > 0) {
        if (this.nextAttemptAt === undefined || this.nextAttemptAt > now + wait) this.plan(wait, why);
        return Promise.resolve();
      }
      this.lastTriggeredAt = now;
    }
    this.clock.clearTimeout(this.timer);
    this.nextAttemptAt = undefined;
    this.running = this.run(why).finally(() => {
      this.running = undefined;
      const next = this.pending;
      this.pending = undefined;
      if (next && !this.stopped) void this.trigger(next);
    });
    return this.running;
  }

  private async run(trigger: Trigger): Promise<void> {
    let answer: AttestAnswer;
    try {
      answer = await this.attest(trigger);
    } catch (err) {
      if (this.stopped) return;
      const code = (err as { code?: string }).code ?? 'internal';
      if (err instanceof ApiError && DECISIVE_CODES.has(code)) {
        this.decline(trigger, 'declined', [code]);
        return;
      }
      const retryAt = this.retry();
      this.onEvent({
        type: 'failed',
        trigger,
        code,
        message: (err as Error).message,
        retryAt,
        grace: !!this.current(),
        remote: err instanceof ApiError,
      });
      return;
    }
    if (this.stopped) return;
    if (answer.decision === 'approved' && answer.token && answer.expiresAt) {
      this.failures = 0;
      const expiresAt = Date.parse(answer.expiresAt);
      this.token = { deviceId: this.deviceId, token: answer.token, expiresAt };
      const delay = renewalDelay(this.clock.now(), expiresAt, this.options, () => this.clock.random());
      this.plan(delay);
      this.onEvent({ type: 'approved', trigger, token: this.token, nextAt: this.clock.now() + delay });
      return;
    }
    this.decline(trigger, answer.decision, answer.reasons);
  }

  /** A decision against the device stops stamping at once. */
  private decline(trigger: Trigger, decision: string, reasons: string[]): void {
    this.token = undefined;
    const retryAt = this.retry(true);
    this.onEvent({ type: 'declined', trigger, decision, reasons, retryAt });
  }

  /**
   * The token is no good though it has not expired (the revocation list names it, or the device
   * no longer holds its key): dropped at once, as a decline is.
   */
  invalidate(reason: string): void {
    if (this.stopped || !this.token) return;
    this.decline('schedule', 'declined', [reason]);
  }

  private retry(afterDecline = false): number {
    this.failures++;
    const at = this.clock.now() + backoffDelay(this.failures, this.options, () => this.clock.random(), afterDecline);
    // An attempt planned sooner stays: a token dropped between attempts (invalidate) must not push
    // back one that a trigger asked for and that is waiting out its spacing.
    if (this.nextAttemptAt !== undefined && this.nextAttemptAt <= at) return this.nextAttemptAt;
    this.plan(at - this.clock.now(), 'retry');
    return at;
  }

  private plan(delay: number, trigger: Trigger = 'schedule'): void {
    this.clock.clearTimeout(this.timer);
    this.nextAttemptAt = this.clock.now() + delay;
    this.timer = this.clock.setTimeout(() => void this.trigger(trigger), delay);
  }

  stop(): void {
    this.stopped = true;
    this.clock.clearTimeout(this.timer);
  }
}
