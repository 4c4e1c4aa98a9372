/**
 * The verifier's throughput per store and worker count, against what its one necessary cost
 * allows: one Ed25519 verification per attestation. The limit is measured here, in this run, on
 * one core (raw node:crypto over an attestation-sized input) and multiplied by the workers.
 * Goal: ≥ 0.4x of the limit on SQLite with one process, p99 ≤ 10 ms at 16 in flight.
 * PostgreSQL rows need M2M_PG_URL. The load client shares this 2-core machine with the verifier.
 */
import * as crypto from 'node:crypto';
import { POSTGRES } from '../test/helpers/stores';
import { opsPerSecond, table } from './stats';
import { attestationRun } from './verifier';

const COUNT = 4000;

function verifyLimit(): number {
  const message = crypto.randomBytes(700); // an attestation's signing input: header and payload, base64url
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
  const signature = crypto.sign(null, message, privateKey);
  return opsPerSecond(() => crypto.verify(null, message, publicKey, signature), 1500);
}

export async function run(): Promise<void> {
  const limit = verifyLimit();
  const stores: Array<{ name: string; spec: () => Promise<{ spec?: string; drop(): Promise<void> }> }> = [
    { name: 'SQLite', spec: async () => ({ drop: async () => undefined }) },
  ];
  if (POSTGRES.skipReason) console.log(`(PostgreSQL rows skipped: ${POSTGRES.skipReason})`);
  else stores.push({ name: 'PostgreSQL', spec: () => POSTGRES.fresh() });

  const rows: Array<Record<string, string | number>> = [];
  for (const store of stores) {
    for (const workers of [1, 2]) {
      const db = await store.spec();
      try {
        const result = await attestationRun({ store: db.spec, workers }, COUNT);
        rows.push({
          store: store.name,
          workers,
          'attestations/s': Math.round(result.perSecond),
          'p50 ms': result.p50,
          'p99 ms': result.p99,
          'vs verify limit': `${(result.perSecond / (limit * workers)).toFixed(2)}x`,
        });
      } finally {
        await db.drop();
      }
    }
  }
  table(rows);
  const sqliteOne = rows[0];
  console.log(
    `Ed25519 verify limit, one core: ${Math.round(limit)}/s. ` +
      `goal ≥ 0.4x on SQLite, 1 process → ${sqliteOne['vs verify limit']}; p99 ≤ 10 ms at 16 in flight → ${sqliteOne['p99 ms']} ms`,
  );
}
