import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as ed from '@noble/ed25519';
import { Ed25519PrivateKey, Ed25519PublicKey, defaultEngine, type Ed25519Engine } from '../../lib/crypto/ed25519';

/** RFC 8032, speccheck, Zcash small-order and non-canonical cases: see its `about` and `sources`. */
const edgeCases: {
  vectors: Array<{ name: string; pub: string; msg: string; sig: string; strict: boolean }>;
  points: Array<{ name: string; pub: string; label: string }>;
} = require('../../../test/fixtures/ed25519-vectors.json');

const hex = (value: string) => new Uint8Array(Buffer.from(value, 'hex'));

// RFC 8032 §7.1, TEST 1-3 and TEST SHA(abc)
const vectors = [
  {
    name: 'TEST 1 (empty message)',
    secret: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
    publicKey: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
    message: '',
    signature:
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  },
  {
    name: 'TEST 2 (one byte)',
    secret: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
    publicKey: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
    message: '72',
    signature:
      '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
  },
  {
    name: 'TEST 3 (two bytes)',
    secret: 'c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7',
    publicKey: 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025',
    message: 'af82',
    signature:
      '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a',
  },
];

// The group order L; adding it to S gives a non-canonical encoding that strict RFC 8032 rejects.
const L = (1n << 252n) + 27742317777372353535851937790883648493n;

function withNonCanonicalS(signature: Uint8Array): Uint8Array {
  const s = BigInt(`0x${Buffer.from(signature.subarray(32)).reverse().toString('hex')}`) + L;
  const sBytes = Buffer.from(s.toString(16).padStart(64, '0'), 'hex').reverse();
  return Uint8Array.from([...signature.subarray(0, 32), ...sBytes]);
}

describe('lib/crypto/ed25519', () => {
  it('picks node:crypto by default on a runtime that has Ed25519', () => {
    assert.equal(defaultEngine, process.env.M2M_ED25519_ENGINE === 'noble' ? 'noble' : 'node');
  });

  for (const engine of ['node', 'noble'] as Ed25519Engine[]) {
    describe(`on the ${engine} engine`, () => {
      for (const v of vectors) {
        it(`reproduces RFC 8032 ${v.name}`, () => {
          const key = Ed25519PrivateKey.fromSeed(hex(v.secret), engine);
          assert.equal(Buffer.from(key.publicKey.raw).toString('hex'), v.publicKey);
          assert.equal(Buffer.from(key.sign(hex(v.message))).toString('hex'), v.signature);
          assert.equal(
            Ed25519PublicKey.fromRaw(hex(v.publicKey), engine).verify(hex(v.message), hex(v.signature)),
            true,
          );
        });
      }

      it('rejects a signature over another message', () => {
        const key = Ed25519PrivateKey.generate(engine);
        const signature = key.sign(Buffer.from('open valve 7'));
        assert.equal(key.publicKey.verify(Buffer.from('open valve 8'), signature), false);
      });

      it('rejects a signature with one flipped bit', () => {
        const key = Ed25519PrivateKey.generate(engine);
        const message = Buffer.from('m2m');
        const signature = key.sign(message);
        signature[10] ^= 0x01;
        assert.equal(key.publicKey.verify(message, signature), false);
      });

      it('rejects a non-canonical S (strict RFC 8032, not ZIP215)', () => {
        const v = vectors[1];
        const publicKey = Ed25519PublicKey.fromRaw(hex(v.publicKey), engine);
        assert.equal(publicKey.verify(hex(v.message), withNonCanonicalS(hex(v.signature))), false);
      });

      it('returns false, without throwing, for signatures of the wrong length', () => {
        const key = Ed25519PrivateKey.generate(engine);
        assert.equal(key.publicKey.verify(Buffer.from('x'), new Uint8Array(63)), false);
      });
    });
  }

  it('signs identically on node:crypto and noble (cross-check on random keys)', () => {
    for (let i = 0; i < 20; i++) {
      const seed = new Uint8Array(crypto.randomBytes(32));
      const message = crypto.randomBytes(i * 7);
      const viaNode = Ed25519PrivateKey.fromSeed(seed, 'node');
      const viaNoble = Ed25519PrivateKey.fromSeed(seed, 'noble');
      assert.deepEqual(viaNode.publicKey.raw, viaNoble.publicKey.raw);
      assert.deepEqual(viaNode.sign(message), viaNoble.sign(message));
      assert.equal(ed.verify(viaNode.sign(message), message, viaNode.publicKey.raw, { zip215: false }), true);
    }
  });

  describe('edge cases (speccheck, Zcash small-order grid, non-canonical encodings)', () => {
    /** The key as the verifier's registry would take it, or undefined when refused. */
    const registrable = (pub: string, engine: Ed25519Engine) => {
      try {
        const key = Ed25519PublicKey.fromRaw(hex(pub), engine);
        return key.isPrimeOrder() ? key : undefined;
      } catch (err) {
        assert.equal((err as { code?: string }).code, 'bad_key');
        return undefined;
      }
    };

    it('refuses every small-order and every non-canonical point encoding as a public key', () => {
      const refused = edgeCases.points.filter(point => {
        try {
          Ed25519PublicKey.fromRaw(hex(point.pub));
          return false;
        } catch {
          return true;
        }
      });
      // What is left is mixed order (a prime-order point plus torsion): refused at registration.
      const mixed = edgeCases.points.filter(point => !refused.includes(point));
      assert.ok(refused.length >= 32, `${refused.length} refused`);
      for (const point of mixed)
        assert.equal(Ed25519PublicKey.fromRaw(hex(point.pub)).isPrimeOrder(), false, point.name);
    });

    it('refuses the identity key, under which node:crypto accepts one signature for every message', () => {
      assert.throws(() => Ed25519PublicKey.fromRaw(hex(`01${'00'.repeat(31)}`)), { code: 'bad_key' });
    });

    it('gives the strict RFC 8032 answer on both engines for every vector whose key is registrable', () => {
      let checked = 0;
      for (const v of edgeCases.vectors) {
        const answers = (['node', 'noble'] as Ed25519Engine[]).map(engine => {
          const key = registrable(v.pub, engine);
          return key ? key.verify(hex(v.msg), hex(v.sig)) : false;
        });
        assert.deepEqual(
          answers,
          [v.strict && !!registrable(v.pub, 'node'), v.strict && !!registrable(v.pub, 'node')],
          v.name,
        );
        if (registrable(v.pub, 'node')) checked++;
      }
      assert.ok(checked >= 3, `${checked} vectors had a registrable key`);
    });
  });

  it('round-trips the public key through an RFC 8037 JWK and refuses private JWKs', () => {
    const key = Ed25519PrivateKey.generate();
    const jwk = key.publicKey.toJwk();
    assert.deepEqual(Object.keys(jwk).sort(), ['crv', 'kty', 'x']);
    assert.deepEqual(Ed25519PublicKey.fromJwk(jwk).raw, key.publicKey.raw);
    assert.throws(() => Ed25519PublicKey.fromJwk({ ...jwk, d: 'AAAA' }), { code: 'bad_key' });
    assert.throws(() => Ed25519PublicKey.fromJwk({ ...jwk, crv: 'X25519' }), { code: 'bad_key' });
    assert.throws(() => Ed25519PublicKey.fromJwk({ kty: 'EC', crv: 'P-256', x: jwk.x }), { code: 'bad_key' });
  });

  it('computes the RFC 7638 thumbprint of RFC 8037 appendix A.3', () => {
    const publicKey = Ed25519PublicKey.fromJwk({
      kty: 'OKP',
      crv: 'Ed25519',
      x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo',
    });
    assert.equal(publicKey.thumbprint(), 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k');
  });

  it('never shows the private key in JSON or util.inspect', async () => {
    const util = await import('node:util');
    const key = Ed25519PrivateKey.generate();
    const seed = Buffer.from(key.exportSeed());
    for (const text of [JSON.stringify({ key }), util.inspect(key, { showHidden: true, depth: 5 })]) {
      for (const encoding of ['hex', 'base64', 'base64url'] as const)
        assert.ok(!text.includes(seed.toString(encoding)), `${encoding} seed leaked`);
    }
  });
});
