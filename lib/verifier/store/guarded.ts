/**
 * The store as the verifier calls it: every call has a deadline, a database that is down or
 * frozen becomes `store_unavailable` (503, so clients and balancers retry elsewhere) instead of an
 * internal error, failures are counted for /metrics, and an outage is logged once when it starts
 * and once when it ends, not once per request.
 */
import { M2MError } from '../../errors';
import type { VerifierStore } from './types';

export class StoreUnavailableError extends M2MError {
  constructor(message: string, cause?: unknown) {
    super('store_unavailable', message, 503, { retryAfter: 1 });
    if (cause !== undefined) (this as { cause?: unknown }).cause = cause;
  }
}

/** PostgreSQL SQLSTATE classes of an unreachable or overloaded server (connection, resources, operator, system). */
const UNAVAILABLE_SQLSTATE = /^(08|53|57|58)/;
const UNAVAILABLE_SQLITE = /^SQLITE_(BUSY|LOCKED|IOERR|FULL|CANTOPEN|PROTOCOL|NOMEM|READONLY)/;
/** What `pg` says without a code when its connection or pool gives out. */
const UNAVAILABLE_MESSAGE =
  /connection|terminated|timeout|timed out|not queryable|pool|ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ETIMEDOUT/i;

/** True for errors of a database that cannot answer now, as opposed to a mistake in a query. */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof StoreUnavailableError) return true;
  if (err instanceof M2MError) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (/^[0-9A-Z]{5}$/.test(code)) return UNAVAILABLE_SQLSTATE.test(code);
    if (code.startsWith('SQLITE_')) return UNAVAILABLE_SQLITE.test(code);
    if (/^E[A-Z]+$/.test(code)) return true;
  }
  return UNAVAILABLE_MESSAGE.test(String((err as Error)?.message ?? ''));
}

export interface GuardOptions {
  /** A call that has not answered after this fails with store_unavailable. */
  deadlineMs: number;
  /** Every failed call, for a counter. */
  onFailure(): void;
  /** The store became unavailable (with the first error) or available again. */
  onAvailability?(available: boolean, err?: unknown): void;
}

export const DEFAULT_STORE_DEADLINE_MS = 5000;
/** Readiness checks answer sooner: a balancer's health check gives up after a few seconds. */
const PING_DEADLINE_MS = 2000;

function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StoreUnavailableError(`the store did not answer ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

export function guardedStore(store: VerifierStore, options: GuardOptions): VerifierStore {
  let available = true;
  const changed = (now: boolean, err?: unknown) => {
    if (now === available) return;
    available = now;
    options.onAvailability?.(now, err);
  };
  // One wrapper per method, made on first use: the store is called on every request.
  const wrapped = new Map<PropertyKey, (...args: unknown[]) => Promise<unknown>>();
  return new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof value !== 'function') return value;
      // Closing waits as long as it takes: it is how the process ends, not a request.
      if (property === 'close') return value.bind(target);
      let wrapper = wrapped.get(property);
      if (!wrapper) {
        const what = String(property);
        const deadline = property === 'ping' ? Math.min(PING_DEADLINE_MS, options.deadlineMs) : options.deadlineMs;
        wrapper = (...args: unknown[]) =>
          withDeadline(value.apply(target, args) as Promise<unknown>, deadline, what).then(
            result => {
              changed(true);
              return result;
            },
            (err: unknown) => {
              options.onFailure();
              if (!isUnavailable(err)) throw err;
              changed(false, err);
              throw err instanceof StoreUnavailableError
                ? err
                : new StoreUnavailableError('the store is not reachable', err);
            },
          );
        wrapped.set(property, wrapper);
      }
      return wrapper;
    },
  });
}
