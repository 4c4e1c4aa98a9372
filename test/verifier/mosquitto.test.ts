/**
 * The broker follows the verifier (issue #23), against a Mosquitto started here with a TLS
 * listener that requires client certificates and the dynamic-security plugin: an approved device
 * connects with its certificate and publishes in its own tree only; a revocation drops it within
 * a second and its certificate is refused afterwards; expired and foreign certificates are
 * refused; a change made while the broker is down reaches it when it is back.
 */
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { MqttClient } from 'mqtt';
import { P256PrivateKey } from '../../lib/crypto/p256';
import { MosquittoDynsec } from '../../lib/brokers/mosquitto';
import { buildAttestation } from '../../lib/edge/attestation';
import { newCertificateRequest } from '../../lib/edge/client-certificate';
import type { DeviceIdentity } from '../../lib/edge/keystore';
import { CertificateAuthority, createAuthorityCertificate } from '../../lib/x509/authority';
import { pem } from '../../lib/x509/library';
import { checkCertificateRequest } from '../../lib/x509/request';
import { requireHardware } from '../helpers/hardware';
import { BROKER_ADMIN, type TestBroker, startMosquitto } from '../helpers/mosquitto';
import { RAW_COMPONENTS, makeDevice, registration } from '../fixtures/device';
import { admin, enrol, startHarness, type Harness } from './harness';

const mqtt: typeof import('mqtt') = require('mqtt');

interface Credentials {
  key: string;
  cert: string;
}

describe('verifier: Mosquitto follows the registry', function () {
  this.timeout(60_000);
  let dir: string;
  let caKey: P256PrivateKey;
  let authority: CertificateAuthority;
  let broker: TestBroker;
  let v: Harness;
  const clients: MqttClient[] = [];

  before(async function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-broker-'));
    caKey = P256PrivateKey.generate();
    const caDer = await createAuthorityCertificate(caKey, 'CN=plant devices', Date.now());
    authority = new CertificateAuthority(caDer, caKey);
    const keyFile = path.join(dir, 'ca.key');
    const jwk = { ...caKey.publicKey.toJwk(), d: Buffer.from(caKey.exportScalar()).toString('base64url') };
    fs.writeFileSync(
      keyFile,
      crypto.createPrivateKey({ key: jwk, format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' }),
    );
    const certificateFile = path.join(dir, 'ca.pem');
    fs.writeFileSync(certificateFile, pem('CERTIFICATE', caDer));
    const now = Date.now();
    broker = requireHardware(
      this,
      await startMosquitto(authority.pem, { crl: (await authority.crl([], now, now + 86_400_000)).pem }),
    );
    v = await startHarness({
      // The outbox's retries run on the real clock here.
      now: () => Date.now(),
      certificates: { authority: { kind: 'files', keyFile, certificateFile } },
      mosquitto: [
        {
          url: broker.adminUrl,
          ...BROKER_ADMIN,
          topics: 'plant/{deviceId}/#',
          crlFile: broker.crlFile,
          pidFile: broker.pidFile,
        },
      ],
    });
  });
  after(async () => {
    for (const client of clients) client.end(true);
    await v?.stop();
    await broker?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function registered(): Promise<DeviceIdentity> {
    const device = makeDevice();
    assert.equal((await v.post('/v1/devices', { registration: registration(device) }, enrol)).status, 201);
    return device;
  }

  /** An approved attestation's certificate for a fresh TLS key. */
  async function certified(device: DeviceIdentity): Promise<Credentials> {
    const request = await newCertificateRequest(device.deviceId);
    const nonce = (await v.post('/v1/challenges', { deviceId: device.deviceId })).body.nonce;
    const answer = await v.post('/v1/attestations', {
      attestation: buildAttestation(device, {
        audience: v.url,
        nonce,
        rawComponents: RAW_COMPONENTS,
        certificateRequest: request.csr,
      }),
    });
    assert.equal(answer.body.decision, 'approved');
    return { key: request.key, cert: answer.body.certificate };
  }

  /** Connects over TLS with `credentials`; resolves with the client, or rejects with the refusal. */
  function connect(credentials: Credentials): Promise<MqttClient> {
    return new Promise((resolve, reject) => {
      const client = mqtt.connect(broker.tlsUrl, {
        ...credentials,
        ca: broker.serverCa,
        protocolVersion: 5,
        reconnectPeriod: 0,
        connectTimeout: 5000,
      });
      clients.push(client);
      client.once('connect', () => resolve(client));
      client.once('error', err => {
        client.end(true);
        reject(err);
      });
      client.once('close', () => reject(new Error('closed before CONNACK')));
    });
  }

  /** Waits until the broker knows the device (the registration's event went through the outbox). */
  async function untilBrokerHas(deviceId: string, state: 'enabled' | 'blocked'): Promise<void> {
    const dynsec = new MosquittoDynsec({ url: broker.adminUrl, ...BROKER_ADMIN });
    try {
      const started = Date.now();
      for (;;) {
        const [answer] = await dynsec.send([{ command: 'getClient', username: deviceId }], ['Client not found']);
        const client = (answer.data as { client?: { disabled?: boolean; roles?: Array<{ rolename: string }> } })
          ?.client;
        const blocked = !!client?.roles?.some(role => role.rolename === 'm2m-blocked');
        if (client && (state === 'blocked') === blocked) return;
        if (Date.now() - started > 10_000) throw new Error(`the broker did not show ${deviceId} ${state}`);
        await new Promise(resolve => setTimeout(resolve, 50));
      }
    } finally {
      await dynsec.close();
    }
  }

  it('lets an approved device connect with its certificate and publish in its own tree only', async () => {
    const device = await registered();
    await untilBrokerHas(device.deviceId, 'enabled');
    const client = await connect(await certified(device));
    await client.publishAsync(`plant/${device.deviceId}/temperature`, '21.5', { qos: 1 });
    await assert.rejects(client.publishAsync('plant/another-press/temperature', '99', { qos: 1 }), { code: 135 });
    const granted = await client.subscribeAsync('plant/#', { qos: 1 }).catch(err => err);
    assert.ok(granted instanceof Error || granted[0].qos === 135, 'no subscription beyond its own tree');
    client.end(true);
  });

  it('drops a revoked device within a second, refuses its certificate afterwards, and lets it back after reinstatement', async () => {
    const device = await registered();
    await untilBrokerHas(device.deviceId, 'enabled');
    const credentials = await certified(device);
    const client = await connect(credentials);
    const closed = new Promise<number>(resolve => client.once('close', () => resolve(performance.now())));
    const revokedAt = performance.now();
    assert.equal((await v.post(`/v1/devices/${device.deviceId}/revoke`, { reason: 'stolen' }, admin)).status, 200);
    const droppedAfterMs = (await closed) - revokedAt;
    console.log(`      revocation to broker disconnect: ${droppedAfterMs.toFixed(1)} ms`);
    assert.ok(droppedAfterMs < 1000, `dropped after ${droppedAfterMs} ms`);
    await untilBrokerHas(device.deviceId, 'blocked');
    // The CRL reaches the broker with the revocation: the same certificate no longer passes TLS.
    await assert.rejects(connect(credentials), (err: { code?: string; message: string }) =>
      /REVOKED|revoked/.test(`${err.code} ${err.message}`),
    );
    await v.post(`/v1/devices/${device.deviceId}/reinstate`, {}, admin);
    await untilBrokerHas(device.deviceId, 'enabled');
    const again = await connect(await certified(device));
    await again.publishAsync(`plant/${device.deviceId}/state`, 'back', { qos: 1 });
    again.end(true);
  });

  it('refuses an expired certificate and one from another CA', async () => {
    const device = await registered();
    await untilBrokerHas(device.deviceId, 'enabled');
    const request = await newCertificateRequest(device.deviceId);
    const { spki } = await checkCertificateRequest(request.csr, device.deviceId);
    const expired = await authority.issue(device.deviceId, spki, 3600_000, Date.now() - 2 * 3600_000);
    await assert.rejects(connect({ key: request.key, cert: expired.pem }), /expired|EXPIRED/);
    const otherKey = P256PrivateKey.generate();
    const other = new CertificateAuthority(
      await createAuthorityCertificate(otherKey, 'CN=plant devices', Date.now()),
      otherKey,
    );
    const foreign = await other.issue(device.deviceId, spki, 3600_000, Date.now());
    await assert.rejects(connect({ key: request.key, cert: foreign.pem }), /unknown ca|UNKNOWN_CA/i);
  });

  it('applies a revocation made while the broker was down once it is back', async () => {
    const device = await registered();
    await untilBrokerHas(device.deviceId, 'enabled');
    await broker.stop();
    await v.post(`/v1/devices/${device.deviceId}/revoke`, {}, admin);
    await new Promise(resolve => setTimeout(resolve, 1500));
    const pending = (await v.get('/v1/webhooks/deliveries?status=pending', admin)).body.deliveries;
    assert.ok(
      pending.some((delivery: object) => /broker_unreachable/.test(JSON.stringify(delivery))),
      `the revocation waits, saying why: ${JSON.stringify(pending)}`,
    );
    await broker.start();
    await untilBrokerHas(device.deviceId, 'blocked');
  });

  it('reports a dynamic-security answer with an error as such', async () => {
    const dynsec = new MosquittoDynsec({ url: broker.adminUrl, ...BROKER_ADMIN });
    try {
      await assert.rejects(dynsec.send([{ command: 'frobnicate' }]), {
        code: 'dynsec_error',
        message: /Unknown command/,
      });
      await assert.rejects(dynsec.send([{ command: 'disableClient', username: 'nobody-here' }]), {
        code: 'dynsec_error',
        message: /Client not found/,
      });
    } finally {
      await dynsec.close();
    }
  });
});
