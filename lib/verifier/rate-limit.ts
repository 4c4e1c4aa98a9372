/**
 * Token buckets by key (a device id, a client address), for the calls anyone may make without a
 * credential. Buckets live in memory and are bounded: the least recently used key is forgotten
 * first, so a flood of made-up keys costs a fixed amount of memory. Per process, except that the
 * workers of one `--workers N` verifier share their primary's (./cluster): behind a load balancer,
 * each verifier machine allows its own share.
 */
import { M2MError } from '../errors';

export interface RateRule {
  /** Calls allowed at once. */
  burst: number;
  /** Calls regained per second. */
  perSecond: number;
}

export class RateLimitedError extends M2MError {
  constructor(
    what: string,
    readonly retryAfterSeconds: number,
  ) {
    super('rate_limited', `too many ${what}; retry in ${retryAfterSeconds} s`, 429, { retryAfter: retryAfterSeconds });
  }
}

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly rule: RateRule,
    private readonly maxKeys = 100_000,
  ) {}

  /** Takes one call from `key`'s bucket; false when it is empty. */
  take(key: string, nowMs: number): boolean {
    const { burst, perSecond } = this.rule;
    const bucket = this.buckets.get(key) ?? { tokens: burst, at: nowMs };
    this.buckets.delete(key);
    bucket.tokens = Math.min(burst, bucket.tokens + (Math.max(0, nowMs - bucket.at) / 1000) * perSecond);
    bucket.at = nowMs;
    const allowed = bucket.tokens >= 1;
    if (allowed) bucket.tokens -= 1;
    this.buckets.set(key, bucket);
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
    return allowed;
  }

  /** Whether `key` could take a call now, without taking it. */
  peek(key: string, nowMs: number): boolean {
    const bucket = this.buckets.get(key);
    if (!bucket) return true;
    const { burst, perSecond } = this.rule;
    return Math.min(burst, bucket.tokens + (Math.max(0, nowMs - bucket.at) / 1000) * perSecond) >= 1;
  }

  /** The wait to tell a refused caller, in whole seconds. */
  retryAfterSeconds(): number {
    return Math.max(1, Math.ceil(1 / this.rule.perSecond));
  }
}
