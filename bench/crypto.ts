/**
 * Ed25519 sign and verify through the project's API (lib/crypto/ed25519) vs raw node:crypto vs
 * @noble/ed25519, measured in alternating rounds so machine noise hits all three alike.
 * Target: the project's path at ≥ 0.9x raw node:crypto.
 */
import * as crypto from 'node:crypto';
import * as ed from '@noble/ed25519';
import { Ed25519PrivateKey } from '../lib/crypto/ed25519';
import { opsPerSecond, table } from './stats';

export async function run(): Promise<void> {
  const message = crypto.randomBytes(200); // about the size of an attestation's signing input
  const project = Ed25519PrivateKey.generate('node');
  const seed = project.exportSeed();
  const raw = crypto.generateKeyPairSync('ed25519');
  const nobleKey = ed.getPublicKey(seed);

  const projectSig = project.sign(message);
  const rawSig = crypto.sign(null, message, raw.privateKey);
  const nobleSig = ed.sign(message, seed);

  const contenders = {
    'project (lib/crypto)': {
      sign: () => project.sign(message),
      verify: () => project.publicKey.verify(message, projectSig),
    },
    'raw node:crypto': {
      sign: () => crypto.sign(null, message, raw.privateKey),
      verify: () => crypto.verify(null, message, raw.publicKey, rawSig),
    },
    '@noble/ed25519': {
      sign: () => ed.sign(message, seed),
      verify: () => ed.verify(nobleSig, message, nobleKey, { zip215: false }),
    },
  };
  const totals: Record<string, { sign: number; verify: number }> = {};
  const rounds = 3;
  for (let round = 0; round < rounds; round++) {
    for (const [name, ops] of Object.entries(contenders)) {
      const slow = name.startsWith('@noble');
      totals[name] ??= { sign: 0, verify: 0 };
      totals[name].sign += opsPerSecond(ops.sign, slow ? 300 : 500) / rounds;
      totals[name].verify += opsPerSecond(ops.verify, slow ? 300 : 500) / rounds;
    }
  }
  const base = totals['raw node:crypto'];
  table(
    Object.entries(totals).map(([name, t]) => ({
      engine: name,
      'sign ops/s': Math.round(t.sign),
      'verify ops/s': Math.round(t.verify),
      'sign vs raw': `${(t.sign / base.sign).toFixed(2)}x`,
      'verify vs raw': `${(t.verify / base.verify).toFixed(2)}x`,
    })),
  );
  const p = totals['project (lib/crypto)'];
  console.log(
    `target: project ≥ 0.9x raw node:crypto → sign ${(p.sign / base.sign).toFixed(2)}x, verify ${(p.verify / base.verify).toFixed(2)}x`,
  );
}
