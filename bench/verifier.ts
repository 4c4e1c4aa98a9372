/**
 * Attestations per second against the standalone verifier (its own process, so one core) with
 * SQLite on loopback, and p50/p99 round-trip latency. Two workloads: attestations alone (nonces
 * fetched and attestations signed beforehand, so only the verifier's work is timed) and the
 * device's real sequence, challenge then attestation. Targets: ≥ 2,000 attestations/s, p99 ≤ 10 ms.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildAttestation, buildRegistration } from '../lib/edge/attestation';
import { Ed25519PrivateKey } from '../lib/crypto/ed25519';
import type { DeviceIdentity } from '../lib/edge/keystore';
import { NO_RATE_LIMITS, startCli } from '../test/helpers/verifier-cli';
import { percentile, table } from './stats';

const DEVICES = 50;
const CONCURRENCY = 16;
const ATTESTATIONS = 6000;
const LIGHT = 2000;
const COMPONENTS = { 'machine-id': 'bench', 'mac.eth0': '02:00:00:00:00:01', 'cpu.serial': '1000', 'disk.sda': 'WD-1' };

const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });

function post(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any }> {
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...headers },
      },
      res => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', chunk => {
          text += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** Runs `count` jobs with `inFlight` at a time; returns per-job latencies (ms) and wall time (s). */
async function load(
  count: number,
  job: (i: number) => Promise<void>,
  inFlight = CONCURRENCY,
): Promise<{ latencies: number[]; seconds: number }> {
  const latencies: number[] = [];
  let next = 0;
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < count) {
        const i = next++;
        const t0 = process.hrtime.bigint();
        await job(i);
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }),
  );
  return { latencies: latencies.sort((a, b) => a - b), seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

export interface BenchVerifierOptions {
  env?: Record<string, string>;
  /** Default: a fresh SQLite file. */
  store?: string;
  /** Default 1: one process, one core. */
  workers?: number;
}

/** A standalone verifier in its own process(es) with DEVICES registered, and a way to sign attestations for it. */
export async function benchVerifier({ env = {}, store, workers = 1 }: BenchVerifierOptions = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-'));
  const spec = store ?? `sqlite:${path.join(dir, 'verifier.db')}`;
  const args = ['--port', '0', '--store', spec, '--workers', String(workers), '--limits', NO_RATE_LIMITS];
  const { child, url } = await startCli(args, {
    M2M_ENROLLMENT_TOKEN: 'bench-enrollment-token-long',
    M2M_ADMIN_KEY: 'bench-admin-key-long-enough',
    ...env,
  });
  const devices: DeviceIdentity[] = Array.from({ length: DEVICES }, (_, i) => ({
    deviceId: `bench-${i}`,
    privateKey: Ed25519PrivateKey.generate(),
    fingerprintSalt: new Uint8Array(16).fill(i),
    createdAt: '',
    storage: 'file',
  }));
  const stop = async () => {
    child.kill('SIGTERM');
    await new Promise(resolve => child.once('exit', resolve));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const device of devices) {
      const answer = await post(
        `${url}/v1/devices`,
        { registration: buildRegistration(device, COMPONENTS) },
        { authorization: 'Bearer bench-enrollment-token-long' },
      );
      if (answer.status !== 201) throw new Error(`registration failed: ${JSON.stringify(answer.body)}`);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  const attest = async (device: DeviceIdentity, nonce: string) =>
    buildAttestation(device, {
      audience: url,
      nonce,
      rawComponents: COMPONENTS,
      tinyml: { score: 0.95, model: 'bench' },
    });
  /** `count` attestations signed over fresh challenges, round robin over the devices. */
  const prepare = async (count: number) => {
    const prepared: string[] = [];
    for (let i = 0; i < count; i++) {
      const device = devices[i % DEVICES];
      prepared.push(
        await attest(device, (await post(`${url}/v1/challenges`, { deviceId: device.deviceId })).body.nonce),
      );
    }
    return prepared;
  };
  return { url, devices, attest, prepare, stop };
}

/** Attestations alone (challenges fetched and signed beforehand), CONCURRENCY in flight, after a warm-up. */
export async function attestationRun(
  options: BenchVerifierOptions,
  count = 3000,
): Promise<{ perSecond: number; p50: number; p99: number }> {
  const verifier = await benchVerifier(options);
  try {
    const prepared = await verifier.prepare(count + 300);
    await load(300, async i => {
      await post(`${verifier.url}/v1/attestations`, { attestation: prepared[count + i] });
    });
    const timed = await load(count, async i => {
      const { body } = await post(`${verifier.url}/v1/attestations`, { attestation: prepared[i] });
      if (body.decision !== 'approved') throw new Error(`declined: ${JSON.stringify(body)}`);
    });
    return {
      perSecond: count / timed.seconds,
      p50: percentile(timed.latencies, 50),
      p99: percentile(timed.latencies, 99),
    };
  } finally {
    await verifier.stop();
  }
}

/** Attestations per second, saturated, against one verifier process started with `env`. */
export async function attestationsPerSecond(env: Record<string, string>, count = 3000): Promise<number> {
  return (await attestationRun({ env }, count)).perSecond;
}

export async function run(): Promise<void> {
  const { url, devices, attest, prepare, stop } = await benchVerifier();
  try {
    // Warm-up, then attestations alone: challenges fetched and attestations signed up front.
    const prepared = await prepare(ATTESTATIONS + 500 + LIGHT);
    let approved = 0;
    await load(500, async i => {
      await post(`${url}/v1/attestations`, { attestation: prepared[ATTESTATIONS + i] });
    });
    const attestOnly = await load(ATTESTATIONS, async i => {
      if ((await post(`${url}/v1/attestations`, { attestation: prepared[i] })).body.decision === 'approved') approved++;
    });
    // Latency when the verifier is not saturated: a few gateways re-attesting at once.
    const light = await load(
      LIGHT,
      async i => {
        if (
          (await post(`${url}/v1/attestations`, { attestation: prepared[ATTESTATIONS + 500 + i] })).body.decision ===
          'approved'
        )
          approved++;
      },
      4,
    );
    if (approved !== ATTESTATIONS + LIGHT)
      throw new Error(`only ${approved} of ${ATTESTATIONS} attestations were approved`);

    const roundTrips = await load(ATTESTATIONS / 2, async i => {
      const device = devices[i % DEVICES];
      const { body } = await post(`${url}/v1/challenges`, { deviceId: device.deviceId });
      await post(`${url}/v1/attestations`, { attestation: await attest(device, body.nonce) });
    });

    table([
      {
        workload: 'attestation only, 4 in flight',
        requests: LIGHT,
        'per s': Math.round(LIGHT / light.seconds),
        'p50 ms': percentile(light.latencies, 50),
        'p99 ms': percentile(light.latencies, 99),
      },
      {
        workload: 'attestation only',
        requests: ATTESTATIONS,
        'per s': Math.round(ATTESTATIONS / attestOnly.seconds),
        'p50 ms': percentile(attestOnly.latencies, 50),
        'p99 ms': percentile(attestOnly.latencies, 99),
      },
      {
        workload: 'challenge + attestation',
        requests: ATTESTATIONS / 2,
        'per s': Math.round(ATTESTATIONS / 2 / roundTrips.seconds),
        'p50 ms': percentile(roundTrips.latencies, 50),
        'p99 ms': percentile(roundTrips.latencies, 99),
      },
    ]);
    console.log(
      `(${DEVICES} devices, ${CONCURRENCY} requests in flight unless said, keep-alive, verifier in its own process, SQLite WAL)`,
    );
    console.log(
      `target: ≥ 2,000 attestations/s → ${Math.round(ATTESTATIONS / attestOnly.seconds)}/s; p99 ≤ 10 ms → ${percentile(light.latencies, 99).toFixed(2)} ms with 4 in flight, ${percentile(attestOnly.latencies, 99).toFixed(2)} ms saturated with ${CONCURRENCY}`,
    );
  } finally {
    await stop();
  }
}
