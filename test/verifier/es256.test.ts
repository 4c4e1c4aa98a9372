/**
 * ES256 beside EdDSA (issue #22): a device registers an Ed25519 or a P-256 key, and every
 * signature of it must use the algorithm its key implies, whatever a header says; ECDSA's second
 * spelling of a signature gets nothing twice; a device moves to another key when both keys sign;
 * the verifier signs tokens with ES256 when told, and its JWKS and rotation follow.
 */
import * as assert from 'node:assert/strict';
import * as jose from 'jose';
import { Ed25519PrivateKey } from '../../lib/crypto/ed25519';
import { JWS_TYPES, signJws } from '../../lib/crypto/jws';
import type { P256PrivateKey } from '../../lib/crypto/p256';
import { buildKeyChange } from '../../lib/edge/attestation';
import type { DeviceIdentity } from '../../lib/edge/keystore';
import { createProof } from '../../lib/proof';
import { TokenChecker } from '../../lib/receiver/token-check';
import { attestation, makeDevice, makeP256Device, RAW_COMPONENTS, registration } from '../fixtures/device';
import { admin, enrol, startHarness, type Harness } from './harness';

const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

/** The same ES256 signature spelled (r, n − s): valid, and what an attacker can make of a capture. */
function otherSpelling(jws: string): string {
  const [header, payload, signature] = jws.split('.');
  const raw = Buffer.from(signature, 'base64url');
  const s = BigInt(`0x${raw.subarray(32).toString('hex')}`);
  const twin = Buffer.concat([raw.subarray(0, 32), Buffer.from((N - s).toString(16).padStart(64, '0'), 'hex')]);
  return `${header}.${payload}.${twin.toString('base64url')}`;
}

/** A JWS with the header's alg swapped, signed by `key` in its own algorithm: algorithm confusion. */
function withAlg(jws: string, alg: string, key: Ed25519PrivateKey | P256PrivateKey): string {
  const [header, payload] = jws.split('.');
  const swapped = Buffer.from(
    JSON.stringify({ ...JSON.parse(Buffer.from(header, 'base64url').toString()), alg }),
  ).toString('base64url');
  const signature = Buffer.from(key.sign(Buffer.from(`${swapped}.${payload}`))).toString('base64url');
  return `${swapped}.${payload}.${signature}`;
}

describe('verifier: ES256 devices and tokens beside EdDSA', () => {
  let v: Harness;
  beforeEach(async () => {
    v = await startHarness();
  });
  afterEach(async () => {
    await v.stop();
  });

  async function registered(device: DeviceIdentity): Promise<DeviceIdentity> {
    const answer = await v.post('/v1/devices', { registration: registration(device, v.clock.now) }, enrol);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return device;
  }
  const nonceFor = async (device: DeviceIdentity) =>
    (await v.post('/v1/challenges', { deviceId: device.deviceId })).body.nonce as string;
  const attest = async (jws: string) => v.post('/v1/attestations', { attestation: jws });

  it('registers a P-256 device and approves its ES256 attestation', async () => {
    const device = await registered(makeP256Device());
    const answer = await attest(attestation(device, v.url, await nonceFor(device), { now: v.clock.now }));
    assert.equal(answer.body.decision, 'approved', JSON.stringify(answer.body));
    assert.equal((await v.get(`/v1/devices/${device.deviceId}`, admin)).body.jwk.kty, 'EC');
  });

  it('declines a signature in the other algorithm than the key implies, in both directions', async () => {
    for (const [device, other] of [
      [makeP256Device(), 'EdDSA'],
      [makeDevice(), 'ES256'],
    ] as const) {
      await registered(device);
      const signed = attestation(device, v.url, await nonceFor(device), { now: v.clock.now });
      const confused = withAlg(signed, other, device.privateKey as Ed25519PrivateKey | P256PrivateKey);
      assert.deepEqual((await attest(confused)).body.reasons, ['wrong_alg']);
      assert.equal((await attest(signed)).body.decision, 'approved', 'the nonce was not spent by it');
    }
  });

  it('refuses a registration whose header names another algorithm than its key', async () => {
    const device = makeP256Device();
    const signed = registration(device, v.clock.now);
    const confused = withAlg(signed, 'EdDSA', device.privateKey as P256PrivateKey);
    const answer = await v.post('/v1/devices', { registration: confused }, enrol);
    assert.deepEqual([answer.status, answer.body.code], [400, 'unsupported_alg']);
  });

  it('approves one attestation once, whichever spelling of its signature comes first', async () => {
    const device = await registered(makeP256Device());
    const signed = attestation(device, v.url, await nonceFor(device), { now: v.clock.now });
    const twin = otherSpelling(signed);
    const answers = await Promise.all([attest(signed), attest(twin), attest(signed), attest(twin)]);
    assert.equal(answers.filter(answer => answer.body.decision === 'approved').length, 1);
    assert.ok(
      answers.filter(answer => answer.body.decision !== 'approved').every(a => a.body.reasons[0] === 'nonce_reused'),
    );
  });

  it('moves a device from a file key to a P-256 key when both sign, without an admin', async () => {
    const device = await registered(makeDevice());
    const { token } = (await attest(attestation(device, v.url, await nonceFor(device), { now: v.clock.now }))).body;
    const hardware: DeviceIdentity = { ...makeP256Device(device.deviceId), fingerprintSalt: device.fingerprintSalt };
    const change = buildKeyChange(device, hardware, RAW_COMPONENTS, { line: 'press shop' }, v.clock.now);
    const moved = await v.post(`/v1/devices/${device.deviceId}/key`, { keyChange: change });
    assert.deepEqual([moved.status, moved.body.status], [200, 'active']);
    assert.equal(
      (await attest(attestation(hardware, v.url, await nonceFor(hardware), { now: v.clock.now }))).body.decision,
      'approved',
    );
    assert.deepEqual(
      (await attest(attestation(device, v.url, await nonceFor(device), { now: v.clock.now }))).body.reasons,
      ['wrong_alg'],
    );
    assert.deepEqual((await v.post('/v1/tokens/introspect', { token }, admin)).body, { active: false });
    const history = (await v.get(`/v1/devices/${device.deviceId}/history`, admin)).body.audit;
    assert.equal(history[0].action, 'key_changed');
    const replayed = await v.post(`/v1/devices/${device.deviceId}/key`, { keyChange: change });
    assert.deepEqual(
      [replayed.status, replayed.body.code],
      [400, 'bad_signature'],
      'replayed: the old key is no longer the registered one',
    );
  });

  it('refuses a key change the registered key did not sign, or signed for another key', async () => {
    const device = await registered(makeDevice());
    const thief = makeP256Device(device.deviceId);
    const forged = buildKeyChange(makeDevice(device.deviceId), thief, RAW_COMPONENTS, {}, v.clock.now);
    assert.equal(
      (await v.post(`/v1/devices/${device.deviceId}/key`, { keyChange: forged })).body.code,
      'bad_signature',
    );
    // The registered key's consent, lifted from one change into another key's.
    const genuine = buildKeyChange(device, makeP256Device(device.deviceId), RAW_COMPONENTS, {}, v.clock.now);
    const consent = JSON.parse(Buffer.from(genuine.split('.')[1], 'base64url').toString()).previous;
    const payload = JSON.parse(Buffer.from(forged.split('.')[1], 'base64url').toString());
    const spliced = signJws({ ...payload, previous: consent }, JWS_TYPES.keyChange, thief.privateKey);
    assert.equal(
      (await v.post(`/v1/devices/${device.deviceId}/key`, { keyChange: spliced })).body.code,
      'bad_signature',
    );
    assert.equal((await v.get(`/v1/devices/${device.deviceId}`, admin)).body.jwk.kty, 'OKP', 'still the file key');
  });

  it('with a hardwareKey step, approves a device that registered its key as in a TPM and declines a file key', async () => {
    await v.stop();
    v = await startHarness({ workflow: [{ step: 'signature' }, { step: 'hardwareKey' }] });
    const inTpm = await registered({ ...makeP256Device(), storage: 'tpm' });
    const inFile = await registered({ ...makeDevice(), storage: 'file' });
    const unsaid = await registered(makeDevice());
    const tpmAnswer = (await attest(attestation(inTpm, v.url, await nonceFor(inTpm), { now: v.clock.now }))).body;
    assert.deepEqual(
      [tpmAnswer.decision, jose.decodeJwt(tpmAnswer.token).amr],
      ['approved', ['signature', 'hardwareKey']],
    );
    for (const device of [inFile, unsaid])
      assert.deepEqual(
        (await attest(attestation(device, v.url, await nonceFor(device), { now: v.clock.now }))).body.reasons,
        ['key_not_hardware'],
      );
  });

  it('signs tokens with ES256 when told: the JWKS, jose and the token check follow, and proofs of a P-256 device pass', async () => {
    await v.stop();
    v = await startHarness({ keyRotation: { alg: 'ES256' } });
    const device = await registered(makeP256Device());
    const { token } = (await attest(attestation(device, v.url, await nonceFor(device), { now: v.clock.now }))).body;
    assert.equal(jose.decodeProtectedHeader(token).alg, 'ES256');
    const jwks = (await v.get('/.well-known/jwks.json')).body;
    assert.deepEqual(
      jwks.keys.map((key: { kty: string; alg: string }) => [key.kty, key.alg]),
      [['EC', 'ES256']],
    );
    await jose.jwtVerify(token, jose.createLocalJWKSet(jwks), { issuer: v.url, audience: v.url });
    const checker = new TokenChecker({
      jwks: new URL(`${v.url}/.well-known/jwks.json`),
      issuer: v.url,
      audience: v.url,
      requireProof: true,
      now: () => v.clock.now,
    });
    const payload = { t: 1 };
    const proof = createProof(device.privateKey, { token, payload, target: 'x', now: v.clock.now });
    const result = await checker.check({ token, proof, payload, target: 'x' });
    assert.equal(result.valid, true, JSON.stringify(result));
    const edProof = createProof(Ed25519PrivateKey.generate(), { token, payload, target: 'x', now: v.clock.now });
    const wrong = await checker.check({ token, proof: edProof, payload, target: 'x' });
    assert.deepEqual([wrong.valid, !wrong.valid && wrong.reason], [false, 'proof_wrong_key']);
  });
});
