/**
 * The one way to open a verifier store, for the command line and the Node-RED node alike:
 * `sqlite:PATH` (or a bare path) opens the embedded store, `postgres://…` the shared one.
 */
import { PostgresStore } from './postgres';
import { SqliteStore } from './sqlite';
import type { VerifierStore } from './types';

export function isPostgresUrl(spec: string): boolean {
  return /^postgres(ql)?:\/\//i.test(spec);
}

export async function openStore(spec: string): Promise<VerifierStore> {
  if (isPostgresUrl(spec)) return PostgresStore.open(spec);
  return new SqliteStore(spec.replace(/^sqlite:/, ''));
}

/** A store spec fit for a log line or an error message: a PostgreSQL URL's password masked. */
export function describeStore(spec: string): string {
  if (!isPostgresUrl(spec)) return spec;
  try {
    const url = new URL(spec);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return 'postgres://(unparsable URL)';
  }
}
