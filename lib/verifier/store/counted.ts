import type { VerifierStore } from './types';

/** The store with every failed call reported: a database outage shows in /metrics, not only in a log. */
export function countingFailures(store: VerifierStore, onFailure: () => void): VerifierStore {
  // One wrapper per method, made on first use: the store is called on every request.
  const wrapped = new Map<PropertyKey, (...args: unknown[]) => Promise<unknown>>();
  return new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof value !== 'function') return value;
      let wrapper = wrapped.get(property);
      if (!wrapper) {
        wrapper = (...args: unknown[]) =>
          (value.apply(target, args) as Promise<unknown>).catch((err: unknown) => {
            onFailure();
            throw err;
          });
        wrapped.set(property, wrapper);
      }
      return wrapper;
    },
  });
}
