import type { VerifierStore } from './types';

/** The store with every failed call reported: a database outage shows in /metrics, not only in a log. */
export function countingFailures(store: VerifierStore, onFailure: () => void): VerifierStore {
  return new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) =>
        (value.apply(target, args) as Promise<unknown>).catch((err: unknown) => {
          onFailure();
          throw err;
        });
    },
  });
}
