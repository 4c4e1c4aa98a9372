/**
 * Event delivery from the verifier: signed per Standard Webhooks (checked by the standardwebhooks
 * package), at least once through failures, timeouts, 410 and restarts, never in the way of
 * attestations.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Webhook } from 'standardwebhooks';
import { SqliteStore, Verifier } from '../../lib/verifier';
import { diditSignature } from '../../lib/webhooks/didit';
import { generateSecret } from '../../lib/webhooks/standard';
import { attestation, makeDevice, registration } from '../fixtures/device';
import { startCli } from '../helpers/verifier-cli';
import { closedPort, startReceiver, type Receiver, type Script } from '../helpers/webhook-receiver';
import { admin, enrol, startHarness, type Harness } from './harness';

const SECRET = generateSecret();
const fast = { retryCapsMs: [20, 20, 20], timeoutMs: 300, pollMs: 50 };

describe('verifier: webhook delivery', function () {
  this.timeout(20_000);
  let receiver: Receiver | undefined;
  let v: Harness | undefined;

  afterEach(async () => {
    await v?.stop();
    await receiver?.close();
    v = receiver = undefined;
  });

  /** What the verifier said of its receivers' health: an error when one starts failing, none when it is back. */
  let health: Array<string | undefined> = [];

  async function start(script: Script, options: Partial<typeof fast> = {}, dir?: string): Promise<Harness> {
    receiver ??= await startReceiver(script);
    health = [];
    v = await startHarness(
      {
        now: Date.now,
        webhooks: { subscribers: [{ url: receiver.url, secret: SECRET }], ...fast, ...options },
        onReceiverHealth: (_receiver, error) => health.push(error),
      },
      dir,
    );
    return v;
  }

  async function register(harness: Harness, device = makeDevice()) {
    const answer = await harness.post('/v1/devices', { registration: registration(device) }, enrol);
    assert.equal(answer.status, 201);
    return device;
  }

  async function deliveries(harness: Harness, status?: string) {
    const answer = await harness.get(`/v1/webhooks/deliveries${status ? `?status=${status}` : ''}`, admin);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body.deliveries as Array<{ id: number; status: string; attempts: number; lastError?: string }>;
  }

  async function until<T>(what: () => Promise<T>, ok: (value: T) => boolean, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await what();
      if (ok(value)) return value;
      if (Date.now() > deadline) throw new Error(`gave up waiting: ${JSON.stringify(value)}`);
      await new Promise(resolve => setTimeout(resolve, 50));
    }
  }

  it('sends each event signed per Standard Webhooks and Didit-style X-Signature, its id in webhook-id', async () => {
    const harness = await start(() => 204);
    const ids: string[] = [];
    harness.verifier.onEvent(event => ids.push(event.id));
    const device = await register(harness);
    await harness.post(`/v1/devices/${device.deviceId}/revoke`, {}, admin);
    const received = await receiver!.waitFor(2);
    const oracle = new Webhook(SECRET);
    const events = received.map(request => ({
      event: oracle.verify(request.body, request.headers as Record<string, string>) as any,
      id: request.headers['webhook-id'],
    }));
    assert.deepEqual(events.map(e => e.event.type).sort(), ['device.registered', 'device.revoked']);
    assert.deepEqual(events.map(e => e.id).sort(), [...ids].sort());
    for (const request of received) {
      assert.equal(request.headers['x-signature'], diditSignature(SECRET, request.body));
      assert.equal(request.headers['x-timestamp'], request.headers['webhook-timestamp']);
      assert.equal(request.headers['content-type'], 'application/json');
    }
    const delivered = await until(
      () => deliveries(harness),
      list => list.every(d => d.status === 'delivered'),
    );
    assert.deepEqual(
      delivered.map(d => d.attempts),
      [1, 1],
    );
  });

  it('retries 500, 429, a timeout and a reset, with the same id, until the receiver recovers', async () => {
    const answers: Array<number | 'hang'> = [500, 429, 'hang', 503, 200];
    const harness = await start((_request, n) => answers[n] ?? 200, { retryCapsMs: [20, 20, 20, 20, 20] });
    await register(harness);
    const received = await receiver!.waitFor(5);
    assert.equal(new Set(received.map(r => r.headers['webhook-id'])).size, 1);
    const [delivery] = await until(
      () => deliveries(harness),
      list => list[0]?.status === 'delivered',
    );
    assert.equal(delivery.attempts, 5);
  });

  it('gives up after the schedule: dead, listed for an operator, delivered when replayed', async () => {
    let healthy = false;
    const harness = await start(() => (healthy ? 200 : 500), { retryCapsMs: [10, 10] });
    await register(harness);
    const [dead] = await until(
      () => deliveries(harness, 'dead'),
      list => list.length === 1,
    );
    assert.deepEqual([dead.attempts, dead.lastError], [3, 'answered 500']);
    assert.equal(receiver!.received.length, 3);
    healthy = true;
    const replay = await harness.post(`/v1/webhooks/deliveries/${dead.id}/replay`, {}, admin);
    assert.equal(replay.status, 202);
    await until(
      () => deliveries(harness, 'delivered'),
      list => list.length === 1,
    );
    assert.equal(receiver!.received.length, 4);
    assert.equal(
      (await harness.post(`/v1/webhooks/deliveries/${dead.id}/replay`, {}, { 'x-api-key': 'x' })).status,
      403,
    );
    assert.equal((await harness.post('/v1/webhooks/deliveries/99999/replay', {}, admin)).status, 409);
    assert.equal((await harness.post('/v1/webhooks/deliveries/abc/replay', {}, admin)).status, 400);
    assert.equal((await harness.get('/v1/webhooks/deliveries?status=lost', admin)).status, 400);
  });

  it('stops sending to a subscriber that answers 410 Gone, and resumes when an operator enables it', async () => {
    let gone = true;
    const harness = await start(() => (gone ? 410 : 200));
    await register(harness);
    const [subscriber] = await until(
      async () => (await harness.get('/v1/webhooks/subscribers', admin)).body.subscribers,
      (list: any[]) => list[0]?.status === 'disabled',
    );
    assert.equal(subscriber.disabledReason, 'answered 410 Gone');
    await register(harness); // not attempted while disabled
    await new Promise(resolve => setTimeout(resolve, 300));
    assert.equal(receiver!.received.length, 1);
    gone = false;
    const enabled = await harness.post(`/v1/webhooks/subscribers/${subscriber.id}/enable`, {}, admin);
    assert.deepEqual([enabled.status, enabled.body.status], [200, 'active']);
    // The event that met the 410 is still owed; the one written while disabled was not queued.
    await until(
      () => deliveries(harness, 'delivered'),
      list => list.length === 1,
    );
    assert.equal(receiver!.received.length, 2);
    assert.equal(receiver!.received[0].headers['webhook-id'], receiver!.received[1].headers['webhook-id']);
  });

  it('delivers what was pending when the verifier stopped, after it starts again, once', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-delivery-'));
    const port = await closedPort();
    const down = await startHarness(
      { now: Date.now, webhooks: { subscribers: [{ url: `http://127.0.0.1:${port}/hook`, secret: SECRET }], ...fast } },
      dir,
    );
    for (let i = 0; i < 3; i++) await register(down);
    await until(
      () => deliveries(down),
      list => list.length === 3 && list.every(d => d.attempts >= 1),
    );
    await down.close();

    receiver = await startReceiver(() => 200, port);
    const seen = new Map<string, number>();
    const up = await startHarness(
      { now: Date.now, webhooks: { subscribers: [{ url: receiver.url, secret: SECRET }], ...fast } },
      dir,
    );
    v = up;
    await until(
      () => deliveries(up, 'delivered'),
      list => list.length === 3,
    );
    for (const request of receiver.received) {
      const id = String(request.headers['webhook-id']);
      seen.set(id, (seen.get(id) ?? 0) + 1);
    }
    assert.deepEqual([...seen.values()], [1, 1, 1]);
  });

  it('a subscriber that never answers does not hold up attestations', async () => {
    const harness = await start(() => 'hang', { timeoutMs: 60_000 });
    for (let i = 0; i < 20; i++) {
      const device = await register(harness);
      const nonce = (await harness.post('/v1/challenges', { deviceId: device.deviceId })).body.nonce;
      const answer = await harness.post('/v1/attestations', {
        attestation: attestation(device, harness.url, nonce),
      });
      assert.equal(answer.body.decision, 'approved');
    }
    // Eight requests hang at the receiver (the worker's concurrency); the rest wait their turn.
    await new Promise(resolve => setTimeout(resolve, 200));
    assert.equal(receiver!.received.length, 8);
    const pending = await deliveries(harness, 'pending');
    assert.equal(pending.length, 40);
  });

  it('a failing subscriber is probed now and then, not tried once per event; nothing is lost', async () => {
    let healthy = false;
    const harness = await start(() => (healthy ? 200 : 500), { retryCapsMs: Array(9).fill(50) });
    for (let i = 0; i < 40; i++) await register(harness);
    await new Promise(resolve => setTimeout(resolve, 500));
    // Three failures open the breaker; in-flight attempts and a probe or two may follow.
    assert.ok(receiver!.received.length <= 3 + 8 * 2, `${receiver!.received.length} attempts for 40 events`);
    healthy = true;
    await until(
      () => deliveries(harness, 'delivered'),
      list => list.length === 40,
      15_000,
    );
  });

  it('sends a receiver its backlog as soon as it answers again, not at the end of each drawn backoff', async function () {
    this.timeout(40_000);
    let up = false;
    const harness = await start(() => (up ? 204 : 503), { retryCapsMs: [10, 10 * 60_000, 10 * 60_000] });
    for (let i = 0; i < 5; i++) await register(harness);
    await until(
      () => deliveries(harness, 'pending'),
      list => list.length === 5 && list.every(d => d.attempts >= 2),
    );
    up = true;
    const back = Date.now();
    await register(harness);
    // Within the breaker's next probe (seconds here), not the ten minutes each delivery drew.
    await until(
      () => deliveries(harness, 'delivered'),
      list => list.length === 6,
      20_000,
    );
    assert.ok(Date.now() - back < 20_000);
    assert.deepEqual(health, ['answered 503', undefined], 'told once when it failed, once when it was back');
  });

  it('refuses a subscriber without a usable whsec_ secret at start-up', async () => {
    const store = new SqliteStore(':memory:');
    for (const secret of ['', 'password1', `whsec_${Buffer.alloc(8).toString('base64')}`]) {
      await assert.rejects(
        Verifier.create({
          store,
          publicUrl: 'http://127.0.0.1:1/',
          webhooks: { subscribers: [{ url: 'http://127.0.0.1:1/hook', secret }] },
        }),
        (err: any) => err.code === 'bad_config',
      );
    }
    await store.close();
  });

  it('the standalone verifier, killed with -9 before delivering, delivers after its restart', async function () {
    this.timeout(30_000);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-delivery-cli-'));
    const port = await closedPort();
    const args = ['--port', '0', '--store', `sqlite:${path.join(dir, 'v.db')}`];
    const env = {
      M2M_ENROLLMENT_TOKEN: 'cli-enrollment-token',
      M2M_ADMIN_KEY: 'cli-admin-key-long-enough',
      M2M_WEBHOOK_URL: `http://127.0.0.1:${port}/hook`,
      M2M_WEBHOOK_SECRET: SECRET,
    };
    const first = await startCli(args, env);
    const device = makeDevice();
    const answer = await fetch(`${first.url}/v1/devices`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer cli-enrollment-token' },
      body: JSON.stringify({ registration: registration(device) }),
    });
    assert.equal(answer.status, 201);
    // Killed once its first attempt has failed: the event is owed, with a retry scheduled.
    await until(
      async () =>
        (
          await fetch(`${first.url}/v1/webhooks/deliveries`, { headers: { 'x-api-key': 'cli-admin-key-long-enough' } })
        ).json(),
      (list: any) => list.deliveries[0]?.lastError === 'ECONNREFUSED',
    );
    first.child.kill('SIGKILL');
    await new Promise(resolve => first.child.once('exit', resolve));

    receiver = await startReceiver(() => 200, port);
    const second = await startCli(args, env);
    try {
      // The first retry waits up to 10 s (full jitter below the first cap).
      const [request] = await receiver.waitFor(1, 15_000);
      const event = new Webhook(SECRET).verify(request.body, request.headers as Record<string, string>) as any;
      assert.deepEqual([event.type, event.data.deviceId], ['device.registered', device.deviceId]);
    } finally {
      second.child.kill('SIGTERM');
      await new Promise(resolve => second.child.once('exit', resolve));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the standalone verifier delivers to every subscriber of M2M_WEBHOOKS, each signed with its own secret', async () => {
    const [first, second] = [await startReceiver(() => 204), await startReceiver(() => 204)];
    const [firstSecret, secondSecret] = [generateSecret(), generateSecret()];
    const cli = await startCli(['--port', '0', '--store', 'sqlite::memory:'], {
      M2M_ENROLLMENT_TOKEN: 'cli-enrollment-token',
      M2M_WEBHOOKS: JSON.stringify([
        { url: first.url, secret: firstSecret },
        { url: second.url, secret: secondSecret },
      ]),
    });
    try {
      await fetch(`${cli.url}/v1/devices`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer cli-enrollment-token' },
        body: JSON.stringify({ registration: registration(makeDevice()) }),
      });
      for (const [receiving, secret] of [
        [first, firstSecret],
        [second, secondSecret],
      ] as const) {
        const [request] = await receiving.waitFor(1);
        assert.equal(
          (new Webhook(secret).verify(request.body, request.headers as Record<string, string>) as any).type,
          'device.registered',
        );
      }
    } finally {
      cli.child.kill('SIGTERM');
      await new Promise(resolve => cli.child.once('exit', resolve));
      await first.close();
      await second.close();
    }
  });

  it('the standalone verifier stops at start-up with a clear message on a bad webhook secret', async () => {
    await assert.rejects(
      startCli(['--port', '0', '--store', 'sqlite::memory:'], {
        M2M_WEBHOOK_URL: 'http://127.0.0.1:1/hook',
        M2M_WEBHOOK_SECRET: 'hunter2',
      }),
      /not a whsec_ secret.*--new-webhook-secret/,
    );
  });
});
