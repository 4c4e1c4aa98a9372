/**
 * Continuous authentication, side by side in one run:
 *
 * - messages per second through m2m-reauth-timer against a bare pass-through in the same chain,
 *   stamping the token alone and with per-message proofs (goals ≥ 0.8x and ≥ 0.5x), with the
 *   Ed25519 signing rate beside them as the floor a proof per message sets;
 * - m2m-token-check's check per message against one raw node:crypto Ed25519 verify (goal ≥ 0.8x:
 *   the token is verified once and cached, a message costs its proof);
 * - the verifier's load from 1,000 gateways restarted together and re-authenticating for two
 *   hours, with the schedule's jitter and start spread and without: the peak requests per second.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Ed25519PrivateKey } from '../lib/crypto/ed25519';
import type { AttestAnswer } from '../lib/edge/api-client';
import { type Clock, DEFAULT_REAUTH, TokenKeeper } from '../lib/edge/reauth';
import { createProof } from '../lib/proof';
import { TokenChecker } from '../lib/receiver/token-check';
import { SqliteStore, startVerifierServer } from '../lib/verifier';
import { attestation, makeDevice, registration } from '../test/fixtures/device';
import { loadHelper, tempUserDir } from '../test/helpers/node-red';
import { opsPerSecond, table } from './stats';

const ADMIN = 'bench-admin-key-long-enough';
const ENROL = 'bench-enrollment-token-long';
const MESSAGES = 20_000;

async function timerThroughput(verifierUrl: string): Promise<Array<Record<string, string | number>>> {
  const helper = loadHelper();
  const nodes = path.join(__dirname, '..', 'nodes');
  const modules = ['m2m-identity-api', 'm2m-device', 'm2m-reauth-timer'].map(type =>
    require(path.join(nodes, type, `${type}.js`)),
  );
  const change = require(
    path.join(path.dirname(require.resolve('@node-red/nodes/package.json')), 'core', 'function', '15-change.js'),
  );
  const hop = (id: string, wires: string[][]) => ({
    id,
    type: 'change',
    rules: [{ t: 'set', p: 'hop', pt: 'msg', to: id, tot: 'str' }],
    wires,
  });

  let chains = 0;
  async function chain(middle: 'bare' | 'token' | 'proof'): Promise<number> {
    // A fresh user dir is a fresh key: the verifier rightly declines it under an id it knows.
    const deviceId = `bench-${middle}-${++chains}`;
    await new Promise<void>(resolve => helper.startServer(resolve));
    const userDir = tempUserDir();
    helper.settings({ userDir });
    const timer = {
      id: 'middle',
      type: 'm2m-reauth-timer',
      device: 'device',
      fraction: 0.5,
      floor: 30,
      riskScore: 0.6,
      networkPoll: 0,
      offline: 'hold',
      maxMessages: MESSAGES * 2,
      maxBytes: 1e9,
      proofs: middle === 'proof',
      stampHeaders: true,
      stampUserProperties: true,
      wires: [['last'], []],
    };
    const flow = [
      { id: 'api', type: 'm2m-identity-api', baseUrl: verifierUrl, timeout: 5000 },
      {
        id: 'device',
        type: 'm2m-device',
        deviceId,
        api: 'api',
        sources: 'machine-id',
        extra: '{}',
        metadata: '{}',
      },
      hop('first', [['middle']]),
      middle === 'bare' ? hop('middle', [['last']]) : timer,
      hop('last', [['end']]),
      { id: 'end', type: 'helper' },
    ];
    await helper.load([change, ...modules], flow as never, { api: { enrollmentToken: ENROL } } as never);
    const first = helper.getNode('first');
    let arrived = 0;
    helper.getNode('end').on('input', () => arrived++);
    const send = async (count: number) => {
      const target = arrived + count;
      for (let i = 0; i < count; i++) first.receive({ topic: 'plant/press-7', payload: { t: i } });
      while (arrived < target) await new Promise(resolve => setTimeout(resolve, 1));
    };
    await send(10); // the timer's first token (held until then), and the JIT
    const started = process.hrtime.bigint();
    await send(MESSAGES);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    await helper.unload();
    await new Promise<void>(resolve => helper.stopServer(() => resolve()));
    fs.rmSync(userDir, { recursive: true, force: true });
    return MESSAGES / seconds;
  }

  // Two rounds, alternating, the better of each: the first chain in a process also pays the JIT.
  const best = { bare: 0, token: 0, proof: 0 };
  for (let round = 0; round < 2; round++) {
    for (const middle of ['bare', 'token', 'proof'] as const)
      best[middle] = Math.max(best[middle], await chain(middle));
  }
  const { bare, token, proof } = best;
  const key = Ed25519PrivateKey.generate();
  const message = Buffer.from('{"t":21.5}');
  const signs = opsPerSecond(() => key.sign(message));
  return [
    { 'through the chain': 'bare pass-through', 'msg/s': bare, 'vs bare': 1, goal: '' },
    { 'through the chain': 'reauth timer, token only', 'msg/s': token, 'vs bare': token / bare, goal: '≥ 0.8' },
    { 'through the chain': 'reauth timer, token + proof', 'msg/s': proof, 'vs bare': proof / bare, goal: '≥ 0.5' },
    { 'through the chain': 'Ed25519 signs alone (node:crypto)', 'msg/s': signs, 'vs bare': signs / bare, goal: '' },
  ];
}

async function checkThroughput(verifierUrl: string): Promise<Array<Record<string, string | number>>> {
  const device = makeDevice('bench-check');
  const post = async (route: string, body: unknown, headers: Record<string, string> = {}) =>
    (
      await fetch(`${verifierUrl}${route}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
      })
    ).json() as Promise<any>;
  await post('/v1/devices', { registration: registration(device) }, { authorization: `Bearer ${ENROL}` });
  const { nonce } = await post('/v1/challenges', { deviceId: device.deviceId });
  const { token } = (await post('/v1/attestations', {
    attestation: attestation(device, verifierUrl, nonce),
  })) as AttestAnswer;
  const checker = new TokenChecker({
    jwks: new URL(`${verifierUrl}/.well-known/jwks.json`),
    issuer: verifierUrl,
    audience: verifierUrl,
    requireProof: true,
  });
  // Proofs made ahead, so the measurement is the receiver's work alone.
  const proofs = Array.from({ length: MESSAGES }, (_, i) => ({
    payload: { t: i },
    proof: createProof(device.privateKey, { token: token!, payload: { t: i }, target: 't' }),
  }));
  await checker.check({ token, target: 't', ...proofs[0] });
  let i = 1;
  const started = process.hrtime.bigint();
  for (; i < MESSAGES; i++) {
    const result = await checker.check({ token, target: 't', ...proofs[i] });
    if (!result.valid) throw new Error(`bench message refused: ${result.reason}`);
  }
  const checks = (MESSAGES - 1) / (Number(process.hrtime.bigint() - started) / 1e9);
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
  const signed = Buffer.from('x'.repeat(200));
  const signature = crypto.sign(null, signed, privateKey);
  const verifies = opsPerSecond(() => crypto.verify(null, signed, publicKey, signature));
  return [
    { receiver: 'raw node:crypto Ed25519 verify', 'msg/s': verifies, ratio: 1, goal: '' },
    {
      receiver: 'm2m-token-check (lib): token cached, proof checked, jti remembered',
      'msg/s': checks,
      ratio: checks / verifies,
      goal: '≥ 0.8',
    },
  ];
}

/**
 * The verifier's load from `devices` gateways started together, re-authenticating for `hours` on
 * simulated time (approvals are instant): the busiest second's attestations, and the mean.
 */
async function fleetPeak(devices: number, jitter: boolean, hours: number): Promise<{ peak: number; mean: number }> {
  let now = 0;
  let seed = 12345;
  const timers = new Set<{ at: number; fn: () => void }>();
  const clock: Clock = {
    now: () => now,
    setTimeout: (fn, ms) => {
      const timer = { at: now + ms, fn };
      timers.add(timer);
      return timer;
    },
    clearTimeout: handle => {
      timers.delete(handle as { at: number; fn: () => void });
    },
    random: () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    },
  };
  const perSecond = new Map<number, number>();
  const options = jitter ? DEFAULT_REAUTH : { ...DEFAULT_REAUTH, jitter: 0, startSpreadMs: 0 };
  for (let i = 0; i < devices; i++) {
    new TokenKeeper(
      async () => {
        const second = Math.floor(now / 1000);
        perSecond.set(second, (perSecond.get(second) ?? 0) + 1);
        return {
          decision: 'approved',
          reasons: [],
          sessionId: 's',
          token: 't',
          expiresAt: new Date(now + 900_000).toISOString(),
        };
      },
      `d${i}`,
      options,
      clock,
    ).start();
  }
  const end = hours * 3_600_000;
  while (timers.size) {
    let next: { at: number; fn: () => void } | undefined;
    for (const timer of timers) if (!next || timer.at < next.at) next = timer;
    if (!next || next.at > end) break;
    timers.delete(next);
    now = next.at;
    next.fn();
    await new Promise(resolve => setImmediate(resolve));
  }
  const counts = [...perSecond.values()];
  return { peak: Math.max(...counts), mean: counts.reduce((a, b) => a + b, 0) / (end / 1000) };
}

export async function run(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-reauth-'));
  const verifier = await startVerifierServer({
    port: 0,
    store: new SqliteStore(path.join(dir, 'v.db')),
    adminKey: ADMIN,
    enrollmentToken: ENROL,
    limits: { challengesPerAddress: { burst: 1e6, perSecond: 1e6 } },
  });
  try {
    table(await timerThroughput(verifier.url));
    console.log('');
    table(await checkThroughput(verifier.url));
  } finally {
    await verifier.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log('');
  const rows: Array<Record<string, string | number>> = [];
  for (const jitter of [false, true]) {
    const { peak, mean } = await fleetPeak(1000, jitter, 2);
    rows.push({
      '1,000 gateways restarted together, 2 h': jitter ? 'with jitter (±10 %) and start spread (5 s)' : 'without',
      'peak requests/s': 2 * peak,
      'mean requests/s': 2 * mean,
    });
  }
  table(rows);
  console.log('(an attestation is two requests: a challenge and the attestation)');
}
