/**
 * m2m-verifier's output and webhooks, and m2m-webhook-in, in one Node-RED: events in process and
 * over HTTP, signed with this Node-RED's own secret or configured ones, and the bad inputs a
 * public endpoint meets.
 */
import * as assert from 'node:assert/strict';
import * as net from 'node:net';
import { diditSignature } from '../../lib/webhooks/didit';
import { generateSecret, secretKey, signedHeaders } from '../../lib/webhooks/standard';
import { attestation, makeDevice, registration } from '../fixtures/device';
import { firstMessage, helper, m2mNodes, nextMessage, nodeRedPerTest } from './harness';

describe('nodes: verifier events and m2m-webhook-in', function () {
  this.timeout(20_000);
  const nodeRed = nodeRedPerTest();

  /** A verifier delivering to /m2m-events, a webhook node there; each output wired to a helper. */
  function centralFlow(options: { webhookIn?: Record<string, unknown>; verifier?: Record<string, unknown> } = {}) {
    return [
      { id: 'tab', type: 'tab' },
      {
        id: 'verifier',
        z: 'tab',
        type: 'm2m-verifier',
        path: '/m2m',
        loopbackEnrollment: true,
        webhooks: '/m2m-events',
        wires: [['events']],
        ...options.verifier,
      },
      {
        id: 'hook',
        z: 'tab',
        type: 'm2m-webhook-in',
        path: '/m2m-events',
        wires: [['approved'], ['other']],
        ...options.webhookIn,
      },
      { id: 'events', z: 'tab', type: 'helper' },
      { id: 'approved', z: 'tab', type: 'helper' },
      { id: 'other', z: 'tab', type: 'helper' },
    ];
  }

  async function load(flow = centralFlow(), credentials: Record<string, unknown> = {}) {
    await helper.load([nodeRed.http.capture, ...m2mNodes], flow, credentials);
  }

  async function registerAndAttest() {
    const device = makeDevice();
    const registered = await fetch(`${nodeRed.http.url}/m2m/v1/devices`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ registration: registration(device) }),
    });
    assert.equal(registered.status, 201);
    const challenge = await fetch(`${nodeRed.http.url}/m2m/v1/challenges`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ deviceId: device.deviceId }),
    });
    const { nonce } = await challenge.json();
    const decided = await fetch(`${nodeRed.http.url}/m2m/v1/attestations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ attestation: attestation(device, `${nodeRed.http.url}/m2m`, nonce) }),
    });
    assert.equal((await decided.json()).decision, 'approved');
    return device;
  }

  function post(body: string | Buffer, headers: Record<string, string>, pathname = '/m2m-events') {
    return fetch(`${nodeRed.http.url}${pathname}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : new Uint8Array(body),
    });
  }

  it('the verifier puts every event on its output and delivers it to m2m-webhook-in, signed with the local secret', async () => {
    await load();
    const inProcess = nextMessage('events');
    const webhook = nextMessage('other');
    const approved = nextMessage('approved');
    const device = await registerAndAttest();

    const event = await inProcess;
    assert.deepEqual(
      [event.topic, event.payload.type, event.m2m.deviceId],
      ['device.registered', 'device.registered', device.deviceId],
    );
    const registered = await webhook;
    assert.deepEqual(
      [registered.topic, registered.m2m.scheme, registered.m2m.trusted, registered.m2m.status, registered.m2m.eventId],
      ['device.registered', 'standard', true, 'active', event.m2m.eventId],
    );
    const decision = await approved;
    assert.deepEqual(
      [decision.topic, decision.m2m.decision, decision.m2m.deviceId, decision.payload.data.reasons],
      ['attestation.decided', 'approved', device.deviceId, []],
    );
  });

  it('checks with the configured secrets (rotation), refuses bad input with clear codes, drops duplicates', async () => {
    const [secret, next] = [generateSecret(), generateSecret()];
    await load(centralFlow({ verifier: { webhooks: '' } }), { hook: { secrets: `${secret} ${next}` } });
    const body = JSON.stringify({
      type: 'attestation.decided',
      timestamp: new Date().toISOString(),
      data: { deviceId: 'd1', decision: 'declined', reasons: ['fingerprint_mismatch'] },
    });
    const now = Math.floor(Date.now() / 1000);
    const headers = signedHeaders([secretKey(next)!], 'evt_1', now, body);

    const declined = nextMessage('other');
    assert.equal((await post(body, headers)).status, 204);
    const msg = await declined;
    assert.deepEqual(
      [msg.m2m.decision, msg.m2m.reasons, msg.m2m.eventId],
      ['declined', ['fingerprint_mismatch'], 'evt_1'],
    );

    // The same event again: 2xx for the sender, nothing for the flow.
    const again = firstMessage(['approved', 'other'], 500).then(
      () => 'delivered twice',
      () => 'dropped',
    );
    assert.equal((await post(body, headers)).status, 204);
    assert.equal(await again, 'dropped');

    const refusals: Array<[string | Buffer, Record<string, string>, number]> = [
      [body.replace('declined', 'approved'), headers, 401],
      [body, signedHeaders([secretKey(generateSecret())!], 'evt_2', now, body), 401],
      [body, {}, 401],
      [body, signedHeaders([secretKey(secret)!], 'evt_3', now - 600, body), 401],
      ['not json', signedHeaders([secretKey(secret)!], 'evt_4', now, 'not json'), 400],
      [Buffer.alloc(10 * 1024 * 1024, 'a'), headers, 413],
    ];
    for (const [payload, requestHeaders, expected] of refusals) {
      const answer = await post(payload, requestHeaders);
      assert.equal(answer.status, expected, String(payload).slice(0, 40));
      assert.match(answer.headers.get('content-type') ?? '', /application\/problem\+json/);
    }
    assert.equal((await fetch(`${nodeRed.http.url}/m2m-events`)).status, 405);
    // Node-RED is still up and the node still accepts.
    const later = signedHeaders([secretKey(secret)!], 'evt_5', now, body);
    assert.equal((await post(body, later, '/m2m-events?x=1')).status, 204);
  });

  it('reads the exact bytes whatever the content type, ahead of the editor body parser', async () => {
    const secret = generateSecret();
    await load(centralFlow({ verifier: { webhooks: '' } }), { hook: { secrets: secret } });
    // Spacing and key order a JSON parser would not keep: the signature covers these bytes.
    const body = '{ "type" : "device.revoked",\n "data": {"status":"revoked","deviceId":"d2"}, "timestamp":"t" }';
    for (const type of ['application/json', 'text/plain', 'application/x-www-form-urlencoded']) {
      const id = `evt_${type.length}`;
      const received = nextMessage('other');
      const answer = await post(body, {
        ...signedHeaders([secretKey(secret)!], id, Math.floor(Date.now() / 1000), body),
        'content-type': type,
      });
      assert.equal(answer.status, 204, type);
      assert.equal((await received).m2m.deviceId, 'd2');
    }
  });

  it("accepts Didit's scheme; an envelope-only signature is untrusted and never on the approved output", async () => {
    const secret = 'didit-webhook-secret';
    await load(centralFlow({ verifier: { webhooks: '' } }), { hook: { secrets: secret } });
    const event = {
      event_id: 'e-1',
      session_id: 's-1',
      status: 'Approved',
      timestamp: Math.floor(Date.now() / 1000),
      vendor_data: 'press-7',
      webhook_type: 'status.updated',
      decision: { status: 'Approved' },
    };
    const body = JSON.stringify(event);
    const approved = nextMessage('approved');
    assert.equal((await post(body, { 'x-signature': diditSignature(secret, body) })).status, 204);
    const msg = await approved;
    assert.deepEqual([msg.m2m.scheme, msg.m2m.deviceId, msg.m2m.status], ['didit', 'press-7', 'Approved']);

    const envelopeSigned = async (fields: Record<string, unknown>) => {
      const envelope = `${fields.timestamp}:${fields.session_id}:${fields.status}:${fields.webhook_type}`;
      const answer = await post(JSON.stringify(fields), {
        'x-signature': 'a'.repeat(64),
        'x-signature-simple': diditSignature(secret, envelope),
      });
      assert.equal(answer.status, 204);
    };
    const other = nextMessage('other');
    // The genuine delivery's envelope signature, replayed under another event id and device: a duplicate.
    await envelopeSigned({ ...event, event_id: 'e-2', vendor_data: 'another-device' });
    // A session's event signed by its envelope alone: untrusted, never on the approved output.
    await envelopeSigned({ ...event, event_id: 'e-3', session_id: 's-2', vendor_data: 'another-device' });
    const untrusted = await other;
    assert.equal(untrusted.m2m.sessionId, 's-2', 'the replayed envelope was dropped as a duplicate');
    assert.equal(untrusted.m2m.trusted, false);
    assert.ok(untrusted.m2m.untrusted.includes('vendor_data'));
  });

  it('two webhook nodes on one path each get what their own secret accepts', async () => {
    const [a, b] = [generateSecret(), generateSecret()];
    const flow = [
      ...centralFlow({ verifier: { webhooks: '' } }),
      { id: 'hook2', z: 'tab', type: 'm2m-webhook-in', path: '/m2m-events', wires: [[], ['other2']] },
      { id: 'other2', z: 'tab', type: 'helper' },
    ];
    await load(flow, { hook: { secrets: a }, hook2: { secrets: b } });
    const body = JSON.stringify({
      type: 'device.registered',
      timestamp: 't',
      data: { deviceId: 'd3', status: 'active' },
    });
    const now = Math.floor(Date.now() / 1000);
    const toB = firstMessage(['other', 'other2']);
    assert.equal((await post(body, signedHeaders([secretKey(b)!], 'evt_b', now, body))).status, 204);
    assert.equal((await toB).nodeId, 'other2');
    assert.equal((await post(body, signedHeaders([secretKey(generateSecret())!], 'evt_c', now, body))).status, 401);
  });

  it('drops a duplicate after a restart', async () => {
    const secret = generateSecret();
    const flow = centralFlow({ verifier: { webhooks: '' } });
    await load(flow, { hook: { secrets: secret } });
    const body = JSON.stringify({
      type: 'device.revoked',
      timestamp: 't',
      data: { deviceId: 'd4', status: 'revoked' },
    });
    const headers = signedHeaders([secretKey(secret)!], 'evt_restart', Math.floor(Date.now() / 1000), body);
    const first = nextMessage('other');
    await post(body, headers);
    await first;
    await helper.unload();
    await load(flow, { hook: { secrets: secret } });
    const again = firstMessage(['other'], 500).then(
      () => 'delivered twice',
      () => 'dropped',
    );
    assert.equal((await post(body, headers)).status, 204);
    assert.equal(await again, 'dropped');
  });

  it('a sender that trickles its body is cut off; Node-RED keeps serving', async function () {
    this.timeout(30_000);
    await load();
    const { port } = new URL(nodeRed.http.url);
    const socket = net.connect(Number(port), '127.0.0.1');
    socket.write(
      'POST /m2m-events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{',
    );
    const answer = await new Promise<string>(resolve => {
      let data = '';
      socket.on('data', chunk => {
        data += chunk;
      });
      socket.on('close', () => resolve(data));
    });
    assert.match(answer, /^HTTP\/1\.1 408/);
    assert.equal((await fetch(`${nodeRed.http.url}/m2m/v1/health`)).status, 200);
  });

  it('secrets never reach messages, statuses or the log', async () => {
    const [signing, receiving] = [generateSecret(), generateSecret()];
    const flow = centralFlow({ webhookIn: {} });
    await load(flow, { verifier: { webhookSecret: `${signing} ${receiving}` }, hook: { secrets: receiving } });
    const messages: unknown[] = [];
    for (const id of ['events', 'approved', 'other'])
      helper.getNode(id).on('input', (msg: unknown) => messages.push(msg));
    const statuses: unknown[] = [];
    for (const id of ['verifier', 'hook']) {
      const node = helper.getNode(id);
      const status = node.status.bind(node);
      node.status = (value: any) => {
        statuses.push(value);
        return status(value);
      };
    }
    const approved = nextMessage('approved');
    await registerAndAttest();
    await approved;
    await post('{}', { 'webhook-id': 'x', 'webhook-timestamp': '1', 'webhook-signature': 'v1,AAAA' });
    await new Promise(resolve => setTimeout(resolve, 700)); // the throttled status
    const seen = JSON.stringify([messages, statuses, helper.log().args]);
    for (const secret of [signing, receiving]) {
      assert.ok(!seen.includes(secret.slice(6)), 'a secret leaked');
      assert.ok(!seen.includes(secretKey(secret)!.toString('hex')), 'a key leaked');
    }
    assert.ok(statuses.length > 0 && messages.length >= 3, 'nothing was observed');
  });

  it('a verifier with a bad webhook secret reports it and serves nothing; a second verifier on its path is refused', async () => {
    await load(
      [
        ...centralFlow({ verifier: { webhooks: 'http://127.0.0.1:9/hook' } }),
        { id: 'verifier2', z: 'tab', type: 'm2m-verifier', path: '/m2m', wires: [[]] },
      ],
      { verifier: { webhookSecret: 'hunter2' } },
    );
    await new Promise(resolve => setTimeout(resolve, 300));
    const errors = helper
      .log()
      .args.filter((args: any[]) => args[0]?.level === 20)
      .map((args: any[]) => String(args[0].msg));
    assert.ok(
      errors.some((text: string) => /not a whsec_ secret/.test(text)),
      errors.join('\n'),
    );
    // The test helper does not load message catalogs: the key stands for the text.
    assert.ok(
      errors.some((text: string) => /already served by verifier|errors\.path_taken/.test(text)),
      errors.join('\n'),
    );
    assert.equal((await fetch(`${nodeRed.http.url}/m2m/v1/health`)).status, 503);
  });
});
