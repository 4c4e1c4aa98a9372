import { M2MError } from '../../errors';

/**
 * A database at another schema version than this code's: migrated by a newer verifier, this
 * process would misread it, so it refuses to start (and stops reporting ready) rather than guess.
 */
export function schemaMismatch(found: number, known: number): M2MError {
  const remedy = found > known ? 'upgrade this verifier' : 'restart this verifier to migrate it';
  return new M2MError(
    'store_schema',
    `the database is at schema version ${found}, this verifier's is ${known}: ${remedy}`,
    503,
  );
}
