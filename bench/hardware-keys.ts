/**
 * Keys that cannot be copied, and what they cost (issue #22): attestations and per-message proofs
 * signed by a file key, by SoftHSM2 (Ed25519, P-256) and by a software TPM (P-256), side by side;
 * and the verifier's check of an ES256 attestation against an EdDSA one. The tokens are started
 * here as the tests start them (test/helpers/hardware); a missing one is reported, not faked.
 */
import * as crypto from 'node:crypto';
import { Ed25519PrivateKey } from '../lib/crypto/ed25519';
import { JWS_TYPES, decodeJws, verifyDecoded } from '../lib/crypto/jws';
import type { Signer } from '../lib/crypto/keys';
import { P256PrivateKey } from '../lib/crypto/p256';
import { buildAttestation } from '../lib/edge/attestation';
import type { DeviceIdentity } from '../lib/edge/keystore';
import { type TokenKey, openPkcs11Key } from '../lib/edge/pkcs11-key';
import { createProof } from '../lib/proof';
import { softHsm, softwareTpm } from '../test/helpers/hardware';
import { opsPerSecond, table } from './stats';

const COMPONENTS = { 'machine-id': 'a1b2c3', cpu: 'ARM Cortex-A72', 'plc.serial': 'S7-42' };
const TOKEN = `${'h'.repeat(120)}.${'p'.repeat(300)}.${'s'.repeat(86)}`;

function identity(key: Signer): DeviceIdentity {
  return {
    deviceId: 'press-7',
    privateKey: key,
    fingerprintSalt: new Uint8Array(crypto.randomBytes(16)),
    createdAt: new Date().toISOString(),
    storage: 'file',
  };
}

export async function run(): Promise<void> {
  const signers: Array<[string, Signer]> = [
    ['file Ed25519 (node:crypto)', Ed25519PrivateKey.generate()],
    ['file P-256 (node:crypto)', P256PrivateKey.generate()],
  ];
  const opened: TokenKey[] = [];
  const hsm = softHsm();
  if (hsm.ready)
    for (const keyType of ['ed25519', 'p256'] as const) {
      const key = openPkcs11Key({
        ...hsm.ready,
        keyLabel: `bench-${keyType}`,
        keyType,
        create: true,
        storage: 'pkcs11',
      });
      opened.push(key);
      signers.push([`SoftHSM2 ${keyType === 'p256' ? 'P-256' : 'Ed25519'}`, key]);
    }
  else console.log(`SoftHSM2: skipped (${hsm.skipReason})`);
  const tpm = await softwareTpm();
  if (tpm.ready) {
    const key = openPkcs11Key({ ...tpm.ready, keyLabel: 'bench-p256', keyType: 'p256', create: true, storage: 'tpm' });
    opened.push(key);
    signers.push(['software TPM P-256 (swtpm)', key]);
  } else console.log(`software TPM: skipped (${tpm.skipReason})`);

  try {
    const rows: Array<{ name: string; attest: number; proof: number }> = [];
    for (const [name, key] of signers) {
      const device = identity(key);
      const slow = name.includes('TPM');
      const attest = opsPerSecond(
        () =>
          buildAttestation(device, {
            audience: 'http://127.0.0.1:1880/m2m',
            nonce: 'n'.repeat(43),
            rawComponents: COMPONENTS,
          }),
        slow ? 1500 : 700,
      );
      const proof = opsPerSecond(
        () => createProof(key, { token: TOKEN, payload: { t: 21.5 }, target: 'plant/press-7' }),
        slow ? 1500 : 700,
      );
      rows.push({ name, attest, proof });
    }
    const base = rows[0];
    console.log('signing on the gateway: one attestation, one per-message proof');
    table(
      rows.map(row => ({
        key: row.name,
        'attestations/s': Math.round(row.attest),
        'ms each': (1000 / row.attest).toFixed(2),
        'proofs/s': Math.round(row.proof),
        'vs file Ed25519': `${(row.proof / base.proof).toFixed(2)}x`,
      })),
    );

    // The verifier's side: decoding and checking an attestation, EdDSA against ES256.
    const checks = [
      ['EdDSA (Ed25519)', Ed25519PrivateKey.generate()],
      ['ES256 (P-256)', P256PrivateKey.generate()],
    ] as const;
    const verified = checks.map(([name, key]) => {
      const jws = buildAttestation(identity(key), {
        audience: 'http://127.0.0.1:1880/m2m',
        nonce: 'n'.repeat(43),
        rawComponents: COMPONENTS,
      });
      const ops = opsPerSecond(() => {
        if (!verifyDecoded(decodeJws(jws, JWS_TYPES.attestation), key.publicKey)) throw new Error('did not verify');
      });
      return { name, ops };
    });
    console.log('verifying an attestation in the verifier (decode + signature)');
    table(
      verified.map(row => ({
        alg: row.name,
        'verifications/s': Math.round(row.ops),
        'µs each': (1e6 / row.ops).toFixed(1),
        'vs EdDSA': `${(row.ops / verified[0].ops).toFixed(2)}x`,
      })),
    );
  } finally {
    for (const key of opened) key.close();
  }
}
