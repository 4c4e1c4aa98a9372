/**
 * Messages parked per key until something decides their fate, with one bound on their total:
 * past it the oldest parked message is handed back (to be routed as undecided), never dropped.
 */
export class HeldMessages<T> {
  private readonly byKey = new Map<string, T[]>();
  private total = 0;

  constructor(private readonly limit: number) {}

  /** Parks `item`; returns the message pushed out when the bound is exceeded. */
  add(key: string, item: T): { key: string; item: T } | undefined {
    const list = this.byKey.get(key);
    if (list) list.push(item);
    else this.byKey.set(key, [item]);
    this.total++;
    if (this.total <= this.limit) return undefined;
    const [oldestKey, oldest] = this.byKey.entries().next().value!;
    const pushedOut = oldest.shift()!;
    if (!oldest.length) this.byKey.delete(oldestKey);
    this.total--;
    return { key: oldestKey, item: pushedOut };
  }

  /** Removes and returns `key`'s messages, oldest first. */
  take(key: string): T[] {
    const list = this.byKey.get(key) ?? [];
    this.byKey.delete(key);
    this.total -= list.length;
    return list;
  }

  drain(): Array<{ key: string; item: T }> {
    const all = [...this.byKey].flatMap(([key, list]) => list.map(item => ({ key, item })));
    this.byKey.clear();
    this.total = 0;
    return all;
  }
}
