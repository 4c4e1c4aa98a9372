/**
 * Running a verifier fleet: token-signing keys that rotate (shared through the store), health
 * and readiness probes, Prometheus metrics, and `--workers N`.
 */
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as jose from 'jose';
import type { DeviceIdentity } from '../../lib/edge/keystore';
import { SqliteStore } from '../../lib/verifier';
import { openStore } from '../../lib/verifier/store/open';
import { planRotation } from '../../lib/verifier/tokens';
import { attestation, makeDevice, registration } from '../fixtures/device';
import { type StoreSpec, forEachBackend } from '../helpers/stores';
import { NO_RATE_LIMITS, startCli } from '../helpers/verifier-cli';
import { ADMIN_KEY, ENROLLMENT_TOKEN, admin, enrol, startHarness, type Harness } from './harness';

const DAY = 86_400_000;
const HOUR = 3_600_000;

async function register(v: Harness, device = makeDevice()): Promise<DeviceIdentity> {
  const answer = await v.post('/v1/devices', { registration: registration(device, v.clock.now) }, enrol);
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return device;
}

async function attest(v: Harness, device: DeviceIdentity, audience = v.url) {
  const nonce = (await v.post('/v1/challenges', { deviceId: device.deviceId })).body.nonce;
  return v.post('/v1/attestations', { attestation: attestation(device, audience, nonce, { now: v.clock.now }) });
}

function kidOf(token: string): string | undefined {
  return jose.decodeProtectedHeader(token).kid;
}

describe('verifier: key rotation plan', () => {
  const rotation = { periodMs: 10 * DAY, publishAheadMs: HOUR, retireAfterMs: 20 * 60_000, alg: 'EdDSA' as const };
  const T0 = 1_800_000_000_000;

  it('makes the first key sign at once, and the next one a publish-ahead before its turn', () => {
    const first = planRotation([], T0, rotation).add!;
    assert.equal(first.signsFrom, T0);
    assert.deepEqual(planRotation([first], T0 + 10 * DAY - HOUR - 1, rotation), {}, 'not yet due');
    const next = planRotation([first], T0 + 10 * DAY - HOUR, rotation).add!;
    assert.equal(next.signsFrom, T0 + 10 * DAY);
    assert.equal(next.createdAt, T0 + 10 * DAY - HOUR);
    assert.deepEqual(planRotation([first, next], T0 + 10 * DAY - 1, rotation), {}, 'one upcoming key at a time');
  });

  it('moves to keys of another algorithm when told, published ahead, once', () => {
    const first = planRotation([], T0, rotation).add!;
    const es256 = { ...rotation, alg: 'ES256' as const };
    const next = planRotation([first], T0 + DAY, es256).add!;
    assert.deepEqual([next.alg, next.signsFrom], ['ES256', T0 + DAY + HOUR], 'at once, not at the period');
    assert.deepEqual(planRotation([first, next], T0 + DAY + 1, es256), {}, 'one such key');
    assert.equal(planRotation([first, next], T0 + DAY + HOUR + 20 * 60_000, es256).remove?.[0], first.kid);
  });

  it('retires a key once its successor has signed for the token lifetime plus skew', () => {
    const first = planRotation([], T0, rotation).add!;
    const next = planRotation([first], T0 + 10 * DAY - HOUR, rotation).add!;
    assert.deepEqual(planRotation([first, next], T0 + 10 * DAY + 20 * 60_000 - 1, rotation), {});
    assert.deepEqual(planRotation([first, next], T0 + 10 * DAY + 20 * 60_000, rotation).remove, [first.kid]);
  });

  it('catches up after a long stop: the new key waits a full publish-ahead', () => {
    const first = planRotation([], T0, rotation).add!;
    const late = T0 + 40 * DAY;
    const next = planRotation([first], late, rotation).add!;
    assert.equal(
      next.signsFrom,
      late + HOUR,
      'a cache that learned the JWKS before the stop gets time to learn the new key',
    );
  });
});

forEachBackend('verifier: rotating keys shared by two processes', backend => {
  let db: StoreSpec;
  const running: Harness[] = [];

  beforeEach(async () => {
    db = await backend.fresh();
  });
  afterEach(async () => {
    for (const v of running.splice(0)) await v.stop();
    await db.drop();
  });

  async function start(): Promise<Harness> {
    const v = await startHarness({
      store: await openStore(db.spec),
      publicUrl: 'https://verifier.example',
      keyRotation: { periodMs: 10 * DAY, publishAheadMs: HOUR },
    });
    running.push(v);
    return v;
  }

  it('publishes a new key on every process before it signs, and keeps the old one until its last token expires', async () => {
    const [a, b] = [await start(), await start()];
    const setClock = (now: number) => {
      a.clock.now = now;
      b.clock.now = now;
    };
    const T0 = a.clock.now;
    const jwks = async (v: Harness) =>
      ((await v.get('/.well-known/jwks.json')).body.keys as Array<{ kid: string }>).map(k => k.kid);
    const [k1] = await jwks(a);
    assert.deepEqual(await jwks(b), [k1], 'both processes sign with the one key the store holds');

    const device = await register(a);
    setClock(T0 + 10 * DAY - HOUR + 1);
    await a.verifier.refreshKeys();
    const withNext = await jwks(a);
    assert.equal(withNext.length, 2);
    const k2 = withNext[1];
    await b.verifier.refreshKeys();
    assert.deepEqual(await jwks(b), [k1, k2], 'the other process learns the new key from the store');

    setClock(T0 + 10 * DAY - 60_000);
    const before = await attest(b, device, 'https://verifier.example');
    assert.equal(kidOf(before.body.token), k1, 'the new key does not sign before its time');

    setClock(T0 + 10 * DAY + 1000);
    const after = await attest(a, device, 'https://verifier.example');
    assert.equal(kidOf(after.body.token), k2);
    for (const token of [before.body.token, after.body.token]) {
      const introspected = await b.post('/v1/tokens/introspect', { token }, admin);
      assert.equal(introspected.body.active, true, 'tokens of both keys are good');
    }

    setClock(T0 + 10 * DAY + 20 * 60_000 + 1000);
    await b.verifier.refreshKeys();
    assert.deepEqual(await jwks(b), [k2], 'retired once no token of the old key can be valid');
    await a.verifier.refreshKeys();
    assert.deepEqual(await jwks(a), [k2]);
  });
});

describe('verifier: health, readiness and metrics', () => {
  let v: Harness;
  let store: SqliteStore;
  let dir: string;
  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-ops-'));
    store = new SqliteStore(path.join(dir, 'verifier.db'));
    v = await startHarness({ store }, dir);
  });
  afterEach(async () => {
    await v.stop();
  });

  async function metrics(): Promise<string> {
    const response = await fetch(`${v.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    return response.text();
  }

  it('answers /healthz and /readyz while the store is fine, and /readyz 503 once it is not', async () => {
    assert.deepEqual((await v.get('/healthz')).body, { status: 'ok' });
    assert.deepEqual((await v.get('/readyz')).body, { status: 'ok', store: 'ok' });
    await store.close();
    const ready = await v.get('/readyz');
    assert.equal(ready.status, 503);
    assert.equal(ready.body.code, 'store_unavailable');
    assert.equal((await v.get('/healthz')).status, 200, 'alive still: restarting it would not help');
    assert.match(await metrics(), /^m2m_store_errors_total 1$/m, 'the failed ping is counted');
  });

  it('counts decisions by outcome and reason, and their latency, in Prometheus text', async () => {
    const device = await register(v);
    assert.equal((await attest(v, device)).body.decision, 'approved');
    assert.equal((await attest(v, device, 'https://elsewhere.example')).body.decision, 'declined');
    const text = await metrics();
    assert.match(text, /^# TYPE m2m_attestations_total counter$/m);
    assert.match(text, /^m2m_attestations_total\{decision="approved"\} 1$/m);
    assert.match(text, /^m2m_attestations_total\{decision="declined"\} 1$/m);
    assert.match(text, /^m2m_decision_reasons_total\{decision="declined",reason="wrong_aud"\} 1$/m);
    assert.match(text, /^m2m_attestation_duration_seconds_bucket\{le="\+Inf"\} 2$/m);
    assert.match(text, /^m2m_attestation_duration_seconds_count 2$/m);
    assert.match(text, /^m2m_outbox_events_waiting 3$/m, 'registered + two decisions, no subscriber');
    assert.match(text, /^m2m_verifier_processes 1$/m);
    const buckets = [...text.matchAll(/^m2m_attestation_duration_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)];
    const counts = buckets.map(m => Number(m[2]));
    assert.deepEqual(
      counts,
      [...counts].sort((x, y) => x - y),
      'cumulative buckets',
    );
  });

  it('keeps /metrics to the admin key (x-api-key or bearer)', async () => {
    assert.equal((await v.get('/metrics')).status, 401);
    assert.equal((await v.get('/metrics', { authorization: 'Bearer wrong' })).status, 403);
    assert.equal((await fetch(`${v.url}/metrics`, { headers: admin })).status, 200);
  });
});

describe('verifier: --workers', function () {
  this.timeout(30_000);

  function childPids(pid: number): number[] {
    try {
      return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .filter(Boolean)
        .map(Number);
    } catch {
      return [];
    }
  }

  function alive(pid: number): boolean {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }

  async function until(ok: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await ok())) {
      if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
      await new Promise(resolve => setTimeout(resolve, 100));
    }
  }

  it('holds a rate limit for the machine, whichever worker a connection lands on', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-workers-'));
    const limits = JSON.stringify({ challengesPerDevice: { burst: 3, perSecond: 0.001 } });
    const cli = await startCli(
      ['--port', '0', '--workers', '2', '--store', `sqlite:${path.join(dir, 'v.db')}`, '--limits', limits],
      { M2M_ADMIN_KEY: ADMIN_KEY, M2M_ENROLLMENT_TOKEN: ENROLLMENT_TOKEN },
    );
    try {
      const post = (pathname: string, body: unknown, headers: Record<string, string> = {}) =>
        fetch(cli.url + pathname, {
          method: 'POST',
          // A new connection each time: the cluster hands them to the workers in turn.
          headers: { 'content-type': 'application/json', connection: 'close', ...headers },
          body: JSON.stringify(body),
        }).then(response => response.status);
      const device = makeDevice();
      assert.equal(await post('/v1/devices', { registration: registration(device) }, enrol), 201);
      const statuses: number[] = [];
      for (let i = 0; i < 8; i++) statuses.push(await post('/v1/challenges', { deviceId: device.deviceId }));
      assert.deepEqual(
        [statuses.filter(s => s === 201).length, statuses.filter(s => s === 429).length],
        [3, 5],
        statuses.join(' '),
      );
    } finally {
      cli.child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('serves one port from two processes on one SQLite file, sums their metrics, replaces a crashed worker, and ends with the primary', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-workers-'));
    const cli = await startCli(
      ['--port', '0', '--workers', '2', '--store', `sqlite:${path.join(dir, 'v.db')}`, '--limits', NO_RATE_LIMITS],
      { M2M_ADMIN_KEY: ADMIN_KEY, M2M_ENROLLMENT_TOKEN: ENROLLMENT_TOKEN },
    );
    try {
      const call = async (pathname: string, body?: unknown, headers: Record<string, string> = {}) => {
        const response = await fetch(cli.url + pathname, {
          method: body === undefined ? 'GET' : 'POST',
          headers: { 'content-type': 'application/json', connection: 'close', ...headers },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        return { status: response.status, text: await response.text() };
      };
      const device = makeDevice();
      assert.equal((await call('/v1/devices', { registration: registration(device) }, enrol)).status, 201);
      for (let i = 0; i < 20; i++) {
        const { nonce } = JSON.parse((await call('/v1/challenges', { deviceId: device.deviceId })).text);
        const answer = JSON.parse(
          (await call('/v1/attestations', { attestation: attestation(device, cli.url, nonce) })).text,
        );
        assert.equal(answer.decision, 'approved');
      }
      const metrics = async () => (await call('/metrics', undefined, admin)).text;
      const text = await metrics();
      assert.match(text, /^m2m_verifier_processes 2$/m);
      assert.match(text, /^m2m_attestations_total\{decision="approved"\} 20$/m, 'both processes counted');

      const workers = childPids(cli.child.pid!);
      assert.equal(workers.length, 2);
      process.kill(workers[0], 'SIGKILL');
      await until(async () => {
        const now = childPids(cli.child.pid!);
        return now.length === 2 && !now.includes(workers[0]);
      }, 'a replacement worker');
      await until(async () => /^m2m_verifier_processes 2$/m.test(await metrics()), 'the replacement to answer');
      assert.match(cli.stderr(), /exited with SIGKILL; starting another/);

      const survivors = childPids(cli.child.pid!);
      cli.child.kill('SIGKILL');
      await until(() => survivors.every(pid => !alive(pid)), 'workers to end with their primary');
    } finally {
      cli.child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
