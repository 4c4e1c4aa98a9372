import * as assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Ed25519PrivateKey } from '../../lib/crypto/ed25519';
import { signJws } from '../../lib/crypto/jws';
import type { DeviceIdentity } from '../../lib/edge/keystore';
import { createProof } from '../../lib/proof';
import { type CheckInput, TokenChecker } from '../../lib/receiver/token-check';
import { attestation, makeDevice, registration, respelled } from '../fixtures/device';
import { admin, enrol, startHarness, type Harness } from '../verifier/harness';

describe('lib/receiver/token-check: tokens and proofs on the receiving side', () => {
  let v: Harness;
  let device: DeviceIdentity;
  let token: string;
  let checker: TokenChecker;
  const clock = { now: Date.now() };

  async function issue(d: DeviceIdentity): Promise<string> {
    const nonce = (await v.post('/v1/challenges', { deviceId: d.deviceId })).body.nonce;
    const answer = await v.post('/v1/attestations', {
      attestation: attestation(d, v.url, nonce, { now: v.clock.now }),
    });
    assert.equal(answer.body.decision, 'approved');
    return answer.body.token;
  }

  function checkerFor(options: Partial<ConstructorParameters<typeof TokenChecker>[0]> = {}): TokenChecker {
    return new TokenChecker({
      jwks: new URL(`${v.url}/.well-known/jwks.json`),
      issuer: v.url,
      audience: v.url,
      requireProof: true,
      now: () => clock.now,
      ...options,
    });
  }

  const message = (
    overrides: Partial<CheckInput> & { key?: Ed25519PrivateKey; proofNow?: number } = {},
  ): CheckInput => {
    const payload = overrides.payload ?? { t: 21.5 };
    const target = overrides.target ?? 'plant/line-2/press-7';
    const t = 'token' in overrides ? overrides.token : token;
    return {
      token: t,
      payload,
      target,
      proof:
        'proof' in overrides
          ? overrides.proof
          : createProof(overrides.key ?? device.privateKey, {
              token: t ?? '',
              payload,
              target,
              now: overrides.proofNow ?? clock.now,
            }),
    };
  };

  before(async () => {
    v = await startHarness();
    device = makeDevice('press-7');
    await v.post('/v1/devices', { registration: registration(device, v.clock.now) }, enrol);
    token = await issue(device);
    clock.now = v.clock.now;
  });
  beforeEach(() => {
    checker = checkerFor();
  });
  after(async () => {
    await v.stop();
  });

  it("accepts a token with a proof of this message, signed by the token's key", async () => {
    const result = await checker.check(message());
    assert.equal(result.valid, true);
    assert.equal(result.valid && result.deviceId, 'press-7');
    assert.equal(result.valid && result.claims.cnf.jkt, device.privateKey.publicKey.thumbprint());
  });

  it('refuses the token spelled another way (same signature bytes), even with a proof made for that spelling', async () => {
    assert.equal((await checker.check(message())).valid, true);
    const result = await checker.check(message({ token: respelled(token) }));
    assert.deepEqual(result, { valid: false, reason: 'token_malformed' });
  });

  const refusals: Array<[string, () => Partial<CheckInput> & { key?: Ed25519PrivateKey; proofNow?: number }, string]> =
    [
      ['no token', () => ({ token: undefined }), 'token_missing'],
      ['a token that is not a JWS', () => ({ token: 'not.a.token' }), 'token_malformed'],
      [
        'a token signed by someone else',
        () => ({
          token: signJws(
            { sub: 'press-7', iss: v.url, aud: v.url, exp: 9e9, cnf: { jkt: 'x' } },
            'at+jwt',
            Ed25519PrivateKey.generate(),
            'unknown-kid',
          ),
        }),
        'token_unknown_key',
      ],
      ['no proof', () => ({ proof: undefined }), 'proof_missing'],
      ['a proof that is not a JWS', () => ({ proof: 'garbage' }), 'proof_malformed'],
      ['a proof signed by another key', () => ({ key: Ed25519PrivateKey.generate() }), 'proof_wrong_key'],
      ['a stale proof', () => ({ proofNow: clock.now - 301_000 }), 'proof_stale'],
      ['a proof from the future', () => ({ proofNow: clock.now + 61_000 }), 'proof_future'],
    ];
  for (const [what, overrides, reason] of refusals) {
    it(`refuses ${what}: ${reason}`, async () => {
      const result = await checker.check(message(overrides()));
      assert.deepEqual([result.valid, !result.valid && result.reason], [false, reason]);
    });
  }

  it('refuses a proof over another payload, for another topic, or for another token', async () => {
    const results = await Promise.all([
      checkerFor().check({ ...message(), payload: { t: 99 } }),
      checkerFor().check({ ...message(), target: 'plant/other' }),
      checkerFor().check({ ...message(), token: await issue(device) }),
    ]);
    assert.deepEqual(
      results.map(r => !r.valid && r.reason),
      ['proof_payload_mismatch', 'proof_wrong_target', 'proof_wrong_token'],
    );
  });

  it('refuses a replayed message: the same proof twice', async () => {
    const once = message();
    assert.equal((await checker.check(once)).valid, true);
    const again = await checker.check(once);
    assert.deepEqual([again.valid, !again.valid && again.reason], [false, 'proof_replayed']);
  });

  it('refuses an expired token, a foreign issuer and a wrong audience', async () => {
    const later = checkerFor({ now: () => clock.now + 16 * 60_000 });
    const expired = await later.check(message({ proofNow: clock.now + 16 * 60_000 }));
    const foreign = await checkerFor({ issuer: 'https://other.example' }).check(message());
    const audience = await checkerFor({ audience: 'https://other.example' }).check(message());
    assert.deepEqual(
      [expired, foreign, audience].map(r => !r.valid && r.reason),
      ['token_expired', 'token_wrong_issuer', 'token_wrong_audience'],
    );
  });

  it('refuses the token of a revoked device when it introspects', async () => {
    const other = makeDevice();
    await v.post('/v1/devices', { registration: registration(other, v.clock.now) }, enrol);
    const otherToken = await issue(other);
    const introspect = async (t: string) =>
      (await v.post('/v1/tokens/introspect', { token: t }, admin)).body.active === true;
    const watched = checkerFor({ introspect, introspectionCacheMs: 0 });
    const stamp = (payload: unknown) => ({
      token: otherToken,
      payload,
      target: 'x',
      proof: createProof(other.privateKey, { token: otherToken, payload, target: 'x', now: clock.now }),
    });
    assert.equal((await watched.check(stamp(1))).valid, true);
    await v.post(`/v1/devices/${other.deviceId}/revoke`, {}, admin);
    const after = await watched.check(stamp(2));
    assert.deepEqual([after.valid, !after.valid && after.reason], [false, 'token_revoked']);
  });

  it('says the JWKS is unavailable when the verifier is down or answers garbage, and does not crash', async () => {
    const garbage = http.createServer((_req, res) => res.end('{"keys": "no"}'));
    await new Promise<void>(resolve => garbage.listen(0, '127.0.0.1', resolve));
    const { port } = garbage.address() as AddressInfo;
    try {
      const down = await checkerFor({ jwks: new URL('http://127.0.0.1:9/.well-known/jwks.json') }).check(message());
      const junk = await checkerFor({ jwks: new URL(`http://127.0.0.1:${port}/jwks.json`) }).check(message());
      assert.deepEqual(
        [down, junk].map(r => !r.valid && r.reason),
        ['jwks_unavailable', 'jwks_unavailable'],
      );
    } finally {
      garbage.close();
    }
  });

  it('accepts a bearer token without a proof only when proofs are not required', async () => {
    const bearer = checkerFor({ requireProof: false });
    assert.equal((await bearer.check({ ...message(), proof: undefined })).valid, true);
  });
});
