import * as assert from 'node:assert/strict';
import * as jose from 'jose';
import { Ed25519PrivateKey } from '../../lib/crypto/ed25519';
import type { DeviceIdentity } from '../../lib/edge/keystore';
import { JWS_TYPES, attestation, jwsWithHeader, makeDevice, registration, signJws } from '../fixtures/device';
import type { VerifierEvent } from '../../lib/verifier';
import { admin, enrol, startHarness, type Harness } from './harness';

describe('verifier: identity API v1 over HTTP', () => {
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
  async function nonceFor(device: DeviceIdentity): Promise<string> {
    const answer = await v.post('/v1/challenges', { deviceId: device.deviceId });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return answer.body.nonce;
  }
  async function attest(device: DeviceIdentity, nonce: string, extra: Parameters<typeof attestation>[3] = {}) {
    return v.post('/v1/attestations', {
      attestation: attestation(device, v.url, nonce, { now: v.clock.now, ...extra }),
    });
  }

  describe('registration', () => {
    it('registers a device with a valid enrollment token: 201 active', async () => {
      const device = makeDevice('press-7');
      const answer = await v.post('/v1/devices', { registration: registration(device, v.clock.now) }, enrol);
      assert.deepEqual([answer.status, answer.body], [201, { deviceId: 'press-7', status: 'active' }]);
    });

    it('answers 200 when the same key registers again (idempotent)', async () => {
      const device = await registered();
      const again = await v.post('/v1/devices', { registration: registration(device, v.clock.now) }, enrol);
      assert.deepEqual([again.status, again.body.status], [200, 'active']);
    });

    it('answers 409 when another key claims a known device id', async () => {
      const device = await registered();
      const impostor = { ...makeDevice(device.deviceId) };
      const answer = await v.post('/v1/devices', { registration: registration(impostor, v.clock.now) }, enrol);
      assert.deepEqual([answer.status, answer.body.code], [409, 'key_conflict']);
    });

    it('lets a device that lost its key register a new one only after an admin allows a re-key', async () => {
      const device = await registered();
      const { token } = (await attest(device, await nonceFor(device))).body;
      const reimaged = makeDevice(device.deviceId);
      const refused = await v.post('/v1/devices', { registration: registration(reimaged, v.clock.now) }, enrol);
      assert.deepEqual([refused.status, refused.body.code], [409, 'key_conflict'], 'the device alone cannot');
      const allowed = await v.post(
        `/v1/devices/${device.deviceId}/rekey`,
        { reason: 'gateway re-imaged', actor: 'anna' },
        admin,
      );
      assert.equal(allowed.status, 200, JSON.stringify(allowed.body));
      assert.equal(new Date(allowed.body.rekeyUntil).getTime(), v.clock.now + 24 * 3_600_000);
      const rekeyed = await v.post('/v1/devices', { registration: registration(reimaged, v.clock.now) }, enrol);
      assert.deepEqual([rekeyed.status, rekeyed.body.status], [201, 'active']);
      assert.equal((await attest(reimaged, await nonceFor(reimaged))).body.decision, 'approved', 'the new key attests');
      assert.deepEqual(
        (await attest(device, await nonceFor(device))).body.reasons,
        ['bad_signature'],
        'the old one no more',
      );
      assert.deepEqual((await v.post('/v1/tokens/introspect', { token }, admin)).body, { active: false });
      const again = await v.post(
        '/v1/devices',
        { registration: registration(makeDevice(device.deviceId), v.clock.now) },
        enrol,
      );
      assert.equal(again.status, 409, 'the window closes with the re-key');
      const history = (await v.get(`/v1/devices/${device.deviceId}/history`, admin)).body.audit;
      assert.deepEqual(
        history.map((entry: { action: string; actor: string }) => [entry.action, entry.actor]),
        [
          ['rekeyed', 'device'],
          ['rekey_allowed', 'anna'],
        ],
      );
    });

    it('lets no re-key window open for a revoked device, and none outlive its day', async () => {
      const device = await registered();
      await v.post(`/v1/devices/${device.deviceId}/revoke`, {}, admin);
      assert.equal((await v.post(`/v1/devices/${device.deviceId}/rekey`, {}, admin)).status, 409);
      const other = await registered();
      assert.equal((await v.post(`/v1/devices/${other.deviceId}/rekey`, {}, admin)).status, 200);
      v.clock.now += 24 * 3_600_000 + 1000;
      const late = await v.post(
        '/v1/devices',
        { registration: registration(makeDevice(other.deviceId), v.clock.now) },
        enrol,
      );
      assert.equal(late.status, 409);
      assert.equal((await v.post('/v1/devices/nobody/rekey', {}, admin)).status, 404);
      assert.equal((await v.post(`/v1/devices/${other.deviceId}/rekey`, {})).status, 401);
    });

    it('answers 401 without an enrollment token and 403 with a wrong one', async () => {
      const device = makeDevice();
      const missing = await v.post('/v1/devices', { registration: registration(device, v.clock.now) });
      const wrong = await v.post(
        '/v1/devices',
        { registration: registration(device, v.clock.now) },
        { authorization: 'Bearer guess' },
      );
      assert.deepEqual([missing.status, wrong.status], [401, 403]);
      assert.match(missing.type, /^application\/problem\+json/);
    });

    it('refuses a registration not signed by the key it carries (proof of possession)', async () => {
      const device = makeDevice();
      const other = Ed25519PrivateKey.generate();
      const forged = signJws(
        {
          deviceId: device.deviceId,
          jwk: device.privateKey.publicKey.toJwk(),
          fingerprint: { salt: '00'.repeat(16), components: {} },
          iat: Math.floor(v.clock.now / 1000),
        },
        JWS_TYPES.registration,
        other,
      );
      const answer = await v.post('/v1/devices', { registration: forged }, enrol);
      assert.deepEqual([answer.status, answer.body.code], [400, 'bad_signature']);
    });

    it('refuses a registration whose iat is more than 5 minutes off', async () => {
      const answer = await v.post(
        '/v1/devices',
        { registration: registration(makeDevice(), v.clock.now - 301_000) },
        enrol,
      );
      assert.deepEqual([answer.status, answer.body.code], [400, 'stale_iat']);
    });

    it('keeps new devices pending under manual approval until an admin approves', async () => {
      await v.stop();
      v = await startHarness({ manualApproval: true });
      const device = makeDevice();
      const answer = await v.post('/v1/devices', { registration: registration(device, v.clock.now) }, enrol);
      assert.equal(answer.body.status, 'pending');
      const before = await attest(device, await nonceFor(device));
      assert.deepEqual([before.body.decision, before.body.reasons], ['declined', ['device_pending']]);
      assert.equal((await v.post(`/v1/devices/${device.deviceId}/approve`, {}, admin)).body.status, 'active');
      assert.equal((await attest(device, await nonceFor(device))).body.decision, 'approved');
    });
  });

  describe('challenge and attestation', () => {
    it('approves a registered device and returns a token that jose verifies against the JWKS', async () => {
      const device = await registered();
      const answer = await attest(device, await nonceFor(device), {
        tinyml: { score: 0.93, model: 'sensor-behaviour-v1' },
      });
      assert.equal(answer.status, 200);
      assert.equal(answer.body.decision, 'approved', JSON.stringify(answer.body));
      assert.deepEqual(answer.body.reasons, []);
      const jwks = jose.createLocalJWKSet((await v.get('/.well-known/jwks.json')).body);
      const { payload, protectedHeader } = await jose.jwtVerify(answer.body.token, jwks, {
        issuer: v.url,
        audience: v.url,
        currentDate: new Date(v.clock.now),
      });
      assert.equal(protectedHeader.alg, 'EdDSA');
      assert.equal(payload.sub, device.deviceId);
      assert.equal((payload.cnf as { jkt: string }).jkt, device.privateKey.publicKey.thumbprint());
      assert.deepEqual(payload.amr, ['signature', 'fingerprint', 'tinyml']);
      assert.equal(payload.exp! - payload.iat!, 15 * 60);
      assert.equal(new Date(answer.body.expiresAt).getTime(), payload.exp! * 1000);
      assert.ok(typeof payload.jti === 'string');
    });

    it('issues a 32-byte base64url nonce that expires after 60 s', async () => {
      const device = await registered();
      const answer = await v.post('/v1/challenges', { deviceId: device.deviceId });
      assert.equal(Buffer.from(answer.body.nonce, 'base64url').length, 32);
      assert.equal(new Date(answer.body.expiresAt).getTime(), v.clock.now + 60_000);
    });

    it('answers 404 problem+json for a challenge to an unknown device', async () => {
      const answer = await v.post('/v1/challenges', { deviceId: 'nobody' });
      assert.deepEqual([answer.status, answer.body.code], [404, 'device_unknown']);
      assert.match(answer.type, /problem\+json/);
    });

    it('declines a reused nonce', async () => {
      const device = await registered();
      const nonce = await nonceFor(device);
      assert.equal((await attest(device, nonce)).body.decision, 'approved');
      const replay = await attest(device, nonce);
      assert.deepEqual(
        [replay.body.decision, replay.body.reasons, replay.body.token],
        ['declined', ['nonce_reused'], undefined],
      );
    });

    it('declines an expired nonce', async () => {
      const device = await registered();
      const nonce = await nonceFor(device);
      v.clock.now += 60_001;
      assert.deepEqual((await attest(device, nonce)).body.reasons, ['nonce_expired']);
    });

    it('declines a nonce it never issued', async () => {
      const device = await registered();
      assert.deepEqual((await attest(device, 'A'.repeat(43))).body.reasons, ['nonce_unknown']);
    });

    it('declines a nonce issued to another device, and leaves it usable by its owner', async () => {
      const owner = await registered();
      const thief = await registered();
      const nonce = await nonceFor(owner);
      assert.deepEqual((await attest(thief, nonce)).body.reasons, ['nonce_other_device']);
      assert.equal((await attest(owner, nonce)).body.decision, 'approved');
    });

    it('declines a bad signature without consuming the nonce', async () => {
      const device = await registered();
      const nonce = await nonceFor(device);
      const forger = { ...device, privateKey: Ed25519PrivateKey.generate() };
      assert.deepEqual((await attest(forger, nonce)).body.reasons, ['bad_signature']);
      assert.equal((await attest(device, nonce)).body.decision, 'approved');
    });

    it('declines an attestation meant for another verifier (aud)', async () => {
      const device = await registered();
      const answer = await v.post('/v1/attestations', {
        attestation: attestation(device, 'https://other-verifier.example', await nonceFor(device), {
          now: v.clock.now,
        }),
      });
      assert.deepEqual(answer.body.reasons, ['wrong_aud']);
    });

    it('tolerates a trailing slash on aud', async () => {
      const device = await registered();
      const answer = await v.post('/v1/attestations', {
        attestation: attestation(device, `${v.url}/`, await nonceFor(device), { now: v.clock.now }),
      });
      assert.equal(answer.body.decision, 'approved');
    });

    it('declines an iat more than 5 minutes off, and the nonce is spent', async () => {
      const device = await registered();
      const nonce = await nonceFor(device);
      assert.deepEqual((await attest(device, nonce, { now: v.clock.now - 301_000 })).body.reasons, ['stale_iat']);
      assert.deepEqual((await attest(device, nonce)).body.reasons, ['nonce_reused']);
    });

    it('declines when fewer than 75 % of fingerprint components match, accepts 3 of 4', async () => {
      const device = await registered();
      const swappedNic = {
        'machine-id': 'a1b2c3',
        'mac.eth0': 'new-nic',
        'cpu.serial': '1000000012345678',
        'disk.mmcblk0': 'cid-42',
      };
      assert.equal(
        (await attest(device, await nonceFor(device), { rawComponents: swappedNic })).body.decision,
        'approved',
      );
      const otherBoard = { ...swappedNic, 'cpu.serial': 'other' };
      assert.deepEqual((await attest(device, await nonceFor(device), { rawComponents: otherBoard })).body.reasons, [
        'fingerprint_mismatch',
      ]);
    });

    it('declines fingerprint evidence under another salt, naming the reason once', async () => {
      const device = await registered();
      const nonce = await nonceFor(device);
      const jws = signJws(
        {
          iss: device.deviceId,
          aud: v.url,
          nonce,
          iat: Math.floor(v.clock.now / 1000),
          evidence: { fingerprint: { salt: 'ff'.repeat(16), components: { 'machine-id': '0'.repeat(64) } } },
        },
        JWS_TYPES.attestation,
        device.privateKey,
      );
      const answer = await v.post('/v1/attestations', { attestation: jws });
      assert.deepEqual([answer.body.decision, answer.body.reasons], ['declined', ['fingerprint_mismatch']]);
    });

    it('declines an attestation that leaves out the fingerprint its device registered', async () => {
      // What a copied key on other hardware would send: a valid signature and no fingerprint to compare.
      const device = await registered();
      const jws = signJws(
        { iss: device.deviceId, aud: v.url, nonce: await nonceFor(device), iat: Math.floor(v.clock.now / 1000) },
        JWS_TYPES.attestation,
        device.privateKey,
      );
      const answer = await v.post('/v1/attestations', { attestation: jws });
      assert.deepEqual([answer.body.decision, answer.body.reasons], ['declined', ['fingerprint_missing']]);
    });

    it('declines a TinyML score under 0.6 and puts one under 0.8 in review without a token', async () => {
      const device = await registered();
      const low = await attest(device, await nonceFor(device), { tinyml: { score: 0.41, model: 'm' } });
      assert.deepEqual([low.body.decision, low.body.reasons], ['declined', ['tinyml_low']]);
      const middling = await attest(device, await nonceFor(device), { tinyml: { score: 0.7, model: 'm' } });
      assert.deepEqual([middling.body.decision, middling.body.token], ['in_review', undefined]);
    });

    it('approves exactly one of 20 concurrent submissions of one attestation', async () => {
      const device = await registered();
      const jws = attestation(device, v.url, await nonceFor(device), { now: v.clock.now });
      const answers = await Promise.all(
        Array.from({ length: 20 }, () => v.post('/v1/attestations', { attestation: jws })),
      );
      const decisions = answers.map(a => a.body.decision);
      assert.equal(decisions.filter(d => d === 'approved').length, 1);
      assert.equal(answers.filter(a => a.body.reasons?.[0] === 'nonce_reused').length, 19);
    });

    it('declines an unknown device with a 200 answer', async () => {
      const ghost = makeDevice();
      const answer = await v.post('/v1/attestations', {
        attestation: attestation(ghost, v.url, 'B'.repeat(43), { now: v.clock.now }),
      });
      assert.deepEqual([answer.status, answer.body.reasons], [200, ['device_unknown']]);
    });
  });

  describe('malformed input', () => {
    const payload = { iss: 'x', aud: 'y', nonce: 'A'.repeat(43), iat: 1 };
    for (const alg of ['none', 'HS256', 'ES384']) {
      it(`answers 400 for alg ${alg}`, async () => {
        const answer = await v.post('/v1/attestations', {
          attestation: jwsWithHeader({ alg, typ: JWS_TYPES.attestation }, payload),
        });
        assert.deepEqual([answer.status, answer.body.code], [400, 'unsupported_alg']);
      });
    }

    it('answers 400 for a registration JWS sent as an attestation (typ)', async () => {
      const answer = await v.post('/v1/attestations', { attestation: registration(makeDevice(), v.clock.now) });
      assert.deepEqual([answer.status, answer.body.code], [400, 'wrong_typ']);
    });

    it('answers 400 problem+json for malformed JSON', async () => {
      const answer = await v.post('/v1/attestations', '{"attestation": ');
      assert.deepEqual([answer.status, answer.body.code], [400, 'invalid_request']);
      assert.match(answer.type, /^application\/problem\+json/);
    });

    it('answers 400 for a malformed JWS and for a payload missing fields', async () => {
      assert.equal((await v.post('/v1/attestations', { attestation: 'not-a-jws' })).body.code, 'malformed_jws');
      const missingNonce = signJws(
        { iss: 'x', aud: v.url, iat: 1 },
        JWS_TYPES.attestation,
        Ed25519PrivateKey.generate(),
      );
      assert.equal((await v.post('/v1/attestations', { attestation: missingNonce })).status, 400);
    });

    it('answers 413 for a body over 1 MiB', async () => {
      const answer = await fetch(`${v.url}/v1/attestations`, {
        method: 'POST',
        body: 'x'.repeat(1024 * 1024 + 1),
        headers: { 'content-type': 'application/json' },
      }).catch(err => err);
      if (answer instanceof Error) return; // the server may close the connection before reading on
      assert.equal(answer.status, 413);
    });

    it('answers 404 for unknown routes and 405 for a wrong method', async () => {
      assert.equal((await v.get('/v2/nothing')).status, 404);
      assert.equal((await v.get('/v1/attestations')).status, 405);
    });
  });

  describe('administration', () => {
    it('revokes a device: attestations are declined, its tokens introspect inactive, re-registration is 403', async () => {
      const device = await registered();
      const { token } = (await attest(device, await nonceFor(device))).body;
      assert.equal((await v.post('/v1/tokens/introspect', { token }, admin)).body.active, true);
      assert.equal((await v.post(`/v1/devices/${device.deviceId}/revoke`, {}, admin)).status, 200);
      assert.deepEqual(await v.post('/v1/tokens/introspect', { token }, admin).then(a => a.body), { active: false });
      v.clock.now += 1000;
      const refused = await v.post('/v1/challenges', { deviceId: device.deviceId });
      assert.deepEqual([refused.status, refused.body.code], [404, 'device_revoked']);
      const history = await v.get(`/v1/devices/${device.deviceId}/history`, admin);
      assert.deepEqual(history.body.sessions[0].reasons, ['device_revoked'], 'the refused attempt is recorded');
      const again = await v.post('/v1/devices', { registration: registration(device, v.clock.now) }, enrol);
      assert.deepEqual([again.status, again.body.code], [403, 'device_revoked']);
    });

    it('reinstates a revoked device only through an admin', async () => {
      const device = await registered();
      await v.post(`/v1/devices/${device.deviceId}/revoke`, {}, admin);
      assert.equal((await v.post(`/v1/devices/${device.deviceId}/reinstate`, {})).status, 401);
      assert.equal((await v.post(`/v1/devices/${device.deviceId}/reinstate`, {}, admin)).body.status, 'active');
      assert.equal((await attest(device, await nonceFor(device))).body.decision, 'approved');
    });

    it('introspects per RFC 7662, also form-encoded, and says inactive for expired or foreign tokens', async () => {
      const device = await registered();
      const { token } = (await attest(device, await nonceFor(device))).body;
      const form = await fetch(`${v.url}/v1/tokens/introspect`, {
        method: 'POST',
        headers: { ...admin, 'content-type': 'application/x-www-form-urlencoded' },
        body: `token=${token}`,
      });
      const claims = (await form.json()) as Record<string, unknown>;
      assert.deepEqual([claims.active, claims.sub], [true, device.deviceId]);
      for (const key of ['exp', 'iat', 'jti']) assert.ok(key in claims, key);
      const foreign = signJws(
        { sub: device.deviceId, iss: v.url, aud: v.url, exp: 9e9 },
        'at+jwt',
        Ed25519PrivateKey.generate(),
      );
      assert.deepEqual((await v.post('/v1/tokens/introspect', { token: foreign }, admin)).body, { active: false });
      v.clock.now += 16 * 60_000;
      assert.deepEqual((await v.post('/v1/tokens/introspect', { token }, admin)).body, { active: false });
    });

    it('lists devices with public keys only', async () => {
      const device = await registered();
      const list = await v.get('/v1/devices', admin);
      assert.deepEqual(
        list.body.devices.map((d: { deviceId: string }) => d.deviceId),
        [device.deviceId],
      );
      assert.ok(!('d' in list.body.devices[0].jwk));
      assert.equal(
        (await v.get(`/v1/devices/${device.deviceId}`, admin)).body.thumbprint,
        device.privateKey.publicKey.thumbprint(),
      );
      assert.equal((await v.get('/v1/devices/nobody', admin)).status, 404);
    });

    it('pages the fleet with each device’s latest attestation, and keeps who revoked and why', async () => {
      const first = await registered(makeDevice('line-a'));
      await registered(makeDevice('line-b'));
      const events: VerifierEvent[] = [];
      v.verifier.onEvent(event => events.push(event));
      assert.equal((await attest(first, await nonceFor(first))).body.decision, 'approved');
      const page = await v.get('/v1/devices?limit=1&q=line', admin);
      assert.equal(page.body.total, 2);
      assert.equal(page.body.devices.length, 1);
      const last = page.body.devices[0].lastAttestation;
      assert.equal(last.decision, 'approved');
      assert.equal(new Date(last.tokenExpiresAt).getTime() - new Date(last.at).getTime(), 15 * 60_000);
      assert.equal((await v.get('/v1/devices?limit=5000', admin)).status, 400);

      const revoked = await v.post('/v1/devices/line-a/revoke', { reason: 'badge lost', actor: 'anna' }, admin);
      assert.equal(revoked.status, 200);
      assert.deepEqual(events.at(-1), {
        id: events.at(-1)!.id,
        type: 'device.revoked',
        timestamp: events.at(-1)!.timestamp,
        data: {
          deviceId: 'line-a',
          status: 'revoked',
          metadata: { line: 'press shop', keyStorage: 'file' },
          actor: 'anna',
          reason: 'badge lost',
          deviceSeq: 3,
        },
      } as never);
      await v.post('/v1/devices/line-a/reinstate', undefined, admin);
      const history = await v.get('/v1/devices/line-a/history', admin);
      assert.deepEqual(
        history.body.audit.map((a: Record<string, string>) => [a.action, a.actor, a.reason]),
        [
          ['active', 'admin-api', undefined],
          ['revoked', 'anna', 'badge lost'],
        ],
      );
      assert.equal(history.body.sessions[0].decision, 'approved');
      assert.equal((await v.get('/v1/devices/nobody/history', admin)).status, 404);
    });

    it('answers 401 without and 403 with a wrong admin key', async () => {
      assert.equal((await v.get('/v1/devices')).status, 401);
      assert.equal((await v.get('/v1/devices', { 'x-api-key': 'guess' })).status, 403);
    });

    it('reports health with the store reachable', async () => {
      assert.deepEqual((await v.get('/v1/health')).body, { status: 'ok', store: 'ok' });
    });

    it('reports registrations, decisions and revocations as events {type, timestamp, data}', async () => {
      const events: Array<{ id: string; type: string; timestamp: string; data: any }> = [];
      v.verifier.onEvent(event => events.push(event));
      const device = await registered();
      const decision = await attest(device, await nonceFor(device));
      await v.post(`/v1/devices/${device.deviceId}/revoke`, {}, admin);
      await v.post(`/v1/devices/${device.deviceId}/reinstate`, {}, admin);
      assert.deepEqual(
        events.map(event => event.type),
        ['device.registered', 'attestation.decided', 'device.revoked', 'device.reinstated'],
      );
      assert.deepEqual(events[1].data, {
        deviceId: device.deviceId,
        decision: 'approved',
        reasons: decision.body.reasons,
        sessionId: decision.body.sessionId,
        score: null,
        workflow: 'default',
        deviceSeq: 2,
      });
      assert.deepEqual([events[2].data.deviceId, events[2].data.status], [device.deviceId, 'revoked']);
      assert.deepEqual(
        events.map(event => event.data.deviceSeq),
        [1, 2, 3, 4],
        "each of the device's events numbered after the one before",
      );
      assert.equal(new Set(events.map(event => event.id)).size, 4);
      assert.equal(events[0].timestamp, new Date(v.clock.now).toISOString());
    });

    it('writes no event for what changed nothing: a repeated registration, an unknown device', async () => {
      const events: string[] = [];
      v.verifier.onEvent(event => events.push(event.type));
      const device = await registered();
      await v.post('/v1/devices', { registration: registration(device, v.clock.now) }, enrol);
      await attest(makeDevice('nobody'), 'A'.repeat(43));
      assert.deepEqual(events, ['device.registered']);
    });
  });
});
