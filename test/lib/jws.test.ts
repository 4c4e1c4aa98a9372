import * as assert from 'node:assert/strict';
import * as jose from 'jose';
import { Ed25519PrivateKey } from '../../lib/crypto/ed25519';
import { JWS_TYPES, decodeJws, signJws, verifyJws } from '../../lib/crypto/jws';

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('lib/crypto/jws', () => {
  const key = Ed25519PrivateKey.generate();
  const payload = { iss: 'press-7', nonce: 'abc', iat: 1_700_000_000 };

  it('produces a compact JWS that jose verifies with the public JWK', async () => {
    const jws = signJws(payload, JWS_TYPES.attestation, key);
    const publicKey = await jose.importJWK(key.publicKey.toJwk(), 'EdDSA');
    const { payload: bytes, protectedHeader } = await jose.compactVerify(jws, publicKey, { algorithms: ['EdDSA'] });
    assert.deepEqual(protectedHeader, { alg: 'EdDSA', typ: JWS_TYPES.attestation });
    assert.deepEqual(JSON.parse(Buffer.from(bytes).toString()), payload);
  });

  it('verifies what jose signs', async () => {
    const privateJwk = { ...key.publicKey.toJwk(), d: Buffer.from(key.exportSeed()).toString('base64url') };
    const jws = await new jose.CompactSign(Buffer.from(JSON.stringify(payload)))
      .setProtectedHeader({ alg: 'EdDSA', typ: JWS_TYPES.attestation })
      .sign(await jose.importJWK(privateJwk, 'EdDSA'));
    assert.deepEqual(verifyJws(jws, JWS_TYPES.attestation, key.publicKey).payload, payload);
  });

  it('refuses a JWS signed by another key', () => {
    const jws = signJws(payload, JWS_TYPES.attestation, Ed25519PrivateKey.generate());
    assert.throws(() => verifyJws(jws, JWS_TYPES.attestation, key.publicKey), { code: 'bad_signature' });
  });

  it('refuses a payload altered after signing', () => {
    const [header, , signature] = signJws(payload, JWS_TYPES.attestation, key).split('.');
    const forged = `${header}.${b64({ ...payload, iss: 'press-8' })}.${signature}`;
    assert.throws(() => verifyJws(forged, JWS_TYPES.attestation, key.publicKey), { code: 'bad_signature' });
  });

  for (const alg of ['none', 'HS256', 'ES384', 'RS256', 'Ed25519']) {
    it(`refuses alg ${alg} before looking at the signature`, () => {
      const jws = `${b64({ alg, typ: JWS_TYPES.attestation })}.${b64(payload)}.${alg === 'none' ? 'AA' : 'c2ln'}`;
      assert.throws(() => decodeJws(jws, JWS_TYPES.attestation), { code: 'unsupported_alg' });
    });
  }

  it('refuses a registration presented where an attestation is expected (typ)', () => {
    const jws = signJws(payload, JWS_TYPES.registration, key);
    assert.throws(() => decodeJws(jws, JWS_TYPES.attestation), { code: 'wrong_typ' });
  });

  it('refuses critical header extensions it does not understand', () => {
    const jws = `${b64({ alg: 'EdDSA', typ: JWS_TYPES.attestation, crit: ['exp'], exp: 1 })}.${b64(payload)}.c2ln`;
    assert.throws(() => decodeJws(jws, JWS_TYPES.attestation), { code: 'malformed_jws' });
  });

  for (const [what, value] of [
    ['a number', 42],
    ['two segments', 'abc.def'],
    ['a JSON serialization', JSON.stringify({ payload: 'x', signatures: [] })],
    ['a header that is not JSON', `${Buffer.from('nope').toString('base64url')}.${b64(payload)}.c2ln`],
    ['a payload that is an array', `${b64({ alg: 'EdDSA', typ: JWS_TYPES.attestation })}.${b64([1, 2])}.c2ln`],
  ] as const) {
    it(`reports ${what} as malformed`, () => {
      assert.throws(() => decodeJws(value, JWS_TYPES.attestation), { code: 'malformed_jws' });
    });
  }
});
