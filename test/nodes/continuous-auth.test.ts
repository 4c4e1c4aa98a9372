/**
 * m2m-reauth-timer and m2m-token-check in Node-RED, against a standalone verifier whose tokens
 * live 3 s: stamping, the offline policy across an outage, revocation mid-stream, and a real MQTT
 * v5 round trip through the local broker (M2M_MQTT_URL, else 127.0.0.1:1883 when it answers).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { SqliteStore, startVerifierServer, type RunningVerifier } from '../../lib/verifier';
import { nodeRedPath } from '../helpers/node-red';
import { MQTT_SERVICE, skipWith } from '../helpers/services';
import { ADMIN_KEY, ENROLLMENT_TOKEN } from '../verifier/harness';
import {
  catchNode,
  caughtCode,
  helper,
  KEYSTORE_SECRET,
  keystoreFile,
  m2mNodes,
  newUserDir,
  nextMessage,
  removeDir,
  startNodeRed,
  stopNodeRed,
} from './harness';

const core = path.dirname(require.resolve('@node-red/nodes/package.json', { paths: [path.dirname(nodeRedPath())] }));
const mqttNodes = require(path.join(core, 'core', 'network', '10-mqtt.js'));
const MQTT_URL = MQTT_SERVICE().url;

describe('nodes: continuous authentication (m2m-reauth-timer, m2m-token-check)', function () {
  this.timeout(60_000);
  let dir: string;
  let userDir: string;
  let verifier: RunningVerifier;
  let port: number;

  const startVerifier = async (tokenTtlSeconds = 3) => {
    verifier = await startVerifierServer({
      port,
      store: new SqliteStore(path.join(dir, 'verifier.db')),
      adminKey: ADMIN_KEY,
      enrollmentToken: ENROLLMENT_TOKEN,
      tokenTtlSeconds,
    });
    port = Number(new URL(verifier.url).port);
  };

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-reauth-'));
    port = 0;
    await startVerifier();
    await startNodeRed();
    userDir = newUserDir();
  });
  afterEach(async () => {
    await stopNodeRed();
    await verifier.close();
    removeDir(dir);
    removeDir(userDir);
  });

  function flow(timer: Record<string, unknown> = {}) {
    return {
      flow: [
        { id: 'tab', type: 'tab' },
        { id: 'api', type: 'm2m-identity-api', baseUrl: verifier.url, timeout: 2000 },
        {
          id: 'device',
          type: 'm2m-device',
          deviceId: 'press-7',
          api: 'api',
          sources: 'machine-id',
          extra: '{}',
          metadata: '{}',
        },
        {
          id: 'provision',
          z: 'tab',
          type: 'm2m-provision',
          device: 'device',
          onDeploy: false,
          wires: [['provisioned']],
        },
        {
          id: 'timer',
          z: 'tab',
          type: 'm2m-reauth-timer',
          device: 'device',
          fraction: 0.5,
          floor: 1,
          riskScore: 0.6,
          networkPoll: 0,
          offline: 'hold',
          maxMessages: 100,
          maxBytes: 100000,
          proofs: true,
          stampHeaders: true,
          stampUserProperties: true,
          wires: [['stamped', 'check'], ['events']],
          ...timer,
        },
        {
          id: 'check',
          z: 'tab',
          type: 'm2m-token-check',
          api: 'api',
          audience: '',
          proofMaxAge: 300,
          requireProof: true,
          introspect: true,
          wires: [['valid'], ['invalid']],
        },
        ...['provisioned', 'stamped', 'events', 'valid', 'invalid'].map(id => ({ id, z: 'tab', type: 'helper' })),
      ] as any[],
      credentials: {
        api: { enrollmentToken: ENROLLMENT_TOKEN, apiKey: ADMIN_KEY },
        device: { keystoreSecret: KEYSTORE_SECRET },
      },
    };
  }

  /** Collects what reaches the helper nodes. */
  function collect(ids: string[]): Record<string, any[]> {
    const out: Record<string, any[]> = Object.fromEntries(ids.map(id => [id, []]));
    for (const id of ids) helper.getNode(id).on('input', (msg: unknown) => out[id].push(msg));
    return out;
  }

  async function until(check: () => boolean, ms = 15_000, what = 'condition'): Promise<void> {
    const started = Date.now();
    while (!check()) {
      if (Date.now() - started > ms) throw new Error(`${what} not reached within ${ms} ms`);
      await new Promise(resolve => setTimeout(resolve, 25));
    }
  }

  /**
   * Until the timer has saved a token: its first attestation waits a random moment of up to 5 s
   * (a plant restarted at once does not attest at once), then takes its own time.
   */
  const untilToken = () =>
    until(
      () => !!fs.readdirSync(path.join(userDir, 'm2m-identity', 'reauth')).find(f => f.endsWith('.token.json')),
      15_000,
      'a token',
    );

  /** Loads the flow with the device provisioned before the timer attests (a fresh user dir has no key). */
  async function load(timer: Record<string, unknown> = {}) {
    const { flow: nodes, credentials } = flow(timer);
    // Provision in a first deployment, so the timer's first attestation finds the device.
    await helper.load(
      m2mNodes,
      nodes.filter(n => n.type !== 'm2m-reauth-timer' && n.type !== 'm2m-token-check'),
      credentials,
    );
    const provisioned = nextMessage('provisioned');
    helper.getNode('provision').receive({ payload: 'go' });
    await provisioned;
    await helper.unload();
    await helper.load(m2mNodes, nodes, credentials);
  }

  it('stamps messages with the token, headers, user properties and a proof that m2m-token-check accepts', async () => {
    await load();
    const out = collect(['stamped', 'valid', 'invalid']);
    await new Promise(resolve => setTimeout(resolve, 300));
    helper.getNode('timer').receive({ topic: 'plant/press-7', payload: { t: 21.5 } });
    await until(() => out.valid.length + out.invalid.length === 1);
    const stamped = out.stamped[0];
    assert.match(stamped.m2m.token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    assert.equal(stamped.headers.authorization, `Bearer ${stamped.m2m.token}`);
    assert.equal(stamped.userProperties.authorization, `Bearer ${stamped.m2m.token}`);
    assert.match(stamped.userProperties['m2m-pop'], /^[\w-]+\.[\w-]+\.[\w-]+$/);
    assert.deepEqual(
      out.invalid.map(m => m.m2m.reason),
      [],
    );
    assert.equal(out.valid[0].m2m.deviceId, 'press-7');
  });

  it('m2m-token-check: a refused message keeps no device it claimed, and an odd req or m2m still gets an answer', async () => {
    await load();
    const out = collect(['valid', 'invalid']);
    const check = helper.getNode('check');
    check.receive({ payload: 1, m2m: { token: 'not.a.token', deviceId: 'press-9', claims: { sub: 'press-9' } } });
    check.receive({ payload: 2, req: { originalUrl: 42, url: { path: '/x' } }, m2m: { token: 'not.a.token' } });
    check.receive({ payload: 3, m2m: 'set upstream' });
    await until(() => out.invalid.length === 3, 5000, 'all refused on output 2');
    out.invalid.sort((a, b) => a.payload - b.payload);
    assert.deepEqual(
      out.invalid.map(m => [m.payload, m.m2m.valid, m.m2m.reason, m.m2m.deviceId, m.m2m.claims]),
      [
        [1, false, 'token_malformed', undefined, undefined],
        [2, false, 'token_malformed', undefined, undefined],
        [3, false, 'token_missing', undefined, undefined],
      ],
    );
    // A string in m2m is not spread into numbered keys.
    assert.deepEqual(Object.keys(out.invalid[2].m2m).sort(), ['reason', 'valid']);
    assert.equal(out.valid.length, 0);
  });

  it('rides out an outage: grace with the last token, then holds, then releases in order, none lost or doubled', async () => {
    await load();
    const out = collect(['stamped', 'events']);
    await untilToken();
    const timer = helper.getNode('timer');
    await verifier.close();
    for (let i = 1; i <= 3; i++) timer.receive({ topic: 't', payload: i });
    await until(() => out.stamped.length === 3, 2000, 'stamping in grace');
    await new Promise(resolve => setTimeout(resolve, 3500)); // the 3 s token has expired
    for (let i = 4; i <= 8; i++) timer.receive({ topic: 't', payload: i });
    await new Promise(resolve => setTimeout(resolve, 300));
    assert.equal(out.stamped.length, 3, 'no token: held');
    assert.ok(
      out.events.some(m => m.payload.type === 'failed'),
      'the outage is an event on output 2',
    );
    await startVerifier();
    await until(() => out.stamped.length === 8, 20_000, 'release after the verifier is back');
    assert.deepEqual(
      out.stamped.map(m => m.payload),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    await new Promise(resolve => setTimeout(resolve, 500));
    assert.equal(out.stamped.length, 8, 'none doubled');
  });

  it('stamps with a good token while a re-attestation hangs, and after it fails', async () => {
    // The token must outlive the hung attempt (2 s) with room to spare: with the usual 3 s, a
    // busy machine let it expire before the message after the failure, which then waited.
    await verifier.close();
    await startVerifier(30);
    await load();
    const out = collect(['stamped', 'events']);
    await untilToken();
    // The identity API takes connections and never answers: the attempt hangs for its 2 s timeout.
    await verifier.close();
    const silent = net.createServer(() => undefined);
    await new Promise<void>(resolve => silent.listen(port, '127.0.0.1', resolve));
    try {
      const timer = helper.getNode('timer');
      timer.receive({ m2m: { reauth: true } });
      for (let i = 1; i <= 3; i++) timer.receive({ topic: 't', payload: i });
      await until(() => out.stamped.length === 3, 1000, 'stamping while the attempt hangs');
      await until(() => out.events.some(m => m.payload.type === 'failed'), 5000, 'the failed attempt');
      timer.receive({ topic: 't', payload: 4 });
      await until(() => out.stamped.length === 4, 1000, 'stamping in grace after the failure');
      assert.deepEqual(
        out.stamped.map(m => m.payload),
        [1, 2, 3, 4],
      );
    } finally {
      silent.close();
      await startVerifier();
    }
  });

  it('keeps held messages across a restart of Node-RED and sends them once a token comes', async () => {
    await load();
    await helper.unload();
    await verifier.close();
    const { flow: nodes, credentials } = flow();
    await helper.load(m2mNodes, nodes, credentials);
    let out = collect(['stamped']);
    // A token from before the restart may still be good: let it lapse, then send.
    await new Promise(resolve => setTimeout(resolve, 3200));
    for (let i = 1; i <= 4; i++) helper.getNode('timer').receive({ topic: 't', payload: i });
    await new Promise(resolve => setTimeout(resolve, 200));
    assert.equal(out.stamped.length, 0);
    await helper.unload(); // Node-RED stops with four messages held
    await startVerifier();
    await helper.load(m2mNodes, nodes, credentials);
    out = collect(['stamped']);
    await until(() => out.stamped.length === 4, 10_000, 'the held messages after the restart');
    assert.deepEqual(
      out.stamped.map(m => m.payload),
      [1, 2, 3, 4],
    );
  });

  it('stops stamping at once when the device is revoked and a receiver says 401', async () => {
    await load({ offline: 'reject' });
    const out = collect(['stamped', 'events']);
    const timer = helper.getNode('timer');
    await untilToken();
    timer.receive({ topic: 't', payload: 'before' });
    const revoked = await fetch(`${verifier.url}/v1/devices/press-7/revoke`, {
      method: 'POST',
      headers: { 'x-api-key': ADMIN_KEY },
    });
    assert.equal(revoked.status, 200);
    timer.receive({ topic: 't', statusCode: 401, payload: 'Unauthorized' });
    await until(() => out.events.some(m => m.payload.type === 'declined'), 5000, 'the decline');
    timer.receive({ topic: 't', payload: 'after' });
    await until(() => out.events.some(m => m.m2m?.reauth?.reason === 'no_token'), 2000, 'the refusal');
    assert.deepEqual(
      out.stamped.map(m => m.payload),
      ['before'],
    );
    assert.deepEqual(out.events.find(m => m.payload.type === 'declined').payload.reasons, ['device_revoked']);
  });

  describe('m2m-token-check across redeploys, bursts and revocations', () => {
    /** A flow with the check alone, after the timer stamped `count` messages with its token. */
    async function stampedMessages(count: number): Promise<any[]> {
      await load({ wires: [['stamped'], ['events']] });
      const out = collect(['stamped']);
      await untilToken();
      for (let i = 0; i < count; i++) helper.getNode('timer').receive({ topic: 'plant/press-7', payload: { i } });
      await until(() => out.stamped.length === count, 5000, 'the stamped messages');
      // What a receiver got off the wire: no trace of the sender's msg object.
      return out.stamped.map(({ topic, payload, userProperties }) => ({ topic, payload, userProperties }));
    }
    const checkOnly = (check: Record<string, unknown> = {}) => {
      const { flow: nodes, credentials } = flow();
      return {
        nodes: nodes
          .filter(n => n.type !== 'm2m-reauth-timer' && n.type !== 'm2m-provision')
          .map(n => (n.id === 'check' ? { ...n, ...check } : n)),
        credentials,
      };
    };

    it('refuses a message replayed after a redeploy and after a restart of Node-RED', async () => {
      const [captured] = await stampedMessages(1);
      await helper.unload();
      const { nodes, credentials } = checkOnly();
      await helper.load(m2mNodes, nodes, credentials);
      let out = collect(['valid', 'invalid']);
      helper.getNode('check').receive(structuredClone(captured));
      await until(() => out.valid.length === 1, 5000, 'accepted the first time');
      await helper.unload();
      await helper.load(m2mNodes, nodes, credentials);
      out = collect(['valid', 'invalid']);
      helper.getNode('check').receive(structuredClone(captured));
      await until(() => out.invalid.length === 1, 5000, 'the replay after a redeploy');
      await stopNodeRed();
      await startNodeRed();
      await helper.load(m2mNodes, nodes, credentials);
      out = collect(['valid', 'invalid']);
      helper.getNode('check').receive(structuredClone(captured));
      await until(() => out.invalid.length === 1, 5000, 'the replay after a restart');
      assert.deepEqual(
        out.invalid.map(m => m.m2m.reason),
        ['proof_replayed'],
      );
      await helper.unload();
      const replays = path.join(userDir, 'm2m-identity', 'token-check');
      assert.ok(fs.readdirSync(replays).some(f => f.startsWith('check')));
    });

    it('keeps the order of a burst that brings a token it has not seen', async () => {
      const burst = await stampedMessages(30);
      await helper.unload();
      const { nodes, credentials } = checkOnly();
      await helper.load(m2mNodes, nodes, credentials);
      const out = collect(['valid', 'invalid']);
      for (const msg of burst) helper.getNode('check').receive(msg);
      await until(() => out.valid.length + out.invalid.length === 30);
      assert.deepEqual(
        out.valid.map(m => m.payload.i),
        burst.map(m => m.payload.i),
      );
    });

    it('refuses a revoked device within seconds, with no admin key in the receiving flow', async () => {
      const [first, second] = await stampedMessages(2);
      await helper.unload();
      const { nodes, credentials } = checkOnly({ revocations: 'list', introspect: false });
      await helper.load(m2mNodes, nodes, { ...credentials, api: { enrollmentToken: ENROLLMENT_TOKEN } });
      const out = collect(['valid', 'invalid']);
      helper.getNode('check').receive(first);
      await until(() => out.valid.length === 1, 5000, 'accepted before the revocation');
      const revoked = await fetch(`${verifier.url}/v1/devices/press-7/revoke`, {
        method: 'POST',
        headers: { 'x-api-key': ADMIN_KEY },
      });
      assert.equal(revoked.status, 200);
      const at = Date.now();
      await new Promise(resolve => setTimeout(resolve, 2500));
      helper.getNode('check').receive(second);
      await until(() => out.invalid.length === 1, 5000, 'refused after the revocation');
      assert.deepEqual(
        out.invalid.map(m => m.m2m.reason),
        ['token_revoked'],
      );
      assert.ok(Date.now() - at < 8000);
    });
  });

  describe('odd messages and a gateway whose ground shifts', () => {
    const catchAll = {
      id: 'catch',
      z: 'tab',
      x: 100,
      y: 100,
      type: 'catch',
      scope: null,
      uncaught: false,
      wires: [['caught']],
    };
    async function loadWithCatch(timer: Record<string, unknown> = {}) {
      const { flow: nodes, credentials } = flow(timer);
      await helper.load(
        [catchNode, ...m2mNodes],
        nodes.filter(n => n.type !== 'm2m-reauth-timer' && n.type !== 'm2m-token-check'),
        credentials,
      );
      const provisioned = nextMessage('provisioned');
      helper.getNode('provision').receive({ payload: 'go' });
      await provisioned;
      await helper.unload();
      const tinyml = {
        id: 'tinyml',
        z: 'tab',
        type: 'm2m-tinyml-verify',
        mode: 'verify',
        wires: [['trusted'], ['suspicious']],
      };
      await helper.load(
        [catchNode, ...m2mNodes],
        [
          ...nodes,
          catchAll,
          tinyml,
          ...['caught', 'trusted', 'suspicious'].map(id => ({ id, z: 'tab', type: 'helper' })),
        ],
        credentials,
      );
    }
    const deep = () => {
      const root: Record<string, unknown> = {};
      let at = root;
      for (let i = 0; i < 5000; i++) {
        at.m = {};
        at = at.m as Record<string, unknown>;
      }
      return root;
    };

    it('sends a message nested 5,000 deep to Catch with payload_too_deep, from every node that reads payloads', async () => {
      await loadWithCatch();
      const out = collect(['caught', 'stamped', 'valid', 'invalid', 'trusted', 'suspicious']);
      for (const id of ['timer', 'check', 'tinyml']) helper.getNode(id).receive({ topic: 't', payload: deep(), id });
      await until(() => out.caught.length === 3, 5000, 'three errors on Catch');
      assert.deepEqual(out.caught.map(m => [m.id, caughtCode(m)]).sort(), [
        ['check', 'payload_too_deep'],
        ['timer', 'payload_too_deep'],
        ['tinyml', 'payload_too_deep'],
      ]);
    });

    it('sends a message whose topic is an object to Catch with invalid_source (m2m-tinyml-verify)', async () => {
      await loadWithCatch();
      const out = collect(['caught']);
      helper.getNode('tinyml').receive({ topic: Object.create(null), payload: 1 });
      await until(() => out.caught.length === 1, 5000, 'the error on Catch');
      assert.equal(caughtCode(out.caught[0]), 'invalid_source');
    });

    it('stamps a message whose msg.m2m.tinyml is an empty object without asking for a re-attestation', async () => {
      await load();
      const out = collect(['stamped', 'events']);
      await untilToken();
      helper.getNode('timer').receive({ topic: 't', payload: 1, m2m: { tinyml: {} } });
      helper.getNode('timer').receive({ topic: 't', payload: 2 });
      await until(() => out.stamped.length === 2, 2000, 'both stamped');
      await new Promise(resolve => setTimeout(resolve, 500));
      assert.deepEqual(
        out.events.map(m => m.payload.type),
        [],
        'no decline, no failure',
      );
    });

    it('stops stamping with a key it no longer holds: a keystore deleted while running goes to Catch', async () => {
      await loadWithCatch();
      const out = collect(['stamped', 'caught']);
      await untilToken();
      helper.getNode('timer').receive({ topic: 't', payload: 'before' });
      await until(() => out.stamped.length === 1, 2000, 'stamped with the key');
      fs.rmSync(keystoreFile(userDir));
      await new Promise(resolve => setTimeout(resolve, 2100)); // the keystore is checked every 2 s
      helper.getNode('timer').receive({ topic: 't', payload: 'after' });
      await until(() => out.caught.length >= 1, 5000, 'the error on Catch');
      assert.equal(caughtCode(out.caught[0]), 'keystore_missing');
      assert.deepEqual(
        out.stamped.map(m => m.payload),
        ['before'],
      );
    });

    it('drops its token within seconds of a revocation, and has a new one within seconds of the reinstatement', async function () {
      this.timeout(90_000);
      // Tokens that live two minutes: without the revocation list, the gateway would stamp with
      // the revoked one until its renewal a minute later, and keep it after the reinstatement.
      await verifier.close();
      await startVerifier(120);
      await load();
      const out = collect(['events']);
      await untilToken();
      const admin = (action: string) =>
        fetch(`${verifier.url}/v1/devices/press-7/${action}`, { method: 'POST', headers: { 'x-api-key': ADMIN_KEY } });
      assert.equal((await admin('revoke')).status, 200);
      await until(() => out.events.some(m => m.payload.type === 'declined'), 15_000, 'the revocation seen');
      const tokenFiles = () =>
        fs.readdirSync(path.join(userDir, 'm2m-identity', 'reauth')).filter(f => f.endsWith('.token.json'));
      await until(() => tokenFiles().length === 0, 5000, 'the token dropped');
      assert.equal((await admin('reinstate')).status, 200);
      const reinstatedAt = Date.now();
      // The decline's backoff would wait 15 s to 5 min; the revocation list is looked at every 10 s.
      await until(() => tokenFiles().length === 1, 20_000, 'a token after the reinstatement');
      assert.ok(Date.now() - reinstatedAt < 13_000, `${Date.now() - reinstatedAt} ms`);
    });
  });

  describe('over MQTT v5 through a real broker', () => {
    before(function () {
      if (!MQTT_URL) skipWith(this, MQTT_SERVICE().skipReason!);
    });

    it('carries the token and proof in user properties; the subscriber checks them', async () => {
      const { hostname, port: brokerPort } = new URL(MQTT_URL!);
      const topic = `m2m-test/${process.pid}/${Date.now()}`;
      const { flow: nodes, credentials } = flow();
      const broker = {
        id: 'broker',
        type: 'mqtt-broker',
        broker: hostname,
        port: brokerPort || '1883',
        clientid: '',
        autoConnect: true,
        usetls: false,
        protocolVersion: '5',
        keepalive: '60',
        cleansession: true,
        birthTopic: '',
        closeTopic: '',
        willTopic: '',
      };
      const mqttOut = {
        id: 'mqtt-out',
        z: 'tab',
        type: 'mqtt out',
        topic: '',
        qos: '1',
        retain: 'false',
        broker: 'broker',
        wires: [],
      };
      const mqttIn = {
        id: 'mqtt-in',
        z: 'tab',
        type: 'mqtt in',
        topic,
        qos: '1',
        datatype: 'utf8',
        broker: 'broker',
        nl: false,
        rap: true,
        rh: 0,
        inputs: 0,
        wires: [['check']],
      };
      const wired: any[] = nodes.map(n => (n.id === 'timer' ? { ...n, wires: [['mqtt-out'], ['events']] } : n));
      await helper.load(
        [...m2mNodes, mqttNodes],
        wired.filter(n => n.type !== 'm2m-reauth-timer' && n.type !== 'm2m-token-check'),
        credentials,
      );
      const provisioned = nextMessage('provisioned');
      helper.getNode('provision').receive({ payload: 'go' });
      await provisioned;
      await helper.unload();
      await helper.load([...m2mNodes, mqttNodes], [...wired, broker, mqttOut, mqttIn], credentials);
      const out = collect(['valid', 'invalid']);
      await new Promise(resolve => setTimeout(resolve, 1500)); // subscribed, token in hand
      helper.getNode('timer').receive({ topic, payload: JSON.stringify({ t: 21.5 }) });
      await until(() => out.valid.length + out.invalid.length >= 1, 10_000, 'the message through the broker');
      assert.deepEqual(
        out.invalid.map(m => m.m2m.reason),
        [],
      );
      assert.equal(out.valid[0].m2m.deviceId, 'press-7');
      assert.equal(out.valid[0].payload, '{"t":21.5}');
    });
  });
});
