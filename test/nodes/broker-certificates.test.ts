/**
 * The MQTT client-certificate example in a real Node-RED with its core MQTT and TLS nodes,
 * against a Mosquitto started here (TLS listener requiring client certificates, dynamic security,
 * the verifier's CRL): the gateway connects with its certificate and publishes; a QoS 1 stream
 * through two renewals loses nothing; a revocation drops it from the broker within a second and
 * its certificate is refused afterwards.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { MqttClient } from 'mqtt';
import { requireHardware } from '../helpers/hardware';
import { BROKER_ADMIN, type TestBroker, startMosquitto } from '../helpers/mosquitto';
import { nodeRedPath } from '../helpers/node-red';
import { ADMIN_KEY, catchNode, helper, m2mNodes, nodeRedPerTest } from './harness';

const mqtt: typeof import('mqtt') = require('mqtt');
const core = path.join(
  path.dirname(require.resolve('@node-red/nodes/package.json', { paths: [path.dirname(nodeRedPath())] })),
  'core',
);
const coreNodes = ['network/10-mqtt.js', 'network/05-tls.js', 'common/90-comment.js'].map(file =>
  require(path.join(core, file)),
);
const examplePath = path.join(
  __dirname,
  '..',
  '..',
  '..',
  'examples',
  'm2m-reauth-timer',
  'mqtt-client-certificates.json',
);
const DEVICE = 'mqtt-gateway';
/** Readings in the QoS 1 stream. */
const STREAM = 240;

type FlowNode = { id: string; type: string; [key: string]: unknown };

describe('nodes: MQTT over TLS with client certificates (the example, against Mosquitto)', function () {
  this.timeout(120_000);
  const nodeRed = nodeRedPerTest();
  let broker: TestBroker | undefined;
  let subscriber: MqttClient | undefined;

  afterEach(async () => {
    subscriber?.end(true);
    await broker?.stop();
  });

  /** The example as a user would deploy it, pointed at `broker`; debug nodes and the inject become helpers. */
  function example(changes: Record<string, Record<string, unknown>>): FlowNode[] {
    const flow = JSON.parse(fs.readFileSync(examplePath, 'utf8')) as FlowNode[];
    return flow.map(node =>
      node.type === 'debug' || node.type === 'inject'
        ? { id: node.id, z: node.z, type: 'helper' }
        : { ...node, ...changes[node.id] },
    );
  }

  async function until(check: () => boolean, ms: number, what: string, everyMs = 20): Promise<number> {
    const started = performance.now();
    while (!check()) {
      if (performance.now() - started > ms) throw new Error(`${what} not within ${ms} ms`);
      await new Promise(resolve => setTimeout(resolve, everyMs));
    }
    return performance.now() - started;
  }

  it('connects with its certificate, keeps a QoS 1 stream whole through renewals, and is dropped within a second of a revocation', async function () {
    const credentials = {
      'mc-verifier': { adminKey: ADMIN_KEY, mosquittoPassword: BROKER_ADMIN.password },
    };
    // First the verifier alone: its CA (made now, kept in its database) is what the broker trusts.
    const verifierOnly = example({ 'mc-verifier': { mosquittoUrl: '' } }).filter(
      node => node.id === 'mc-tab' || node.id === 'mc-verifier',
    );
    await helper.load([nodeRed.http.capture, ...m2mNodes], verifierOnly, credentials);
    const base = `${nodeRed.http.url}/m2m-mqtt/v1`;
    const ca = await (await fetch(`${base}/ca`)).text();
    const crl = await (await fetch(`${base}/crl`)).text();
    assert.match(ca, /BEGIN CERTIFICATE/);
    await helper.unload();
    broker = requireHardware(this, await startMosquitto(ca, { crl }));

    const serverCa = path.join(nodeRed.userDir, 'broker-ca.pem');
    fs.writeFileSync(serverCa, broker.serverCa);
    const flow = example({
      'mc-verifier': {
        mosquittoUrl: broker.adminUrl,
        mosquittoCrlFile: broker.crlFile,
        mosquittoPidFile: broker.pidFile,
      },
      'mc-tls': { ca: serverCa },
      'mc-broker': { port: String(broker.tlsPort) },
    });
    subscriber = await mqtt.connectAsync(broker.adminUrl, { ...BROKER_ADMIN, protocolVersion: 5 });
    const received = new Set<number>();
    subscriber.on('message', (_topic, payload) => received.add(Number(payload.toString())));
    await subscriber.subscribeAsync(`plant/${DEVICE}/#`, { qos: 1 });

    await helper.load([nodeRed.http.capture, catchNode, ...coreNodes, ...m2mNodes], flow, credentials);
    const mqttBroker = helper.getNode('mc-broker') as unknown as { connected: boolean };
    const tls = helper.getNode('mc-tls') as unknown as { cert?: Buffer };
    await until(() => mqttBroker.connected, 30_000, 'the broker connection with the first certificate');

    // A QoS 1 stream, with two renewals (each a new certificate and a reconnection) in the middle.
    const certificates = new Set<string>();
    const watch = setInterval(() => tls.cert && certificates.add(tls.cert.toString()), 10);
    const timer = helper.getNode('mc-timer');
    const stamped: number[] = [];
    helper.getNode('mc-debug-sent').on('input', (msg: any) => stamped.push(msg.payload));
    const events: unknown[] = [];
    helper.getNode('mc-debug-events').on('input', (msg: any) => events.push(msg.payload));
    // Triggered attestations come at most every 5 s (and the first after deploy at a random
    // moment): three asked for over 17 s leave at least two renewals inside the stream.
    for (let seq = 1; seq <= STREAM; seq++) {
      if (seq === 30 || seq === 110 || seq === 190) timer.receive({ m2m: { reauth: 'request' } });
      timer.receive({ topic: `plant/${DEVICE}/seq`, payload: seq });
      await new Promise(resolve => setTimeout(resolve, 70));
    }
    await until(() => received.size === STREAM, 30_000, `all ${STREAM} readings`).catch(err => {
      const missing = Array.from({ length: STREAM }, (_, i) => i + 1).filter(seq => !received.has(seq));
      throw new Error(
        `${err.message}: missing ${missing.join(', ')}; stamped ${stamped.slice(0, 5)}..${stamped.length}; events ${JSON.stringify(events)} log ${broker!.dir}`,
      );
    });
    clearInterval(watch);
    assert.ok(certificates.size >= 3, `renewed twice: ${certificates.size} certificates seen`);
    assert.deepEqual(
      [...received].sort((a, b) => a - b),
      Array.from({ length: STREAM }, (_, i) => i + 1),
    );

    // A revocation (what the fleet sidebar's revoke calls): the broker drops the gateway.
    const lastCertificate = tls.cert!.toString();
    const lastKey = (helper.getNode('mc-tls') as unknown as { key: Buffer }).key.toString();
    const revoked = await fetch(`${base}/devices/${DEVICE}/revoke`, {
      method: 'POST',
      headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'gateway stolen' }),
    });
    const requested = performance.now();
    assert.equal(revoked.status, 200);
    await until(() => !mqttBroker.connected, 1000, 'the broker dropping the gateway', 2);
    console.log(`      revocation to disconnect, in Node-RED: ${(performance.now() - requested).toFixed(1)} ms`);
    // The CRL follows the kick (written, then read on SIGHUP): from then on the certificate fails TLS.
    const refusal = async () => {
      const started = performance.now();
      for (;;) {
        try {
          const client = await mqtt.connectAsync(broker!.tlsUrl, {
            key: lastKey,
            cert: lastCertificate,
            ca: broker!.serverCa,
            protocolVersion: 5,
            reconnectPeriod: 0,
          });
          client.end(true);
        } catch (err) {
          return { err: err as Error, afterMs: performance.now() - started };
        }
        if (performance.now() - started > 3000) throw new Error('the revoked certificate still connects after 3 s');
        await new Promise(resolve => setTimeout(resolve, 50));
      }
    };
    const { err } = await refusal();
    assert.match(`${(err as { code?: string }).code} ${err.message}`, /revoked|REVOKED/);
  });
});
