import * as assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Ed25519PrivateKey } from '../../lib/crypto/ed25519';
import { signJws } from '../../lib/crypto/jws';
import type { DeviceIdentity } from '../../lib/edge/keystore';
import { createProof } from '../../lib/proof';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as jose from 'jose';
import { IdentityApiClient } from '../../lib/edge/api-client';
import { FileReplayCache, MemoryReplayCache } from '../../lib/receiver/replay-cache';
import { RevocationWatch } from '../../lib/revocation-watch';
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

  describe("the verifier's revocation list, without an admin key", () => {
    let other: DeviceIdentity;
    let otherToken: string;
    let watch: RevocationWatch;
    const client = () => new IdentityApiClient({ baseUrl: v.url });
    const stamp = (t: string, payload: unknown, d = other) => ({
      token: t,
      payload,
      target: 'x',
      proof: createProof(d.privateKey, { token: t, payload, target: 'x', now: clock.now }),
    });
    beforeEach(async () => {
      other = makeDevice();
      await v.post('/v1/devices', { registration: registration(other, v.clock.now) }, enrol);
      otherToken = await issue(other);
    });
    afterEach(() => watch?.stop());

    function watching(options: Partial<ConstructorParameters<typeof RevocationWatch>[0]> = {}) {
      const keys = jose.createRemoteJWKSet(new URL(`${v.url}/.well-known/jwks.json`));
      const api = client();
      watch = new RevocationWatch({
        source: { fetch: etag => api.revocations(etag) },
        keys,
        issuer: v.url,
        pollMs: 50,
        ...options,
      });
      return checkerFor({ jwks: keys, revocations: watch });
    }

    it('refuses a revoked device within a poll, and its old token after a reinstatement', async () => {
      const checked = watching();
      assert.equal((await checked.check(stamp(otherToken, 1))).valid, true);
      await v.post(`/v1/devices/${other.deviceId}/revoke`, {}, admin);
      await new Promise(resolve => setTimeout(resolve, 300));
      const revoked = await checked.check(stamp(otherToken, 2));
      assert.deepEqual([revoked.valid, !revoked.valid && revoked.reason], [false, 'token_revoked']);
      await v.post(`/v1/devices/${other.deviceId}/reinstate`, {}, admin);
      const fresh = await issue(other);
      await new Promise(resolve => setTimeout(resolve, 300));
      const old = await checked.check(stamp(otherToken, 3));
      assert.deepEqual([old.valid, !old.valid && old.reason], [false, 'token_revoked'], 'issued before the revocation');
      assert.equal((await checked.check(stamp(fresh, 4))).valid, true, 'issued after the reinstatement');
      assert.equal((await checked.check(stamp(token, 5, device))).valid, true, 'other devices are not touched');
    });

    it('refuses every token while the list cannot be fetched, unless told to accept them', async () => {
      const unreachable = { fetch: async () => Promise.reject(new Error('ECONNREFUSED')) };
      const refusing = watching({ source: unreachable });
      const refused = await refusing.check(stamp(otherToken, 1));
      assert.deepEqual([refused.valid, !refused.valid && refused.reason], [false, 'revocations_unavailable']);
      watch.stop();
      const keys = jose.createRemoteJWKSet(new URL(`${v.url}/.well-known/jwks.json`));
      watch = new RevocationWatch({ source: unreachable, keys, issuer: v.url });
      const accepting = checkerFor({ jwks: keys, revocations: watch, whenRevocationsUnknown: 'accept' });
      assert.equal((await accepting.check(stamp(otherToken, 2))).valid, true);
    });

    it('refuses a list signed by anyone but the verifier, and one of another issuer', async () => {
      const forger = Ed25519PrivateKey.generate();
      const forged = {
        fetch: async () => ({
          jws: signJws({ iss: v.url, iat: 1, devices: {} }, 'm2m-revocations+jwt', forger, 'k'),
          etag: '"x"',
        }),
      };
      assert.equal((await watching({ source: forged }).check(stamp(otherToken, 1))).valid, false);
      watch.stop();
      assert.equal((await watching({ issuer: 'https://other.example' }).check(stamp(otherToken, 2))).valid, false);
    });

    it('answers 304 to a receiver that has the current list', async () => {
      const api = client();
      const first = await api.revocations();
      assert.notEqual(first, 'unchanged');
      assert.equal(await api.revocations((first as { etag: string }).etag), 'unchanged');
      api.close();
    });
  });

  describe('the replay cache', () => {
    it('survives a restart: a proof accepted before it is refused after', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-replays-'));
      const file = path.join(dir, 'replays.db');
      const once = message();
      const first = checkerFor({ replayCache: new FileReplayCache(file) });
      assert.equal((await first.check(once)).valid, true);
      first.close();
      const second = checkerFor({ replayCache: new FileReplayCache(file) });
      const replayed = await second.check(once);
      second.close();
      fs.rmSync(dir, { recursive: true, force: true });
      assert.deepEqual([replayed.valid, !replayed.valid && replayed.reason], [false, 'proof_replayed']);
    });

    for (const [name, make] of [
      ['in memory', () => new MemoryReplayCache(3)],
      ['in a file', () => new FileReplayCache(path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-rc-')), 'r.db'), 3)],
    ] as const) {
      it(`never forgets an entry before its time, and refuses new ones when full (${name})`, () => {
        const cache = make();
        const now = 1000;
        assert.deepEqual(
          ['a', 'b', 'c', 'd'].map(key => cache.remember(key, now + 10_000, now)),
          ['fresh', 'fresh', 'fresh', 'full'],
        );
        assert.equal(cache.remember('a', now + 10_000, now + 1), 'replay', 'the oldest is still there');
        assert.equal(cache.remember('d', now + 20_000, now + 10_001), 'fresh', 'room once the others expired');
        assert.equal(cache.remember('a', now + 20_000, now + 10_002), 'fresh', 'an expired key may come again');
        cache.close();
      });
    }
  });

  it('looks a new token up once for a burst of messages with it', async () => {
    let fetches = 0;
    const jwks = jose.createLocalJWKSet((await v.get('/.well-known/jwks.json')).body);
    const counting: jose.JWTVerifyGetKey = async (header, input) => {
      fetches++;
      await new Promise(resolve => setTimeout(resolve, 20));
      return jwks(header, input);
    };
    let introspections = 0;
    const introspect = async () => {
      introspections++;
      await new Promise(resolve => setTimeout(resolve, 20));
      return true;
    };
    const burst = checkerFor({ jwks: counting, introspect });
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => burst.check(message({ payload: i }))));
    assert.ok(results.every(r => r.valid));
    assert.deepEqual([fetches, introspections], [1, 1]);
  });

  it('accepts a bearer token without a proof only when proofs are not required', async () => {
    const bearer = checkerFor({ requireProof: false });
    assert.equal((await bearer.check({ ...message(), proof: undefined })).valid, true);
  });
});
