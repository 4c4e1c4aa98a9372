/**
 * Work that runs concurrently but whose results go on in the order it started: a burst of
 * messages, some waiting for a key or an answer from the network, leaves a node in the order it
 * came in. A result waits only for those that started before it.
 */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

interface Entry<T> {
  outcome?: Outcome<T>;
  deliver(outcome: Outcome<T>): void;
}

export class InOrder<T> {
  private readonly queue: Entry<T>[] = [];

  push(work: Promise<T>, deliver: (outcome: Outcome<T>) => void): void {
    const entry: Entry<T> = { deliver };
    this.queue.push(entry);
    work.then(
      value => this.settle(entry, { ok: true, value }),
      error => this.settle(entry, { ok: false, error }),
    );
  }

  private settle(entry: Entry<T>, outcome: Outcome<T>): void {
    entry.outcome = outcome;
    while (this.queue[0]?.outcome) {
      const next = this.queue.shift()!;
      next.deliver(next.outcome!);
    }
  }
}
