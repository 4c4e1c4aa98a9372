/**
 * The shipped example flows, loaded as a user imports them (core nodes and all; debug nodes
 * become test helpers), checked for what their info text promises.
 */
import * as assert from 'node:assert/strict';
import { MQTT_SERVICE, skipWith } from '../helpers/services';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DOUBLE_API_KEY, type DiditDouble, JPEG, startDiditDouble } from '../helpers/didit-double';
import { nodeRedPath } from '../helpers/node-red';
import { helper, m2mNodes, nodeRedPerTest } from './harness';

const examplesDir = path.join(__dirname, '..', '..', '..', 'examples');
const core = path.join(
  path.dirname(require.resolve('@node-red/nodes/package.json', { paths: [path.dirname(nodeRedPath())] })),
  'core',
);
const coreNodes = [
  'common/20-inject.js',
  'function/10-function.js',
  'function/89-delay.js',
  'function/15-change.js',
  'function/10-switch.js',
  'common/90-comment.js',
  'network/10-mqtt.js',
].map(file => require(path.join(core, file)));

type FlowNode = { id: string; type: string; [key: string]: unknown };

/** The example's nodes; debug nodes, and those of `asHelpers`, become test helpers. */
function example(file: string, asHelpers: string[] = []): FlowNode[] {
  const flow = JSON.parse(fs.readFileSync(path.join(examplesDir, file), 'utf8')) as FlowNode[];
  return flow.map(node =>
    node.type === 'debug' || asHelpers.includes(node.type) ? { id: node.id, z: node.z, type: 'helper' } : node,
  );
}

describe('examples', function () {
  this.timeout(60_000);
  const nodeRed = nodeRedPerTest();

  async function until(check: () => boolean, ms: number, what: string): Promise<void> {
    const started = Date.now();
    while (!check()) {
      if (Date.now() - started > ms) throw new Error(`${what} not within ${ms} ms`);
      await new Promise(resolve => setTimeout(resolve, 50));
    }
  }

  function collect(ids: string[]): Record<string, any[]> {
    const out: Record<string, any[]> = Object.fromEntries(ids.map(id => [id, []]));
    for (const id of ids) helper.getNode(id).on('input', (msg: unknown) => out[id].push(msg));
    return out;
  }

  it('quick start: registers the gateway, stamps a reading every 5 s, and the receiver finds each one valid', async () => {
    await helper.load([nodeRed.http.capture, ...coreNodes, ...m2mNodes], example('quick-start.json'));
    const out = collect([
      'qs-debug-provisioned',
      'qs-debug-stamped',
      'qs-debug-valid',
      'qs-debug-invalid',
      'qs-debug-events',
      'qs-debug-webhooks',
    ]);
    await until(() => out['qs-debug-valid'].length >= 1, 20_000, 'a checked reading');
    await until(() => out['qs-debug-webhooks'].length >= 2, 5_000, 'the signed events');
    assert.deepEqual(
      out['qs-debug-webhooks'].map(msg => [msg.topic, msg.m2m.deviceId, msg.m2m.scheme]),
      [
        ['device.registered', 'quickstart-gateway', 'standard'],
        ['attestation.decided', 'quickstart-gateway', 'standard'],
      ],
    );
    assert.equal(out['qs-debug-provisioned'][0].m2m.status, 'active');
    assert.equal(out['qs-debug-valid'][0].m2m.deviceId, 'quickstart-gateway');
    assert.deepEqual(out['qs-debug-invalid'], []);
    assert.deepEqual(out['qs-debug-events'], []);
  });

  it("central decisions: the quick start verifier's signed events become access notices", async () => {
    const central = example('m2m-webhook-in/central-decisions.json', ['mqtt out']).filter(
      n => n.type !== 'mqtt-broker',
    );
    await helper.load([nodeRed.http.capture, ...coreNodes, ...m2mNodes], [...example('quick-start.json'), ...central]);
    const out = collect(['dec-mqtt', 'dec-debug-other']);
    await until(() => out['dec-mqtt'].length >= 1, 20_000, 'an access notice');
    const [notice] = out['dec-mqtt'];
    assert.equal(notice.topic, 'plant/acl/quickstart-gateway');
    assert.deepEqual([notice.payload.access, notice.payload.decision], ['allow', 'approved']);
    assert.equal(
      (helper.getNode('dec-allow').context().flow.get('fleet') as any)['quickstart-gateway'].access,
      'allow',
    );
    assert.deepEqual(
      out['dec-debug-other'].map(msg => msg.topic),
      ['device.registered'],
    );
  });

  it("receive Didit's webhooks: a signed approval on output 1 with the session's device", async () => {
    const secret = 'didit-secret-from-the-console';
    await helper.load(
      [nodeRed.http.capture, ...coreNodes, ...m2mNodes],
      example('m2m-webhook-in/didit-webhooks.json'),
      {
        'didit-webhook': { secrets: secret },
      },
    );
    const out = collect(['didit-debug-approved', 'didit-debug-status', 'didit-debug-partial']);
    const body = JSON.stringify({
      event_id: 'e-9',
      session_id: 's-9',
      status: 'Approved',
      timestamp: Math.floor(Date.now() / 1000),
      vendor_data: 'press-9',
      webhook_type: 'status.updated',
    });
    const signature = crypto.createHmac('sha256', secret).update(body).digest('hex');
    const answer = await fetch(`${nodeRed.http.url}/didit-webhooks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-signature': signature },
      body,
    });
    assert.equal(answer.status, 204);
    await until(() => out['didit-debug-approved'].length === 1, 5_000, 'the approval');
    assert.deepEqual(out['didit-debug-approved'][0].payload, {
      deviceId: 'press-9',
      session: 's-9',
      status: 'Approved',
    });
  });

  describe('Didit, against the Didit double', () => {
    let didit: DiditDouble;
    beforeEach(async () => {
      didit = await startDiditDouble();
    });
    afterEach(async () => {
      await didit.close();
    });

    /** The example with its Didit configuration pointed at the double. */
    function againstDouble(file: string, configId: string): FlowNode[] {
      return example(file).map(node => (node.id === configId ? { ...node, baseUrl: didit.url } : node));
    }

    it('operator at a machine: Start opens a session, the HMI gets its link, a confirmed approval unlocks', async () => {
      const secret = 'didit-webhook-secret-from-the-console';
      await helper.load(
        [nodeRed.http.capture, ...coreNodes, ...m2mNodes],
        againstDouble('m2m-didit-session/operator-at-machine.json', 'op-didit'),
        { 'op-didit': { apiKey: DOUBLE_API_KEY, webhookSecret: secret } },
      );
      const out = collect(['op-hmi', 'op-not-opened', 'op-plc', 'op-refused', 'op-other']);
      helper.getNode('op-start').receive({});
      await until(() => out['op-hmi'].length === 1, 5_000, 'the link');
      assert.match(out['op-hmi'][0].payload, /^https:\/\/verify\.didit\.me\/session\//);
      assert.equal(didit.requests[0].json?.vendor_data, 'press-7');
      const sessionId = out['op-hmi'][0].m2m.sessionId;

      const webhook = async (status: string, secondsAgo: number) => {
        const body = JSON.stringify({
          session_id: sessionId,
          status,
          webhook_type: 'status.updated',
          vendor_data: 'press-7',
          timestamp: Math.floor(Date.now() / 1000) - secondsAgo,
        });
        const answer = await fetch(`${nodeRed.http.url}/didit-operator`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'x-signature': crypto.createHmac('sha256', secret).update(body).digest('hex'),
          },
          body,
        });
        assert.equal(answer.status, 204);
      };
      // A webhook claiming approval while Didit itself says otherwise unlocks nothing.
      didit.finish(sessionId, 'In Review');
      await webhook('Approved', 10);
      await until(() => out['op-refused'].length === 1, 5_000, 'the refusal');
      assert.deepEqual(out['op-refused'][0].m2m.reasons, ['didit_in_review']);
      didit.finish(sessionId, 'Approved');
      await webhook('Approved', 0);
      await until(() => out['op-plc'].length === 1, 5_000, 'the unlock');
      assert.deepEqual([out['op-plc'][0].topic, out['op-plc'][0].payload], ['plant/press-7/unlock', true]);
    });

    it('camera station: the camera picture and the badge photo go to Didit, a match opens the turnstile', async () => {
      const dir = nodeRed.userDir;
      fs.writeFileSync(path.join(dir, 'latest.jpg'), JPEG);
      fs.writeFileSync(path.join(dir, '1234.jpg'), JPEG);
      await helper.load(
        [nodeRed.http.capture, ...coreNodes, ...m2mNodes],
        againstDouble('m2m-didit-face-match/camera-station.json', 'face-didit'),
        { 'face-didit': { apiKey: DOUBLE_API_KEY } },
      );
      const out = collect(['face-turnstile', 'face-refused']);
      const scan = {
        filename: path.join(dir, 'latest.jpg'),
        refImage: path.join(dir, '1234.jpg'),
        topic: 'turnstile-2',
      };
      helper.getNode('face-match').receive(scan);
      await until(() => out['face-turnstile'].length === 1, 5_000, 'the turnstile');
      assert.deepEqual(
        [out['face-turnstile'][0].topic, out['face-turnstile'][0].payload],
        ['plant/turnstile-2/open', true],
      );
      assert.equal(didit.requests[0].parts?.face_match_score_decline_threshold, '40');
      didit.faceScore = 35;
      helper.getNode('face-match').receive(scan);
      await until(() => out['face-refused'].length === 1, 5_000, 'the refusal');
      assert.deepEqual(out['face-refused'][0].m2m.reasons, ['LOW_FACE_MATCH_SIMILARITY']);
    });
  });

  describe('edge and central over MQTT', () => {
    before(function () {
      if (!MQTT_SERVICE().url) skipWith(this, MQTT_SERVICE().skipReason!);
    });

    it('edge telemetry reaches the central flow stamped, and every reading checks out', async () => {
      const { hostname, port } = new URL(MQTT_SERVICE().url!);
      const broker = (n: FlowNode) => (n.type === 'mqtt-broker' ? { ...n, broker: hostname, port: port || '1883' } : n);
      const verifier = example('quick-start.json').filter(n => n.type === 'm2m-verifier' || n.type === 'tab');
      const edge = example('m2m-reauth-timer/edge-telemetry-mqtt.json').map(broker);
      const central = example('m2m-token-check/central-check-mqtt.json').map(broker);
      await helper.load([nodeRed.http.capture, ...coreNodes, ...m2mNodes], [...verifier, ...edge, ...central]);
      const out = collect(['central-debug-valid', 'central-debug-invalid']);
      await until(() => out['central-debug-valid'].length >= 2, 20_000, 'readings checked at the centre');
      assert.deepEqual(
        out['central-debug-invalid'].map(m => m.m2m.reason),
        [],
      );
      assert.equal(out['central-debug-valid'][0].m2m.deviceId, 'press-7-gateway');
    });
  });

  describe('attest with behaviour', () => {
    // The example points to this Node-RED's verifier, which the quick start hosts.
    const hostedVerifier = () => example('quick-start.json').filter(n => n.type === 'm2m-verifier' || n.type === 'tab');
    const flow = () => [...hostedVerifier(), ...example('m2m-tinyml-verify/attest-with-behaviour.json')];
    const decisions: Array<{ decision: string; reasons: string[] }> = [];

    async function deploy(): Promise<void> {
      await helper.load([nodeRed.http.capture, ...coreNodes, ...m2mNodes], flow());
      decisions.length = 0;
      for (const id of ['ab-debug-approved', 'ab-debug-declined']) {
        helper
          .getNode(id)
          .on('input', (msg: any) => decisions.push({ decision: msg.m2m.decision, reasons: msg.m2m.reasons }));
      }
    }

    async function until(check: () => boolean, ms: number): Promise<void> {
      const started = Date.now();
      while (!check()) {
        if (Date.now() - started > ms) throw new Error(`not within ${ms} ms: ${JSON.stringify(decisions)}`);
        await new Promise(resolve => setTimeout(resolve, 50));
      }
    }

    it('declines or reviews an impostor from the first message after a redeploy, and never approves it', async () => {
      await deploy();
      // Enrol the genuine transmitter at once: each call of the sensor function sends 50 readings.
      const sensor = helper.getNode('ab-sensor');
      for (let i = 0; i < 30; i++) sensor.receive({});
      await until(
        () => fs.existsSync(path.join(nodeRed.userDir, 'm2m-identity', 'tinyml', 'profiles-ab-verify.json')),
        20_000,
      );
      await helper.unload();

      await deploy();
      helper.getNode('ab-sensor').context().flow.set('impostor', true);
      await until(() => decisions.length >= 2, 25_000);
      assert.deepEqual(
        decisions.filter(d => d.decision === 'approved'),
        [],
        JSON.stringify(decisions),
      );
      assert.ok(['in_review', 'declined'].includes(decisions[0].decision));
      assert.ok(
        decisions.some(d => d.reasons.includes('tinyml_low')),
        JSON.stringify(decisions),
      );
    });
  });
});
