/**
 * Access at the broker (issue #23), side by side in one run:
 * - certificates issued per CPU-second of the verifier (request checked, certificate signed and
 *   recorded) against tokens issued per CPU-second;
 * - time from a revocation to Mosquitto dropping the device's connection, over 100 runs;
 * - Mosquitto mutual-TLS connections per second with Ed25519 and with P-256 client certificates.
 * Mosquitto is started here as the tests start it; without it those parts say so.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { MqttClient } from 'mqtt';
import * as crypto from 'node:crypto';
import type { Ed25519PrivateKey } from '../lib/crypto/ed25519';
import { newStoredKey, type Signer } from '../lib/crypto/keys';
import { P256PrivateKey } from '../lib/crypto/p256';
import { buildAttestation, buildRegistration } from '../lib/edge/attestation';
import type { DeviceIdentity } from '../lib/edge/keystore';
import { SqliteStore, startVerifierServer } from '../lib/verifier';
import { CertificateIssuer } from '../lib/verifier/certificates';
import { TokenService, keyRotationOptions } from '../lib/verifier/tokens';
import { buildCertificateRequest } from '../lib/x509/request';
import { BROKER_ADMIN, startMosquitto } from '../test/helpers/mosquitto';
import { percentile, table } from './stats';

const COMPONENTS = { 'machine-id': 'bench' };
const ADMIN = 'bench-admin-key-0123456789';
const ENROL = 'bench-enrollment-token-0123';

/** Operations per CPU-second of this process (user + system), `count` of them run one after another. */
function privateKeyPem(key: Signer): string {
  const secret = key instanceof P256PrivateKey ? key.exportScalar() : (key as Ed25519PrivateKey).exportSeed();
  const jwk = { ...key.publicKey.toJwk(), d: Buffer.from(secret).toString('base64url') };
  return crypto.createPrivateKey({ key: jwk, format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' }).toString();
}

async function perCpuSecond(count: number, op: () => Promise<unknown> | unknown): Promise<number> {
  for (let i = 0; i < 20; i++) await op();
  const start = process.cpuUsage();
  for (let i = 0; i < count; i++) await op();
  const used = process.cpuUsage(start);
  return count / ((used.user + used.system) / 1e6);
}

async function issuance(dir: string): Promise<void> {
  const store = new SqliteStore(path.join(dir, 'issuance.db'));
  const now = Date.now();
  const tokens = await TokenService.open(store, 'https://verifier', 'https://verifier', 900, keyRotationOptions(), now);
  const issuer = await CertificateIssuer.open(store, {}, 900, 'verifier', now);
  const csr = Buffer.from(await buildCertificateRequest(P256PrivateKey.generate(), 'press-7')).toString('base64url');
  let n = 0;
  const certificates = await perCpuSecond(400, async () => {
    const checked = await issuer.check({ csr }, 'press-7');
    await issuer.issue('press-7', `s-${n++}`, checked, Date.now());
  });
  const tokensPerSecond = await perCpuSecond(4000, () =>
    tokens.issue(
      { sub: 'press-7', jkt: 'x', amr: ['signature'], workflow: ['signature'], sessionId: 's', generation: 0 },
      Date.now(),
    ),
  );
  console.log('issuing, per CPU-second of the verifier (P-256 CA, EdDSA token key)');
  table([
    { what: 'client certificates (request checked, signed, recorded)', 'per CPU-second': Math.round(certificates) },
    { what: 'tokens', 'per CPU-second': Math.round(tokensPerSecond) },
    { what: 'certificates vs tokens', 'per CPU-second': `${(certificates / tokensPerSecond).toFixed(3)}x` },
  ]);
  issuer.close();
  await store.close();
}

async function broker(dir: string): Promise<void> {
  const mqtt: typeof import('mqtt') = require('mqtt');
  const storePath = path.join(dir, 'broker.db');
  // The CA first (kept in the store), so the broker can trust it; then the verifier that keeps it in step.
  const first = await startVerifierServer({
    port: 0,
    store: new SqliteStore(storePath),
    adminKey: ADMIN,
    enrollmentToken: ENROL,
    certificates: {},
  });
  const ca = first.verifier.certificateAuthority();
  const crl = await first.verifier.certificateRevocations();
  await first.close();
  const started = await startMosquitto(ca, { crl });
  if (!started.ready) {
    console.log(`broker figures: skipped (${started.skipReason})`);
    return;
  }
  const mosquitto = started.ready;
  const running = await startVerifierServer({
    port: 0,
    store: new SqliteStore(storePath),
    adminKey: ADMIN,
    enrollmentToken: ENROL,
    certificates: {},
    // One device asks 100 times in a row here: far above a real device's rate.
    limits: { challengesPerDevice: { burst: 1e9, perSecond: 1e9 } },
    mosquitto: [{ url: mosquitto.adminUrl, ...BROKER_ADMIN, crlFile: mosquitto.crlFile, pidFile: mosquitto.pidFile }],
  });
  const { verifier } = running;
  const api = async (route: string, body: unknown, headers: Record<string, string> = {}) =>
    (
      await fetch(`${running.url}${route}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
      })
    ).json() as Promise<any>;
  try {
    const device: DeviceIdentity = {
      deviceId: 'bench-press',
      privateKey: newStoredKey('EdDSA').key,
      fingerprintSalt: new Uint8Array(16).fill(7),
      createdAt: new Date().toISOString(),
      storage: 'file',
    };
    const registered = await api(
      '/v1/devices',
      { registration: buildRegistration(device, COMPONENTS) },
      {
        authorization: `Bearer ${ENROL}`,
      },
    );
    if (registered.status !== 'active') throw new Error(`not registered: ${JSON.stringify(registered)}`);
    /** An approved attestation's certificate for `key` (a fresh P-256 TLS key unless given). */
    const certified = async (key = newStoredKey('ES256').key) => {
      const { nonce } = await api('/v1/challenges', { deviceId: device.deviceId });
      const answer = await api('/v1/attestations', {
        attestation: buildAttestation(device, {
          audience: running.url,
          nonce,
          rawComponents: COMPONENTS,
          certificateRequest: await buildCertificateRequest(key, device.deviceId),
        }),
      });
      if (!answer.certificate) throw new Error(`no certificate: ${JSON.stringify(answer)}`);
      return { key: privateKeyPem(key), cert: answer.certificate as string };
    };
    const connect = (credentials: { key: string; cert: string }) =>
      mqtt.connectAsync(mosquitto.tlsUrl, {
        ...credentials,
        ca: mosquitto.serverCa,
        protocolVersion: 5,
        reconnectPeriod: 0,
      });

    const drops: number[] = [];
    for (let run = 0; run < 100; run++) {
      const client: MqttClient = await connect(await certified());
      const closed = new Promise<number>(resolve => client.once('close', () => resolve(performance.now())));
      const revokedAt = performance.now();
      await verifier.setStatus(device.deviceId, 'revoke', { actor: 'bench' });
      drops.push((await closed) - revokedAt);
      client.end(true);
      await verifier.setStatus(device.deviceId, 'reinstate', { actor: 'bench' });
    }
    drops.sort((a, b) => a - b);
    console.log('revocation to Mosquitto dropping the connection, 100 runs');
    table([
      {
        median: `${percentile(drops, 50).toFixed(1)} ms`,
        p99: `${percentile(drops, 99).toFixed(1)} ms`,
        max: `${drops[drops.length - 1].toFixed(1)} ms`,
      },
    ]);

    const rows: Array<Record<string, string | number>> = [];
    const rates: number[] = [];
    for (const alg of ['EdDSA', 'ES256'] as const) {
      const credentials = await certified(newStoredKey(alg).key);
      let count = 0;
      const until = performance.now() + 3000;
      while (performance.now() < until) {
        const client = await connect(credentials);
        await client.endAsync(true);
        count++;
      }
      rates.push(count / 3);
      rows.push({
        'client certificate': alg === 'ES256' ? 'P-256' : 'Ed25519',
        'mTLS connects/s (one after another)': Math.round(count / 3),
      });
    }
    rows.push({
      'client certificate': 'Ed25519 vs P-256',
      'mTLS connects/s (one after another)': `${(rates[0] / rates[1]).toFixed(2)}x`,
    });
    console.log('Mosquitto TLS 1.3 handshake + MQTT 5 CONNECT, client and broker on these 2 cores');
    table(rows);
  } finally {
    await running.close();
    await mosquitto.stop();
  }
}

export async function run(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-brokers-'));
  try {
    await issuance(dir);
    await broker(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
