/**
 * The verifier against an attacker and a careless client: each case here is a defect found by
 * probing it (issue #8), kept as the rule it broke.
 */
import * as assert from 'node:assert/strict';
import * as net from 'node:net';
import { rawRequest } from '../helpers/raw-http';
import { openSqlite } from '../../lib/sqlite';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import {
  attestation,
  JWS_TYPES,
  makeDevice,
  RAW_COMPONENTS,
  registration,
  respelled,
  signJws,
} from '../fixtures/device';
import { digestComponents } from '../../lib/edge/fingerprint';
import { buildRegistration } from '../../lib/edge/attestation';
import type { DeviceIdentity } from '../../lib/edge/keystore';
import { admin, enrol, startHarness, type Harness } from './harness';

const get = (target: string) => `GET ${target} HTTP/1.1\r\nHost: verifier\r\nConnection: close\r\n\r\n`;

function sessionsIn(v: Harness): { sessions: number; outbox: number; nonces: number } {
  const db = openSqlite(path.join(v.dir, 'verifier.db'), { readonly: true });
  try {
    const count = (table: string) => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    return { sessions: count('sessions'), outbox: count('outbox'), nonces: count('nonces') };
  } finally {
    db.close();
  }
}

describe('verifier: security and robustness', () => {
  let v: Harness;
  beforeEach(async () => {
    v = await startHarness();
  });
  afterEach(async () => {
    await v.stop();
  });

  async function registered(device: DeviceIdentity = makeDevice()): Promise<DeviceIdentity> {
    const answer = await v.post('/v1/devices', { registration: registration(device, v.clock.now) }, enrol);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return device;
  }
  const nonceFor = async (device: DeviceIdentity) =>
    (await v.post('/v1/challenges', { deviceId: device.deviceId })).body.nonce as string;

  describe('request targets that are not URLs', () => {
    for (const target of ['//', '///', '//%zz', '//[', '//a:b@', '//v1/health', '/v1/devices/%ZZ/revoke']) {
      it(`answers ${JSON.stringify(target)} with problem+json and stays up`, async () => {
        const answer = await rawRequest(v.url, get(target));
        assert.ok(answer.status >= 400 && answer.status < 500, answer.headers);
        assert.match(answer.headers, /content-type: application\/problem\+json/i);
        assert.equal((await v.get('/v1/health')).status, 200);
      });
    }
  });

  describe('keys that sign for anyone', () => {
    const IDENTITY = new Uint8Array(32);
    IDENTITY[0] = 1;
    // Under the identity point, R = identity and S = 0 satisfy [S]B = R + [k]A for every message.
    const ANY_MESSAGE_SIGNATURE = Buffer.concat([Buffer.from(IDENTITY), Buffer.alloc(32)]).toString('base64url');
    const forge = (payload: Record<string, unknown>, typ: string) => {
      const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
      return `${encode({ alg: 'EdDSA', typ })}.${encode(payload)}.${ANY_MESSAGE_SIGNATURE}`;
    };

    it('refuses a registration under the identity point (small order), which would let anyone attest', async () => {
      const payload = {
        deviceId: 'no-key-1',
        jwk: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(IDENTITY).toString('base64url') },
        fingerprint: { salt: '00'.repeat(16), components: {} },
        iat: Math.floor(v.clock.now / 1000),
      };
      const answer = await v.post('/v1/devices', { registration: forge(payload, JWS_TYPES.registration) }, enrol);
      assert.deepEqual([answer.status, answer.body.code], [400, 'bad_key']);
      const attempt = await v.post('/v1/challenges', { deviceId: 'no-key-1' });
      assert.equal(attempt.status, 404);
    });

    it('refuses keys with a small-order component and non-canonical encodings at registration', async () => {
      const p = (1n << 255n) - 19n;
      // y = p + 1 encodes the identity again; y = 2^255 - 1 is no field element at all.
      const encodings = [p + 1n, (1n << 255n) - 1n].map(y =>
        Buffer.from(y.toString(16).padStart(64, '0'), 'hex').reverse().toString('base64url'),
      );
      for (const x of encodings) {
        const payload = {
          deviceId: 'no-key-2',
          jwk: { kty: 'OKP', crv: 'Ed25519', x },
          fingerprint: { salt: '00'.repeat(16), components: {} },
          iat: Math.floor(v.clock.now / 1000),
        };
        const answer = await v.post('/v1/devices', { registration: forge(payload, JWS_TYPES.registration) }, enrol);
        assert.deepEqual([answer.status, answer.body.code], [400, 'bad_key'], x);
      }
    });
  });

  describe('tokens across a revocation', () => {
    it('keeps a token issued before a revocation inactive after the device is reinstated', async () => {
      const device = await registered();
      const { token } = (
        await v.post('/v1/attestations', {
          attestation: attestation(device, v.url, await nonceFor(device), { now: v.clock.now }),
        })
      ).body;
      await v.post(`/v1/devices/${device.deviceId}/revoke`, {}, admin);
      await v.post(`/v1/devices/${device.deviceId}/reinstate`, {}, admin);
      assert.deepEqual((await v.post('/v1/tokens/introspect', { token }, admin)).body, { active: false });
      const fresh = (
        await v.post('/v1/attestations', {
          attestation: attestation(device, v.url, await nonceFor(device), { now: v.clock.now }),
        })
      ).body;
      assert.equal((await v.post('/v1/tokens/introspect', { token: fresh.token }, admin)).body.active, true);
    });
  });

  describe('replays and races', () => {
    it('writes nothing and sends no event for a captured attestation replayed a hundred times', async () => {
      const device = await registered();
      const events: string[] = [];
      v.verifier.onEvent(event => events.push(event.type));
      const captured = attestation(device, v.url, await nonceFor(device), { now: v.clock.now });
      assert.equal((await v.post('/v1/attestations', { attestation: captured })).body.decision, 'approved');
      const before = sessionsIn(v);
      for (let i = 0; i < 100; i++) {
        const replay = await v.post('/v1/attestations', { attestation: captured });
        assert.deepEqual(replay.body.reasons, ['nonce_reused']);
      }
      v.clock.now += 7 * 86_400_000;
      await v.verifier.purge();
      const afterPurge = sessionsIn(v);
      assert.deepEqual(
        (await v.post('/v1/attestations', { attestation: captured })).body.reasons,
        ['nonce_unknown'],
        'a week later the nonce is gone',
      );
      assert.deepEqual(sessionsIn(v), afterPurge, 'no session, no event');
      assert.deepEqual(
        [afterPurge.sessions, afterPurge.outbox],
        [before.sessions, before.outbox],
        'the purge keeps a week of sessions and undelivered events',
      );
      assert.deepEqual(events, ['attestation.decided'], 'one event: the genuine decision');
    });

    it('never approves after a revocation committed, and writes no approval after device.revoked', async () => {
      for (let round = 0; round < 20; round++) {
        const device = await registered();
        const signed = attestation(device, v.url, await nonceFor(device), { now: v.clock.now });
        const [decided, revoked] = await Promise.all([
          v.post('/v1/attestations', { attestation: signed }),
          v.post(`/v1/devices/${device.deviceId}/revoke`, {}, admin),
        ]);
        assert.equal(revoked.status, 200);
        const db = openSqlite(path.join(v.dir, 'verifier.db'), { readonly: true });
        const order = (
          db
            .prepare('SELECT webhook_type, payload FROM outbox WHERE payload LIKE ? ORDER BY seq')
            .all(`%"${device.deviceId}"%`) as Array<{ webhook_type: string; payload: string }>
        ).map(row => `${row.webhook_type}:${JSON.parse(row.payload).data.decision ?? ''}`);
        db.close();
        const revokedAt = order.indexOf('device.revoked:');
        assert.ok(!order.slice(revokedAt).includes('attestation.decided:approved'), order.join(' '));
        if (decided.body.decision === 'approved')
          assert.ok(order.indexOf('attestation.decided:approved') < revokedAt, order.join(' '));
        else assert.deepEqual(decided.body.reasons, ['device_revoked'], 'declined for the revocation it lost to');
      }
    });
  });

  describe('what a caller without credentials can write', () => {
    it('writes nothing for attestations from unknown devices', async () => {
      const before = sessionsIn(v);
      for (let i = 0; i < 50; i++) {
        const answer = await v.post('/v1/attestations', {
          attestation: attestation(makeDevice(), v.url, 'B'.repeat(43), { now: v.clock.now }),
        });
        assert.deepEqual(answer.body.reasons, ['device_unknown']);
      }
      assert.deepEqual(sessionsIn(v), before);
    });

    it('records bad signatures on a known device up to a rate, and declines them all', async () => {
      const device = await registered();
      const forger = { ...device, privateKey: makeDevice().privateKey };
      const before = sessionsIn(v);
      for (let i = 0; i < 40; i++) {
        const answer = await v.post('/v1/attestations', {
          attestation: attestation(forger, v.url, 'C'.repeat(43), { now: v.clock.now }),
        });
        assert.deepEqual(answer.body.reasons, ['bad_signature']);
      }
      const after = sessionsIn(v);
      assert.ok(after.sessions - before.sessions <= 5, `${after.sessions - before.sessions} sessions written`);
      assert.ok(after.sessions - before.sessions >= 1, 'the first attempts are kept for the operator');
    });

    it('rate-limits challenges per device with 429 problem+json and Retry-After', async () => {
      const device = await registered();
      const answers = [];
      for (let i = 0; i < 15; i++) answers.push(await v.post('/v1/challenges', { deviceId: device.deviceId }));
      const limited = answers.filter(a => a.status === 429);
      assert.equal(answers.filter(a => a.status === 201).length, 10);
      assert.equal(limited[0].body.code, 'rate_limited');
      const raw = await fetch(`${v.url}/v1/challenges`, {
        method: 'POST',
        body: JSON.stringify({ deviceId: device.deviceId }),
      });
      assert.equal(raw.status, 429);
      assert.ok(Number(raw.headers.get('retry-after')) >= 1);
      v.clock.now += 2000;
      assert.equal((await v.post('/v1/challenges', { deviceId: device.deviceId })).status, 201);
    });

    it("keeps a device's challenges open to it while another client exhausts them", async () => {
      const device = await registered();
      const ask = (address: string) =>
        v.verifier.challenge({ deviceId: device.deviceId }, address).then(
          () => 201,
          (err: { status?: number }) => err.status,
        );
      const attacker = [];
      for (let i = 0; i < 15; i++) attacker.push(await ask('198.51.100.7'));
      assert.equal(attacker.filter(status => status === 429).length, 5);
      assert.equal(await ask('192.0.2.10'), 201);
    });

    it('rate-limits challenges per client address', async () => {
      await v.stop();
      v = await startHarness({ limits: { challengesPerAddress: { burst: 3, perSecond: 1 } } });
      const devices = [await registered(), await registered(), await registered(), await registered()];
      const statuses = [];
      for (const device of devices)
        statuses.push((await v.post('/v1/challenges', { deviceId: device.deviceId })).status);
      assert.deepEqual(statuses, [201, 201, 201, 429]);
    });

    it('counts clients behind a trusted proxy by X-Forwarded-For, and ignores the header from anyone else', async () => {
      const statuses = async (forwardedFor: string[]) => {
        const device = await registered();
        const answers = [];
        for (const address of forwardedFor)
          answers.push(
            (
              await fetch(`${v.url}/v1/challenges`, {
                method: 'POST',
                headers: { 'content-type': 'application/json', 'x-forwarded-for': address },
                body: JSON.stringify({ deviceId: device.deviceId }),
              })
            ).status,
          );
        return answers;
      };
      const limits = { challengesPerAddress: { burst: 2, perSecond: 0.001 } };
      await v.stop();
      v = await startHarness({ limits, trustedProxies: ['127.0.0.1'] });
      // The proxy appends the address it saw: what a client wrote before it does not count.
      assert.deepEqual(
        await statuses(['198.51.100.7', '198.51.100.7', '203.0.113.1, 198.51.100.7', '192.0.2.10']),
        [201, 201, 429, 201],
      );
      await v.stop();
      v = await startHarness({ limits });
      assert.deepEqual(await statuses(['198.51.100.7', '192.0.2.10', '192.0.2.11']), [201, 201, 429]);
    });

    it('purges expired nonces and old sessions on schedule', async () => {
      const device = await registered();
      for (let i = 0; i < 5; i++) await nonceFor(device);
      await v.post('/v1/attestations', {
        attestation: attestation(device, v.url, await nonceFor(device), { now: v.clock.now }),
      });
      v.clock.now += 12 * 60_000;
      assert.equal((await v.verifier.purge()).nonces, 6);
      v.clock.now += 31 * 86_400_000;
      const purged = await v.verifier.purge();
      assert.equal(purged.sessions, 1);
      assert.equal(sessionsIn(v).nonces, 0);
    });
  });

  describe('connections', () => {
    async function openIdle(count: number): Promise<net.Socket[]> {
      const { port } = new URL(v.url);
      return Promise.all(
        Array.from(
          { length: count },
          () =>
            new Promise<net.Socket>(resolve => {
              const socket = net.connect(Number(port), '127.0.0.1', () => resolve(socket));
              socket.on('error', () => undefined);
              // Reads what it is sent, as a client does: a socket that never reads never sees the
              // end of a 408 answer, so it would not close whichever timeout came first.
              socket.resume();
            }),
        ),
      );
    }
    const closedWithin = (socket: net.Socket, ms: number) =>
      new Promise<boolean>(resolve => {
        if (socket.destroyed || socket.readyState === 'closed') return resolve(true);
        const timer = setTimeout(() => resolve(false), ms);
        socket.once('close', () => {
          clearTimeout(timer);
          resolve(true);
        });
      });

    it('closes connections past the per-address cap at once and idle ones after the timeout', async () => {
      await v.stop();
      v = await startHarness({
        connections: { maxConnectionsPerAddress: 4, idleTimeoutMs: 400, headersTimeoutMs: 300 },
      });
      const sockets = await openIdle(8);
      const closedAtOnce = await Promise.all(sockets.map(socket => closedWithin(socket, 150)));
      assert.equal(closedAtOnce.filter(Boolean).length, 4, 'the four over the cap');
      const closedLater = await Promise.all(sockets.map(socket => closedWithin(socket, 3000)));
      assert.equal(closedLater.filter(Boolean).length, 8, 'idle sockets do not stay');
      assert.equal((await v.get('/v1/health')).status, 200);
    });
  });

  describe('errors from input are 4xx problem+json, never 500', () => {
    it('refuses a valid signature spelled another way, in an attestation and in a token', async () => {
      const device = await registered();
      const nonce = await nonceFor(device);
      const jws = attestation(device, v.url, nonce, { now: v.clock.now });
      assert.deepEqual(
        Buffer.from(respelled(jws).split('.')[2], 'base64url'),
        Buffer.from(jws.split('.')[2], 'base64url'),
      );
      const other = await v.post('/v1/attestations', { attestation: respelled(jws) });
      assert.deepEqual([other.status, other.body.code], [400, 'malformed_jws']);
      const { token } = (await v.post('/v1/attestations', { attestation: jws })).body;
      assert.equal((await v.post('/v1/tokens/introspect', { token }, admin)).body.active, true);
      assert.deepEqual((await v.post('/v1/tokens/introspect', { token: respelled(token) }, admin)).body, {
        active: false,
      });
    });

    it('answers 400 for a signature segment of one character', async () => {
      const device = await registered();
      const jws = attestation(device, v.url, await nonceFor(device), { now: v.clock.now });
      const answer = await v.post('/v1/attestations', { attestation: `${jws.split('.').slice(0, 2).join('.')}.A` });
      assert.deepEqual([answer.status, answer.body.code], [400, 'malformed_jws']);
    });

    it('checks the admin key before it decodes a device id', async () => {
      assert.equal((await v.get('/v1/devices/%ZZ')).status, 401);
      const withKey = await v.get('/v1/devices/%ZZ', admin);
      assert.deepEqual([withKey.status, withKey.body.code], [400, 'invalid_request']);
    });

    it('refuses metadata nested 5,000 deep with 400', async () => {
      const device = makeDevice();
      // Written as text: JSON.stringify itself cannot go this deep.
      const registrationPayload = JSON.parse(
        Buffer.from(
          buildRegistration(device, { 'machine-id': 'x' }, {}, v.clock.now).split('.')[1],
          'base64url',
        ).toString(),
      );
      const text = JSON.stringify({ ...registrationPayload, metadata: 'DEEP' }).replace(
        '"DEEP"',
        `${'{"m":'.repeat(5000)}{}${'}'.repeat(5000)}`,
      );
      const signingInput = `${Buffer.from(JSON.stringify({ alg: 'EdDSA', typ: JWS_TYPES.registration })).toString('base64url')}.${Buffer.from(text).toString('base64url')}`;
      const jws = `${signingInput}.${Buffer.from(device.privateKey.sign(Buffer.from(signingInput))).toString('base64url')}`;
      const answer = await v.post('/v1/devices', { registration: jws }, enrol);
      assert.deepEqual([answer.status, answer.body.code], [400, 'malformed_jws']);
    });

    it('refuses a compressed body with 415 problem+json instead of reading it as JSON', async () => {
      const device = await registered();
      const answer = await fetch(`${v.url}/v1/challenges`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body: zlib.gzipSync(JSON.stringify({ deviceId: device.deviceId })),
      });
      assert.equal(answer.status, 415);
      assert.equal(answer.headers.get('content-type'), 'application/problem+json; charset=utf-8');
      assert.equal(((await answer.json()) as { code: string }).code, 'unsupported_encoding');
      const plain = await fetch(`${v.url}/v1/challenges`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': 'identity' },
        body: JSON.stringify({ deviceId: device.deviceId }),
      });
      assert.equal(plain.status, 201);
    });

    it('answers HEAD like GET, without a body, as load balancers check health', async () => {
      for (const route of ['/healthz', '/readyz', '/.well-known/jwks.json']) {
        const answer = await fetch(`${v.url}${route}`, { method: 'HEAD' });
        assert.equal(answer.status, 200, route);
        assert.equal((await answer.arrayBuffer()).byteLength, 0, route);
      }
      const refused = await fetch(`${v.url}/healthz`, { method: 'DELETE' });
      assert.equal(refused.status, 405);
      assert.equal(refused.headers.get('allow'), 'GET, HEAD');
    });

    it('answers a malformed HTTP request with a problem+json body', async () => {
      const answer = await rawRequest(v.url, 'GARBAGE\r\n\r\n');
      assert.equal(answer.status, 400);
      assert.equal(JSON.parse(answer.body).code, 'bad_request');
    });

    it('answers 413 on a route that reads no body, for a declared and for a chunked body', async () => {
      const declared = await rawRequest(
        v.url,
        `POST /v1/devices/x/revoke HTTP/1.1\r\nHost: v\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n`,
      );
      assert.equal(declared.status, 413);
      assert.equal(JSON.parse(declared.body).code, 'payload_too_large');
      const chunk = 'x'.repeat(64 * 1024);
      const chunks = Array.from({ length: 20 }, () => `${chunk.length.toString(16)}\r\n${chunk}\r\n`).join('');
      const chunked = await rawRequest(
        v.url,
        `GET /v1/health HTTP/1.1\r\nHost: v\r\nTransfer-Encoding: chunked\r\n\r\n${chunks}0\r\n\r\n`,
      );
      assert.equal(chunked.status, 413);
      assert.ok(chunked.closed, 'the connection is closed rather than the body read on');
    });
  });

  describe('audience', () => {
    it('accepts attestations for its public URL written another way (host case, default port)', async () => {
      await v.stop();
      v = await startHarness({ publicUrl: 'http://Gateway.local:80/m2m' });
      const device = await registered();
      for (const aud of ['http://gateway.local/m2m', 'http://GATEWAY.LOCAL:80/m2m/', 'http://Gateway.local:80/m2m']) {
        const answer = await v.post('/v1/attestations', {
          attestation: attestation(device, aud, await nonceFor(device), { now: v.clock.now }),
        });
        assert.equal(answer.body.decision, 'approved', `${aud}: ${answer.body.reasons}`);
      }
      const other = await v.post('/v1/attestations', {
        attestation: attestation(device, 'http://gateway.local:8080/m2m', await nonceFor(device), { now: v.clock.now }),
      });
      assert.deepEqual(other.body.reasons, ['wrong_aud']);
    });
  });

  describe('TinyML evidence without a score', () => {
    async function attestWith(tinyml: Record<string, unknown>) {
      const device = await registered();
      const nonce = await nonceFor(device);
      const jws = signJws(
        {
          iss: device.deviceId,
          aud: v.url,
          nonce,
          iat: Math.floor(v.clock.now / 1000),
          evidence: {
            fingerprint: { components: digestComponents(device.fingerprintSalt, RAW_COMPONENTS).components },
            tinyml,
          },
        },
        JWS_TYPES.attestation,
        device.privateKey,
      );
      return (await v.post('/v1/attestations', { attestation: jws })).body;
    }

    it('reviews, never approves, evidence the edge check could not score', async () => {
      const answer = await attestWith({
        score: null,
        model: 'sensor-behaviour-v1',
        trusted: false,
        reason: 'warming_up',
      });
      assert.deepEqual([answer.decision, answer.reasons, answer.token], ['in_review', ['tinyml_unscored'], undefined]);
    });

    it('reviews a high score the edge check itself called untrusted', async () => {
      const answer = await attestWith({ score: 0.95, model: 'sensor-behaviour-v1', trusted: false, reason: 'ood' });
      assert.deepEqual([answer.decision, answer.reasons], ['in_review', ['tinyml_untrusted']]);
    });
  });
});
