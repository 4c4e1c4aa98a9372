/**
 * The one way to open a verifier store, for the command line and the Node-RED node alike:
 * `sqlite:PATH` (or a bare path) opens the embedded store, `postgres://…` the shared one.
 */
import { M2MError } from '../../errors';
import { PostgresStore } from './postgres';
import { SqliteStore } from './sqlite';
import type { VerifierStore } from './types';

export function isPostgresUrl(spec: string): boolean {
  return /^postgres(ql)?:\/\//i.test(spec);
}

/**
 * `password`: a PostgreSQL password kept apart from the URL (a Node-RED credential, possibly
 * empty), so the URL can sit in a flow file; given, a URL that carries a password is refused,
 * since the flow file would keep it.
 */
export async function openStore(spec: string, options: { password?: string } = {}): Promise<VerifierStore> {
  if (isPostgresUrl(spec))
    return PostgresStore.open(options.password === undefined ? spec : withPassword(spec, options.password));
  return new SqliteStore(spec.replace(/^sqlite:/, ''));
}

function withPassword(spec: string, password: string): string {
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    throw new M2MError('bad_config', 'the PostgreSQL store URL is not a valid URL', 400);
  }
  if (url.password)
    throw new M2MError(
      'bad_config',
      'the store URL carries a password: remove it and keep only the store password',
      400,
    );
  if (password) url.password = password;
  return url.toString();
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
