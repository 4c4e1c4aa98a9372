/**
 * ES256 as JWS has it (RFC 7518 §3.4): raw r‖s over SHA-256, keys on P-256, checked against RFC
 * 7515's own example and against the ways a signature or a key can be wrong (Wycheproof's cases).
 */
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import { algOf, publicKeyFromJwk } from '../../lib/crypto/keys';
import { P256PrivateKey, P256PublicKey, wellFormedEs256 } from '../../lib/crypto/p256';

/** RFC 7515 Appendix A.3: the ES256 example, its key and its signature. */
const RFC7515_A3 = {
  jwk: {
    kty: 'EC',
    crv: 'P-256',
    x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU',
    y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0',
  },
  jws:
    'eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.' +
    'DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q',
};

const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const bytes32 = (n: bigint) => Buffer.from(n.toString(16).padStart(64, '0'), 'hex');

function parts(jws: string): { input: Uint8Array; signature: Buffer } {
  const [header, payload, signature] = jws.split('.');
  return { input: Buffer.from(`${header}.${payload}`), signature: Buffer.from(signature, 'base64url') };
}

describe('lib/crypto/p256: ES256 signatures and P-256 keys', () => {
  it("verifies RFC 7515's ES256 example", () => {
    const { input, signature } = parts(RFC7515_A3.jws);
    assert.equal(P256PublicKey.fromJwk(RFC7515_A3.jwk).verify(input, signature), true);
    assert.equal(P256PublicKey.fromJwk(RFC7515_A3.jwk).verify(Buffer.from('other'), signature), false);
  });

  it('signs raw r‖s, and its second spelling (s → n − s) verifies too', () => {
    const key = P256PrivateKey.generate();
    const message = Buffer.from('reading 21.5');
    const signature = key.sign(message);
    assert.equal(signature.length, 64);
    assert.equal(key.publicKey.verify(message, signature), true);
    const s = BigInt(`0x${Buffer.from(signature.subarray(32)).toString('hex')}`);
    const twin = Buffer.concat([Buffer.from(signature.subarray(0, 32)), bytes32(N - s)]);
    // High S is valid ECDSA: tokens make such signatures half the time.
    assert.equal(key.publicKey.verify(message, twin), true);
  });

  const cases: Array<[string, (signature: Buffer) => Buffer]> = [
    ['r = 0', sig => Buffer.concat([Buffer.alloc(32), sig.subarray(32)])],
    ['s = 0', sig => Buffer.concat([sig.subarray(0, 32), Buffer.alloc(32)])],
    ['r = n', sig => Buffer.concat([bytes32(N), sig.subarray(32)])],
    ['s = n', sig => Buffer.concat([sig.subarray(0, 32), bytes32(N)])],
    [
      'r ≥ n (r + n)',
      sig =>
        Buffer.concat([
          bytes32((BigInt(`0x${sig.subarray(0, 32).toString('hex')}`) + N) % 2n ** 256n),
          sig.subarray(32),
        ]),
    ],
    ['63 bytes', sig => sig.subarray(1)],
    ['65 bytes', sig => Buffer.concat([Buffer.alloc(1), sig])],
    ['the DER encoding', sig => Buffer.from(derOf(sig))],
    ['all ones', () => Buffer.alloc(64, 0xff)],
  ];
  for (const [what, spoil] of cases) {
    it(`refuses a signature with ${what}`, () => {
      const key = P256PrivateKey.generate();
      const message = Buffer.from('m');
      const spoilt = spoil(Buffer.from(key.sign(message)));
      assert.equal(wellFormedEs256(spoilt) && key.publicKey.verify(message, spoilt), false);
    });
  }

  it('refuses keys off the curve, with a private part, or not in canonical base64url', () => {
    const off = { ...RFC7515_A3.jwk, y: Buffer.alloc(32, 7).toString('base64url') };
    assert.throws(() => P256PublicKey.fromJwk(off), { code: 'bad_key' });
    assert.throws(
      () => P256PublicKey.fromJwk({ ...RFC7515_A3.jwk, d: 'jpsQnnGQmL-YBIffH1136cLrzdnlbfRqHG7u4Ldcv8I' }),
      {
        code: 'bad_key',
      },
    );
    const loose = `${RFC7515_A3.jwk.x.slice(0, 42)}V`; // spare low bits set: the same bytes
    assert.deepEqual(Buffer.from(loose, 'base64url'), Buffer.from(RFC7515_A3.jwk.x, 'base64url'));
    assert.throws(() => P256PublicKey.fromJwk({ ...RFC7515_A3.jwk, x: loose }), { code: 'bad_key' });
    assert.throws(() => P256PublicKey.fromJwk({ ...RFC7515_A3.jwk, crv: 'P-384' }), { code: 'bad_key' });
  });

  it('pairs a key with its algorithm, never the other way round', () => {
    assert.equal(algOf(RFC7515_A3.jwk), 'ES256');
    assert.equal(algOf({ kty: 'OKP', crv: 'Ed25519', x: 'x' }), 'EdDSA');
    assert.equal(algOf({ kty: 'EC', crv: 'P-384' }), undefined);
    assert.equal(publicKeyFromJwk(RFC7515_A3.jwk).alg, 'ES256');
    // The same thumbprint as RFC 7638 computes for the key.
    const { crv, kty, x, y } = RFC7515_A3.jwk;
    const expected = crypto.createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest('base64url');
    assert.equal(publicKeyFromJwk(RFC7515_A3.jwk).thumbprint(), expected);
  });

  it('stores and restores a verifier key from its scalar', () => {
    const key = P256PrivateKey.generate();
    const again = P256PrivateKey.fromScalar(key.exportScalar());
    assert.equal(again.publicKey.thumbprint(), key.publicKey.thumbprint());
    assert.equal(key.publicKey.verify(Buffer.from('t'), again.sign(Buffer.from('t'))), true);
    assert.doesNotMatch(JSON.stringify(key), /"d"/, 'no private part in JSON');
  });
});

/** r‖s as an ASN.1 DER SEQUENCE of two INTEGERs (what OpenSSL's default encoding gives). */
function derOf(raw: Buffer): Buffer {
  const integer = (half: Buffer) => {
    let value = half;
    while (value.length > 1 && value[0] === 0 && value[1] < 0x80) value = value.subarray(1);
    if (value[0] & 0x80) value = Buffer.concat([Buffer.alloc(1), value]);
    return Buffer.concat([Buffer.from([0x02, value.length]), value]);
  };
  const body = Buffer.concat([integer(raw.subarray(0, 32)), integer(raw.subarray(32))]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}
