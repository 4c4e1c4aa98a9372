import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Ed25519PrivateKey } from '../../lib/crypto/ed25519';
import { signJws } from '../../lib/crypto/jws';
import { signPeerMessage, TrustStore, TrustStoreError } from '../../lib/edge/peer-signature';
import { tempDir } from '../tinyml/fixtures';

describe('peer message signatures', () => {
  const key = Ed25519PrivateKey.generate();
  let dir: string;
  let store: TrustStore;

  beforeEach(() => {
    dir = tempDir();
    const file = path.join(dir, 'trust.jwks.json');
    fs.writeFileSync(
      file,
      JSON.stringify({
        keys: [{ ...key.publicKey.toJwk(), kid: 'plc-4' }, { kty: 'RSA', kid: 'old' }, { kty: 'OKP' }],
      }),
    );
    store = TrustStore.load(file);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('loads Ed25519 keys with a kid and counts the rest as skipped', () => {
    assert.equal(store.size, 1);
    assert.equal(store.skipped, 2);
  });

  it('verifies payloads of every type by their bytes', () => {
    for (const payload of [21.5, 'on', { a: [1, 2] }, Buffer.from([0, 1, 2]), null]) {
      assert.deepEqual(store.verify(signPeerMessage(payload, key, 'plc-4'), payload), { valid: true, kid: 'plc-4' });
    }
  });

  it('says why a signature does not verify', () => {
    const now = Date.now();
    const reason = (signature: unknown, payload: unknown = 1) => {
      const result = store.verify(signature, payload, now);
      return result.valid ? 'valid' : result.reason;
    };
    assert.equal(reason(signPeerMessage(1, key, 'plc-4', now), 2), 'payload_mismatch');
    assert.equal(reason(signPeerMessage(1, Ed25519PrivateKey.generate(), 'plc-4', now)), 'bad_signature');
    assert.equal(reason(signPeerMessage(1, key, 'plc-9', now)), 'unknown_key');
    assert.equal(reason(signPeerMessage(1, key, 'plc-4', now - 10 * 60_000)), 'stale_signature');
    assert.equal(reason(signPeerMessage(1, key, 'plc-4', now + 10 * 60_000)), 'stale_signature');
    assert.equal(reason('not.a.jws'), 'malformed_signature');
    assert.equal(reason(42), 'malformed_signature');
    assert.equal(reason(signJws({ iss: 'plc-4' }, 'm2m-attestation+jwt', key, 'plc-4')), 'malformed_signature');
  });

  it('treats a missing file as empty and a broken one as an error', () => {
    assert.equal(TrustStore.load(path.join(dir, 'none.json')).size, 0);
    const broken = path.join(dir, 'broken.json');
    fs.writeFileSync(broken, '{"keys": {}}');
    assert.throws(() => TrustStore.load(broken), TrustStoreError);
  });
});
