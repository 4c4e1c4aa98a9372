/**
 * The m2m-verifier nodes running in this Node-RED, for the "m2m fleet" editor plugin: one
 * registry per process (node and plugin modules share it through Node's module cache), with
 * their events passed on so open editors see decisions as they happen.
 */
import type { Verifier, VerifierEvent } from '../../lib/verifier';

export interface LocalVerifier {
  /** The m2m-verifier node's id. */
  id: string;
  label: string;
  verifier: Verifier;
}

const running = new Map<string, LocalVerifier>();
const listeners = new Set<(sourceId: string, event: VerifierEvent) => void>();

export const fleetRegistry = {
  /** Lists `entry` until the function returned is called (the node's close). */
  add(entry: LocalVerifier): () => void {
    running.set(entry.id, entry);
    const stop = entry.verifier.onEvent(event => {
      for (const listener of listeners) listener(entry.id, event);
    });
    return () => {
      stop();
      if (running.get(entry.id) === entry) running.delete(entry.id);
    };
  },
  list(): LocalVerifier[] {
    return [...running.values()];
  },
  get(id: string): LocalVerifier | undefined {
    return running.get(id);
  },
  onEvent(listener: (sourceId: string, event: VerifierEvent) => void): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
};
