/**
 * Short-lived client certificates (issue #23): issued only in the answer to an approved
 * attestation that carries the request, from the verifier's template alone, bound into the token
 * (cnf x5t#S256); every bad request refused with its code before anything is written; the CA kept
 * across restarts, loaded from files or held in an HSM; the CRL lists revoked devices' certificates.
 */
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as jose from 'jose';
import { newStoredKey, type Signer } from '../../lib/crypto/keys';
import { P256PrivateKey } from '../../lib/crypto/p256';
import type { DeviceIdentity } from '../../lib/edge/keystore';
import { SqliteStore } from '../../lib/verifier';
import { createAuthorityCertificate } from '../../lib/x509/authority';
import { pem, x509 } from '../../lib/x509/library';
import { buildCertificateRequest } from '../../lib/x509/request';
import { signerForX509 } from '../../lib/x509/signing';
import { buildAttestation } from '../../lib/edge/attestation';
import { TEST_PIN, softHsm } from '../helpers/hardware';
import { skipWith } from '../helpers/services';
import { RAW_COMPONENTS, makeDevice, registration } from '../fixtures/device';
import { admin, enrol, startHarness, type Harness } from './harness';

const TOKEN_TTL = 600;

/** A request whose SPKI is `claimed`'s but whose signature is `signing`'s: "signed by another key". */
async function requestSignedByAnother(claimed: Signer, signing: Signer, deviceId: string): Promise<Uint8Array> {
  return buildCertificateRequest(
    { alg: signing.alg, publicKey: claimed.publicKey, sign: m => signing.sign(m) },
    deviceId,
  );
}

/** A request asking for extensions of its own. */
async function requestWith(key: Signer, deviceId: string, extensions: unknown[]): Promise<Uint8Array> {
  const lib = x509();
  const { crypto: signing, keys, signingAlgorithm } = signerForX509(key);
  const request = await lib.Pkcs10CertificateRequestGenerator.create(
    { name: `CN=${deviceId}`, keys, signingAlgorithm, extensions: extensions as never },
    signing,
  );
  return new Uint8Array(request.rawData);
}

describe('verifier: short-lived client certificates', () => {
  let v: Harness;
  beforeEach(async () => {
    v = await startHarness({ tokenTtlSeconds: TOKEN_TTL, certificates: {} });
  });
  afterEach(async () => {
    await v.stop();
  });

  async function registered(device = makeDevice()): Promise<DeviceIdentity> {
    assert.equal((await v.post('/v1/devices', { registration: registration(device, v.clock.now) }, enrol)).status, 201);
    return device;
  }
  const nonceFor = async (device: DeviceIdentity) =>
    (await v.post('/v1/challenges', { deviceId: device.deviceId })).body.nonce as string;
  const attest = (device: DeviceIdentity, nonce: string, certificateRequest?: Uint8Array, extra = {}) => {
    const jws = buildAttestation(device, {
      audience: v.url,
      nonce,
      rawComponents: RAW_COMPONENTS,
      certificateRequest,
      now: v.clock.now,
    });
    if (!Object.keys(extra).length) return v.post('/v1/attestations', { attestation: jws });
    // The same attestation with fields of the caller's choosing in `certificate`, signed again.
    const payload = JSON.parse(Buffer.from(jws.split('.')[1], 'base64url').toString());
    const { signJws, JWS_TYPES } = require('../../lib/crypto/jws');
    const resigned = signJws(
      { ...payload, certificate: { ...payload.certificate, ...extra } },
      JWS_TYPES.attestation,
      device.privateKey,
    );
    return v.post('/v1/attestations', { attestation: resigned });
  };
  const caPem = async (harness = v) => (await fetch(`${harness.url}/v1/ca`)).text();

  it('issues a certificate from its template with an approval, chained to its CA and bound into the token', async () => {
    const device = await registered();
    const tlsKey = P256PrivateKey.generate();
    const answer = await attest(device, await nonceFor(device), await buildCertificateRequest(tlsKey, device.deviceId));
    assert.equal(answer.body.decision, 'approved');
    const certificate = new crypto.X509Certificate(answer.body.certificate);
    const ca = new crypto.X509Certificate(await caPem());
    assert.ok(certificate.verify(ca.publicKey), 'signed by the CA served at /v1/ca');
    assert.ok(certificate.checkIssued(ca));
    assert.equal(certificate.subject, `CN=${device.deviceId}`);
    assert.equal(certificate.subjectAltName, `URI:urn:m2m:device:${device.deviceId}`);
    assert.deepEqual(certificate.keyUsage, ['1.3.6.1.5.5.7.3.2']);
    assert.equal(certificate.ca, false);
    assert.equal(ca.ca, true);
    const spki = (key: crypto.KeyObject) => key.export({ type: 'spki', format: 'der' });
    assert.deepEqual(
      spki(certificate.publicKey),
      spki(crypto.createPublicKey({ key: tlsKey.publicKey.toJwk() as crypto.JsonWebKey, format: 'jwk' })),
      "the request's key, nothing else of it",
    );
    const lifetime = Date.parse(certificate.validTo) - v.clock.now;
    assert.ok(Math.abs(lifetime - 2 * TOKEN_TTL * 1000) < 2000, `twice the token lifetime, not ${lifetime} ms`);
    assert.equal(answer.body.certificateExpiresAt, new Date(Date.parse(certificate.validTo)).toISOString());
    const claims = jose.decodeJwt(answer.body.token) as { cnf: Record<string, string> };
    assert.equal(claims.cnf['x5t#S256'], crypto.createHash('sha256').update(certificate.raw).digest('base64url'));
    assert.equal(claims.cnf.jkt, device.privateKey.publicKey.thumbprint());
  });

  it('issues an Ed25519 key a certificate too, and none without a request', async () => {
    const device = await registered();
    const withEd = await attest(
      device,
      await nonceFor(device),
      await buildCertificateRequest(newStoredKey('EdDSA').key, device.deviceId),
    );
    assert.equal(new crypto.X509Certificate(withEd.body.certificate).publicKey.asymmetricKeyType, 'ed25519');
    const without = await attest(device, await nonceFor(device));
    assert.equal(without.body.decision, 'approved');
    assert.equal(without.body.certificate, undefined);
    assert.equal((jose.decodeJwt(without.body.token) as { cnf: object }).cnf['x5t#S256' as never], undefined);
  });

  it('refuses every bad request with its code, before deciding: the nonce stays good', async () => {
    const device = await registered();
    const key = P256PrivateKey.generate();
    const nonce = await nonceFor(device);
    const lib = x509();
    const cases: Array<[string, () => Promise<{ status: number; body: any }>, number, string]> = [
      [
        'signed by another key',
        async () =>
          attest(device, nonce, await requestSignedByAnother(key, P256PrivateKey.generate(), device.deviceId)),
        400,
        'bad_csr',
      ],
      [
        'for another device',
        async () => attest(device, nonce, await buildCertificateRequest(key, 'press-99')),
        400,
        'csr_other_device',
      ],
      [
        'asking to be a CA',
        async () =>
          attest(device, nonce, await requestWith(key, device.deviceId, [new lib.BasicConstraintsExtension(true)])),
        400,
        'csr_asks_too_much',
      ],
      [
        'asking for other names',
        async () =>
          attest(
            device,
            nonce,
            await requestWith(key, device.deviceId, [
              new lib.SubjectAlternativeNameExtension([{ type: 'dns', value: 'broker.plant' }]),
            ]),
          ),
        400,
        'csr_asks_too_much',
      ],
      [
        'asking for a week',
        async () =>
          attest(device, nonce, await buildCertificateRequest(key, device.deviceId), { lifetime: 7 * 86_400 }),
        400,
        'csr_asks_too_much',
      ],
      ['malformed DER', async () => attest(device, nonce, new Uint8Array(crypto.randomBytes(200))), 400, 'bad_csr'],
      [
        'a megabyte',
        async () => attest(device, nonce, undefined, { csr: 'A'.repeat(1 << 20) }),
        413,
        'payload_too_large',
      ],
    ];
    for (const [what, send, status, code] of cases) {
      const answer = await send();
      assert.deepEqual([answer.status, answer.body.code], [status, code], what);
    }
    const good = await attest(device, nonce, await buildCertificateRequest(key, device.deviceId));
    assert.equal(good.body.decision, 'approved', 'no refused request spent the nonce');
    assert.match(good.body.certificate, /BEGIN CERTIFICATE/);
  });

  it('gives a revoked device no certificate, and lists its certificates in the CRL until reinstated', async () => {
    const device = await registered();
    const key = P256PrivateKey.generate();
    const issued = await attest(device, await nonceFor(device), await buildCertificateRequest(key, device.deviceId));
    const serial = new crypto.X509Certificate(issued.body.certificate).serialNumber;
    const crlSerials = async () => {
      const crl = new (x509().X509Crl)(await (await fetch(`${v.url}/v1/crl`)).text());
      assert.ok(await crl.verify({ publicKey: new (x509().X509Certificate)(await caPem()).publicKey }));
      return crl.entries.map(entry => entry.serialNumber.toUpperCase());
    };
    assert.deepEqual(await crlSerials(), []);
    const nonce = await nonceFor(device);
    await v.post(`/v1/devices/${device.deviceId}/revoke`, {}, admin);
    const refused = await attest(device, nonce, await buildCertificateRequest(key, device.deviceId));
    assert.deepEqual(
      [refused.body.decision, refused.body.reasons, refused.body.certificate],
      ['declined', ['device_revoked'], undefined],
    );
    assert.deepEqual(await crlSerials(), [serial.toUpperCase()]);
    await v.post(`/v1/devices/${device.deviceId}/reinstate`, {}, admin);
    assert.deepEqual(await crlSerials(), []);
  });

  it('keeps its CA across a restart', async () => {
    const before = await caPem();
    const dir = v.dir;
    await v.close();
    const again = await startHarness({ certificates: {} }, dir);
    try {
      assert.equal(await caPem(again), before);
    } finally {
      await again.stop();
    }
  });

  it('says certificates_off where none are issued', async () => {
    const plain = await startHarness();
    try {
      assert.equal((await fetch(`${plain.url}/v1/ca`)).status, 404);
      const device = makeDevice();
      await plain.post('/v1/devices', { registration: registration(device, plain.clock.now) }, enrol);
      const nonce = (await plain.post('/v1/challenges', { deviceId: device.deviceId })).body.nonce;
      const jws = buildAttestation(device, {
        audience: plain.url,
        nonce,
        rawComponents: RAW_COMPONENTS,
        certificateRequest: await buildCertificateRequest(P256PrivateKey.generate(), device.deviceId),
        now: plain.clock.now,
      });
      const answer = await plain.post('/v1/attestations', { attestation: jws });
      assert.deepEqual([answer.status, answer.body.code], [400, 'certificates_off']);
    } finally {
      await plain.stop();
    }
  });
});

describe('verifier: its CA from files or from an HSM', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'm2m-ca-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function caFiles(key: P256PrivateKey, name: string): Promise<{ keyFile: string; certificateFile: string }> {
    const keyFile = path.join(dir, `${name}.key`);
    const certificateFile = path.join(dir, `${name}.crt`);
    const scalar = key.exportScalar();
    const jwk = { ...key.publicKey.toJwk(), d: Buffer.from(scalar).toString('base64url') };
    fs.writeFileSync(
      keyFile,
      crypto.createPrivateKey({ key: jwk, format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' }),
    );
    fs.writeFileSync(
      certificateFile,
      pem('CERTIFICATE', await createAuthorityCertificate(key, 'CN=plant CA', Date.now())),
    );
    return { keyFile, certificateFile };
  }

  it('issues with a CA key and certificate from PEM files, and refuses a pair that does not belong together', async () => {
    const key = P256PrivateKey.generate();
    const files = await caFiles(key, 'plant');
    const v = await startHarness({ certificates: { authority: { kind: 'files', ...files } } });
    try {
      assert.equal(await (await fetch(`${v.url}/v1/ca`)).text(), fs.readFileSync(files.certificateFile, 'utf8'));
    } finally {
      await v.stop();
    }
    const other = await caFiles(P256PrivateKey.generate(), 'other');
    await assert.rejects(
      startHarness({
        certificates: { authority: { kind: 'files', keyFile: files.keyFile, certificateFile: other.certificateFile } },
      }),
      { code: 'bad_config', message: /not for the CA key/ },
    );
    await assert.rejects(startHarness({ certificates: { lifetimeSeconds: 3 * 86_400 } }), {
      code: 'bad_config',
      message: /24 h/,
    });
  });

  it('issues with a CA key that never leaves a SoftHSM2 token, its certificate kept in the store', async function () {
    const hsm = softHsm();
    if (!hsm.ready) return skipWith(this, hsm.skipReason);
    const authority = { kind: 'pkcs11' as const, ...hsm.ready, keyLabel: `ca-${Date.now()}`, keyType: 'p256' as const };
    const first = await startHarness({ certificates: { authority } }, dir);
    const caText = await (await fetch(`${first.url}/v1/ca`)).text();
    const device = makeDevice();
    await first.post('/v1/devices', { registration: registration(device, first.clock.now) }, enrol);
    const nonce = (await first.post('/v1/challenges', { deviceId: device.deviceId })).body.nonce;
    const answer = await first.post('/v1/attestations', {
      attestation: buildAttestation(device, {
        audience: first.url,
        nonce,
        rawComponents: RAW_COMPONENTS,
        certificateRequest: await buildCertificateRequest(P256PrivateKey.generate(), device.deviceId),
        now: first.clock.now,
      }),
    });
    assert.ok(new crypto.X509Certificate(answer.body.certificate).verify(new crypto.X509Certificate(caText).publicKey));
    await first.close();
    const again = await startHarness({ certificates: { authority } }, dir);
    try {
      assert.equal(await (await fetch(`${again.url}/v1/ca`)).text(), caText, 'the same CA certificate after a restart');
      assert.ok(!fs.readFileSync(path.join(dir, 'verifier.db')).includes(Buffer.from(TEST_PIN)), 'no PIN in the store');
    } finally {
      await again.close();
    }
    new SqliteStore(path.join(dir, 'verifier.db')).close();
  });
});
