/**
 * Three standalone verifier processes on one PostgreSQL database, as behind a load balancer: the
 * guarantees of one process must hold across them (one approval per nonce, revocation seen at
 * once, nothing lost or approved twice when one is killed mid-stream).
 */
import * as assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { openStore } from '../../lib/verifier/store/open';
import { generateSecret } from '../../lib/webhooks/standard';
import { attestation, makeDevice, registration } from '../fixtures/device';
import { NO_RATE_LIMITS, startCli } from '../helpers/verifier-cli';
import { POSTGRES, type StoreSpec, describeBackend } from '../helpers/stores';
import { startReceiver, type Receiver } from '../helpers/webhook-receiver';

const ADMIN_KEY = 'fleet-admin-key-for-tests';
const ENROLLMENT_TOKEN = 'fleet-enrollment-token';
const PUBLIC_URL = 'https://verifier.plant.example';

interface Fleet {
  urls: string[];
  children: ChildProcess[];
  call(i: number, method: string, pathname: string, body?: unknown, headers?: Record<string, string>): Promise<any>;
}

async function startFleet(spec: string, count: number, env: Record<string, string> = {}): Promise<Fleet> {
  const started = await Promise.all(
    Array.from({ length: count }, () =>
      startCli(
        ['--port', '0', '--workers', '1', '--store', spec, '--public-url', PUBLIC_URL, '--limits', NO_RATE_LIMITS],
        {
          M2M_ADMIN_KEY: ADMIN_KEY,
          M2M_ENROLLMENT_TOKEN: ENROLLMENT_TOKEN,
          ...env,
        },
      ),
    ),
  );
  const urls = started.map(s => s.url);
  return {
    urls,
    children: started.map(s => s.child),
    async call(i, method, pathname, body, headers = {}) {
      const response = await fetch(urls[i % urls.length] + pathname, {
        method,
        headers: { 'content-type': 'application/json', ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      return { status: response.status, body: text ? JSON.parse(text) : undefined };
    },
  };
}

function stopFleet(fleet: Fleet | undefined): Promise<unknown> {
  return Promise.all(
    (fleet?.children ?? []).map(
      child =>
        new Promise(resolve => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve(undefined);
          child.once('exit', resolve);
          child.kill('SIGTERM');
        }),
    ),
  );
}

describeBackend(POSTGRES, 'verifier fleet: three processes, one database', backend => {
  let db: StoreSpec;
  let fleet: Fleet | undefined;
  let receiver: Receiver | undefined;

  beforeEach(async () => {
    db = await backend.fresh();
  });

  afterEach(async () => {
    await stopFleet(fleet);
    await receiver?.close();
    await db.drop();
    fleet = receiver = undefined;
  });

  async function enrolled(on: Fleet) {
    const device = makeDevice();
    const answer = await on.call(
      0,
      'POST',
      '/v1/devices',
      { registration: registration(device) },
      {
        authorization: `Bearer ${ENROLLMENT_TOKEN}`,
      },
    );
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return device;
  }

  async function challenge(on: Fleet, i: number, deviceId: string): Promise<string> {
    const answer = await on.call(i, 'POST', '/v1/challenges', { deviceId });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return answer.body.nonce;
  }

  it('approves one of 100 concurrent submissions of one attestation spread over the three, every time', async function () {
    this.timeout(60_000);
    fleet = await startFleet(db.spec, 3);
    const device = await enrolled(fleet);
    for (let round = 0; round < 3; round++) {
      const signed = attestation(device, PUBLIC_URL, await challenge(fleet, round, device.deviceId));
      const answers = await Promise.all(
        Array.from({ length: 100 }, (_, i) => fleet!.call(i, 'POST', '/v1/attestations', { attestation: signed })),
      );
      assert.ok(answers.every(a => a.status === 200));
      const approved = answers.filter(a => a.body.decision === 'approved');
      assert.equal(approved.length, 1, `round ${round}: ${approved.length} approvals`);
      assert.ok(
        answers.filter(a => a.body.decision === 'declined').every(a => a.body.reasons.includes('nonce_reused')),
      );
    }
  });

  it('declines a device on every process as soon as one of them revokes it', async function () {
    this.timeout(30_000);
    fleet = await startFleet(db.spec, 3);
    const device = await enrolled(fleet);
    const nonces = [await challenge(fleet, 1, device.deviceId), await challenge(fleet, 2, device.deviceId)];
    const first = await fleet.call(1, 'POST', '/v1/attestations', {
      attestation: attestation(device, PUBLIC_URL, await challenge(fleet, 1, device.deviceId)),
    });
    assert.equal(first.body.decision, 'approved', 'process 1 has seen the device active');
    const admin = { 'x-api-key': ADMIN_KEY };
    assert.equal((await fleet.call(0, 'POST', `/v1/devices/${device.deviceId}/revoke`, {}, admin)).status, 200);
    for (const i of [1, 2]) {
      const answer = await fleet.call(i, 'POST', '/v1/attestations', {
        attestation: attestation(device, PUBLIC_URL, nonces[i - 1]),
      });
      assert.equal(answer.body.decision, 'declined', `process ${i}`);
      assert.ok(answer.body.reasons.includes('device_revoked'));
      const introspected = await fleet.call(i, 'POST', '/v1/tokens/introspect', { token: first.body.token }, admin);
      assert.equal(introspected.body.active, false, `process ${i} no longer accepts the token`);
    }
  });

  it('loses nothing when one process is killed with SIGKILL mid-stream', async function () {
    this.timeout(90_000);
    const secret = generateSecret();
    receiver = await startReceiver(() => 204);
    fleet = await startFleet(db.spec, 3, { M2M_WEBHOOK_URL: receiver.url, M2M_WEBHOOK_SECRET: secret });
    const devices = await Promise.all(Array.from({ length: 6 }, () => enrolled(fleet!)));
    const seen: Array<{ sessionId: string; attestation: string }> = [];
    let killed = false;
    let failures = 0;
    const startedAt = Date.now();
    // Six devices attest in a loop, each through the processes in turn; process 1 dies at 1 s.
    const stream = devices.map(async (device, d) => {
      for (let n = 0; Date.now() - startedAt < 3000; n++) {
        const i = (d + n) % 3;
        if (killed && i === 1) continue;
        try {
          const signed = attestation(device, PUBLIC_URL, await challenge(fleet!, i, device.deviceId));
          const answer = await fleet!.call(i, 'POST', '/v1/attestations', { attestation: signed });
          if (answer.body.decision === 'approved') seen.push({ sessionId: answer.body.sessionId, attestation: signed });
        } catch {
          failures++;
        }
      }
    });
    setTimeout(() => {
      killed = true;
      fleet!.children[1].kill('SIGKILL');
    }, 1000);
    await Promise.all(stream);
    assert.ok(seen.length > 50, `only ${seen.length} approvals`);

    const store = await openStore(db.spec);
    try {
      // Every approval a client saw is recorded...
      const approved = new Set(
        (await db.sql("SELECT session_id FROM sessions WHERE decision = 'approved'")).map(
          row => row.session_id as string,
        ),
      );
      assert.deepEqual(
        seen.filter(s => !approved.has(s.sessionId)),
        [],
        'approvals the client saw but the database lost',
      );
      // ...no nonce is approved twice, whoever is asked...
      const replays = [];
      for (let n = 0; n < seen.length; n += 32)
        replays.push(
          ...(await Promise.all(
            seen
              .slice(n, n + 32)
              .map((s, k) =>
                fleet!.call(k % 2 === 0 ? 0 : 2, 'POST', '/v1/attestations', { attestation: s.attestation }),
              ),
          )),
        );
      assert.deepEqual(
        replays.filter(r => r.body.decision !== 'declined' || !r.body.reasons.includes('nonce_reused')),
        [],
      );
      // ...and the survivors deliver every decision event, the killed process's included.
      const decided = new Set<string>();
      const deadline = Date.now() + 45_000;
      while (Date.now() < deadline) {
        decided.clear();
        for (const request of receiver.received) {
          const event = JSON.parse(request.body);
          if (event.type === 'attestation.decided' && event.data.decision === 'approved')
            decided.add(event.data.sessionId);
        }
        if ([...approved].every(id => decided.has(id))) break;
        await new Promise(resolve => setTimeout(resolve, 250));
      }
      assert.deepEqual(
        [...approved].filter(id => !decided.has(id)),
        [],
        'approvals whose event never arrived',
      );
      assert.equal((await store.outboxStats()).dead, 0);
    } finally {
      await store.close();
    }
    console.log(
      `      (${seen.length} approvals seen, ${failures} requests failed with the killed process, ` +
        `${receiver.received.length} webhooks received)`,
    );
  });
});
