/**
 * The one way to open a verifier store, for the command line and the Node-RED node alike:
 * `sqlite:PATH` (or a bare path) opens the embedded store; PostgreSQL comes with its own store.
 */
import { M2MError } from '../../errors';
import { SqliteStore } from './sqlite';
import type { VerifierStore } from './types';

export async function openStore(spec: string): Promise<VerifierStore> {
  if (/^postgres(ql)?:\/\//.test(spec)) {
    throw new M2MError(
      'store_unsupported',
      'the PostgreSQL store is not available in this version; use sqlite:PATH',
      400,
    );
  }
  return new SqliteStore(spec.replace(/^sqlite:/, ''));
}
