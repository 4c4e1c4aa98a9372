/**
 * Device keys in real tokens: a SoftHSM2 token and a software TPM, both started by the suite
 * (test/helpers/hardware). The private key must never come out, the signatures must verify outside
 * the token, and each wrong setting must say which one it is.
 */
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as pkcs11js from 'pkcs11js';
import { HardwareIdentity } from '../../lib/edge/hardware-identity';
import { type Pkcs11KeyOptions, type TokenKey, openPkcs11Key } from '../../lib/edge/pkcs11-key';
import { type SoftwareTpm, TEST_PIN, type TestToken, requireHardware, softHsm, softwareTpm } from '../helpers/hardware';

const MESSAGE = new TextEncoder().encode('press-7 says hello');

/** The verdict of node:crypto alone, from the public key's JWK: nothing of ours in the loop. */
function verifiesOutside(key: TokenKey, message: Uint8Array, signature: Uint8Array): boolean {
  const publicKey = crypto.createPublicKey({ key: key.publicKey.toJwk() as crypto.JsonWebKey, format: 'jwk' });
  return key.alg === 'EdDSA'
    ? crypto.verify(null, message, publicKey, signature)
    : crypto.verify('sha256', message, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature);
}

/**
 * The private key's attributes, read through a session of the test's own: the module is already
 * initialised in this process (by the key under test), which PKCS#11 shares per process.
 */
function privateKeyAttributes(token: TestToken, label: string, types: number[]): Array<Buffer | Error> {
  const p11: typeof pkcs11js = require('pkcs11js');
  const lib = new p11.PKCS11();
  lib.load(token.module);
  try {
    lib.C_Initialize();
  } catch (err) {
    if ((err as { code?: number }).code !== p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw err;
  }
  const slot = lib
    .C_GetSlotList(true)
    .find(candidate => lib.C_GetTokenInfo(candidate).label.replace(/\0/g, '').trim() === token.token);
  assert.ok(slot, `the token ${token.token}`);
  const session = lib.C_OpenSession(slot, p11.CKF_SERIAL_SESSION);
  try {
    try {
      lib.C_Login(session, p11.CKU_USER, token.pin);
    } catch (err) {
      if ((err as { code?: number }).code !== p11.CKR_USER_ALREADY_LOGGED_IN) throw err;
    }
    lib.C_FindObjectsInit(session, [
      { type: p11.CKA_CLASS, value: p11.CKO_PRIVATE_KEY },
      { type: p11.CKA_LABEL, value: label },
    ]);
    const handle = lib.C_FindObjects(session);
    lib.C_FindObjectsFinal(session);
    assert.ok(handle, `the private key ${label}`);
    return types.map(type => {
      try {
        return lib.C_GetAttributeValue(session, handle, [{ type }])[0].value as Buffer;
      } catch (err) {
        return err as Error;
      }
    });
  } finally {
    lib.C_CloseSession(session);
  }
}

async function rejects(open: () => unknown, code: string, also?: RegExp): Promise<void> {
  assert.throws(open, (err: { code?: string; message: string }) => {
    assert.equal(err.code, code, err.message);
    if (also) assert.match(err.message, also);
    assert.ok(!err.message.includes(TEST_PIN), 'the PIN is never in a message');
    return true;
  });
}

/** Both tokens hold keys the same way; what differs is what they can hold. */
function keyLifecycle(
  name: string,
  token: () => TestToken,
  keyTypes: Array<Pkcs11KeyOptions['keyType']>,
  storage: Pkcs11KeyOptions['storage'],
) {
  const options = (overrides: Partial<Pkcs11KeyOptions> = {}): Pkcs11KeyOptions => ({
    ...token(),
    keyLabel: `${name}-key`,
    keyType: keyTypes[0],
    create: true,
    storage,
    ...overrides,
  });
  const opened: TokenKey[] = [];
  const open = (overrides: Partial<Pkcs11KeyOptions> = {}) => {
    const key = openPkcs11Key(options(overrides));
    opened.push(key);
    return key;
  };
  afterEach(() => {
    for (const key of opened.splice(0)) key.close();
  });

  for (const keyType of keyTypes)
    it(`generates a ${keyType} key inside the token whose private half cannot be read out, and signs with it`, () => {
      const label = `${name}-${keyType}-generated`;
      const key = open({ keyLabel: label, keyType });
      assert.equal(key.created, true);
      assert.equal(key.alg, keyType === 'p256' ? 'ES256' : 'EdDSA');
      assert.equal(key.storage, storage);
      const signature = key.sign(MESSAGE);
      assert.equal(signature.length, 64, 'Ed25519, and ES256 as raw r‖s');
      assert.ok(verifiesOutside(key, MESSAGE, signature));
      assert.ok(!verifiesOutside(key, new TextEncoder().encode('another message'), signature));

      const p11: typeof pkcs11js = require('pkcs11js');
      const [value, sensitive, extractable] = privateKeyAttributes(token(), label, [
        p11.CKA_VALUE,
        p11.CKA_SENSITIVE,
        p11.CKA_EXTRACTABLE,
      ]);
      assert.ok(value instanceof Error, 'reading CKA_VALUE fails');
      // SoftHSM refuses the sensitive attribute, tpm2-pkcs11 has no such attribute to give.
      assert.match(value.message, /CKR_ATTRIBUTE_SENSITIVE|CKR_ATTRIBUTE_TYPE_INVALID/);
      assert.deepEqual(sensitive, Buffer.from([1]), 'CKA_SENSITIVE');
      assert.deepEqual(extractable, Buffer.from([0]), 'CKA_EXTRACTABLE');
    });

  it('opens the key it generated by its label, the same key, and says it did not create it', () => {
    const first = open({ keyLabel: `${name}-reopened` });
    const again = open({ keyLabel: `${name}-reopened`, create: false });
    assert.equal(again.created, false);
    assert.deepEqual(again.publicKey.toJwk(), first.publicKey.toJwk());
    assert.ok(verifiesOutside(first, MESSAGE, again.sign(MESSAGE)));
  });

  it('names what is wrong: module, token, slot, PIN, key label, key type', async () => {
    await rejects(() => open({ module: '/nonexistent/libpkcs11.so' }), 'pkcs11_module', /nonexistent/);
    await rejects(() => open({ token: 'no-such-token' }), 'pkcs11_token_not_found', new RegExp(token().token));
    await rejects(() => open({ token: undefined, slot: 99 }), 'pkcs11_token_not_found', /slot 99/);
    await rejects(() => open({ pin: `${TEST_PIN}-wrong` }), 'pkcs11_pin_incorrect');
    await rejects(() => open({ keyLabel: `${name}-absent`, create: false }), 'pkcs11_key_not_found', /absent/);
    open({ keyLabel: `${name}-typed`, keyType: keyTypes[0] });
    const other: Pkcs11KeyOptions['keyType'] = keyTypes[0] === 'p256' ? 'ed25519' : 'p256';
    await rejects(
      () => open({ keyLabel: `${name}-typed`, keyType: other, create: false }),
      'pkcs11_unsupported_key',
      other === 'p256' ? /is not an EC P-256 key/ : /not Ed25519/,
    );
  });
}

describe('edge: a device key in a SoftHSM2 token', () => {
  let token: TestToken;
  before(function () {
    token = requireHardware(this, softHsm());
  });

  keyLifecycle('hsm', () => token, ['ed25519', 'p256'], 'pkcs11');

  it('keeps the fingerprint salt of the file key it replaces, across restarts', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-hw-'));
    const fileSalt = new Uint8Array(crypto.randomBytes(16));
    const options = {
      ...token,
      deviceId: 'press-9',
      dir,
      keyLabel: 'm2m-press-9',
      keyType: 'ed25519' as const,
      storage: 'pkcs11' as const,
    };
    const first = new HardwareIdentity({ ...options, previousSalt: () => fileSalt });
    const second = new HardwareIdentity({ ...options, previousSalt: () => undefined });
    try {
      const made = first.get();
      assert.equal(made.created, true);
      assert.deepEqual(made.identity.fingerprintSalt, fileSalt);
      assert.equal(made.identity.storage, 'pkcs11');
      first.close();
      const reopened = second.get();
      assert.equal(reopened.created, false);
      assert.deepEqual(reopened.identity.fingerprintSalt, fileSalt, 'the salt file, not a new salt');
      assert.deepEqual(reopened.identity.privateKey.publicKey.toJwk(), made.identity.privateKey.publicKey.toJwk());
      const saltFile = fs.readFileSync(path.join(dir, 'press-9.hardware.json'), 'utf8');
      assert.ok(!saltFile.includes(TEST_PIN));
    } finally {
      second.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('edge: a device key in a software TPM through tpm2-pkcs11', function () {
  this.timeout(60_000);
  let tpm: SoftwareTpm;
  before(async function () {
    tpm = requireHardware(this, await softwareTpm());
  });
  const token = () => tpm;

  keyLifecycle('tpm', token, ['p256'], 'tpm');

  it('refuses an Ed25519 key, which no TPM holds, before touching the token', async () => {
    await rejects(
      () => openPkcs11Key({ ...token(), keyLabel: 'tpm-ed', keyType: 'ed25519', create: true, storage: 'tpm' }),
      'pkcs11_unsupported_key',
      /P-256/,
    );
  });

  it('says the token went away while running, and signs again once it is back', async () => {
    const key = openPkcs11Key({ ...token(), keyLabel: 'tpm-removed', keyType: 'p256', create: true, storage: 'tpm' });
    try {
      assert.ok(verifiesOutside(key, MESSAGE, key.sign(MESSAGE)));
      await token().pause();
      try {
        await rejects(() => key.sign(MESSAGE), 'pkcs11_token_removed');
        await rejects(() => key.sign(MESSAGE), 'pkcs11_token_removed');
      } finally {
        await token().resume();
      }
      assert.ok(verifiesOutside(key, MESSAGE, key.sign(MESSAGE)));
    } finally {
      key.close();
    }
  });

  it('tries a wrong PIN once per deployment: the TPM counts every try towards its lockout', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-hw-'));
    const identity = new HardwareIdentity({
      ...token(),
      pin: `${TEST_PIN}-wrong`,
      deviceId: 'press-10',
      dir,
      keyLabel: 'm2m-press-10',
      keyType: 'p256',
      storage: 'tpm',
    });
    try {
      const before = token().lockoutCounter();
      for (let attempt = 0; attempt < 3; attempt++)
        await rejects(() => identity.get(), 'pkcs11_pin_incorrect', /not tried again/);
      assert.equal(token().lockoutCounter(), before + 1);
    } finally {
      identity.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
