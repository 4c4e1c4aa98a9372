/**
 * The Didit nodes in Node-RED against the Didit test double (test/helpers/didit-double.ts): a
 * provider choice on m2m-identity-api, sessions created and decided, face match, errors as
 * reasons on output 2, and the key nowhere but in Didit's x-api-key header.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  DOUBLE_API_KEY,
  DOUBLE_WORKFLOW_ID,
  type DiditDouble,
  JPEG,
  PNG,
  startDiditDouble,
} from '../helpers/didit-double';
import { firstMessage, helper, m2mNodes, nodeRedPerTest } from './harness';

describe('nodes: Didit sessions and face match', function () {
  this.timeout(20_000);
  const nodeRed = nodeRedPerTest();
  let didit: DiditDouble;

  beforeEach(async () => {
    didit = await startDiditDouble();
  });
  afterEach(async () => {
    await didit.close();
  });

  function flow(nodes: Array<Record<string, unknown>>, provider = 'didit') {
    return <Array<{ id: string; type: string; [key: string]: unknown }>>[
      { id: 'tab', type: 'tab' },
      { id: 'diditApi', type: 'm2m-identity-api', provider, baseUrl: didit.url, timeout: 2000 },
      ...nodes.map(node => ({ z: 'tab', api: 'diditApi', wires: [['out1'], ['out2']], ...node })),
      { id: 'out1', z: 'tab', type: 'helper' },
      { id: 'out2', z: 'tab', type: 'helper' },
    ];
  }

  async function load(nodes: Array<Record<string, unknown>>, options: { provider?: string; apiKey?: string } = {}) {
    await helper.load([nodeRed.http.capture, ...m2mNodes], flow(nodes, options.provider), {
      diditApi: { apiKey: options.apiKey ?? DOUBLE_API_KEY },
    });
  }

  async function send(nodeId: string, msg: Record<string, unknown>) {
    const answer = firstMessage(['out1', 'out2']);
    helper.getNode(nodeId).receive(msg);
    const { nodeId: out, msg: received } = await answer;
    assert.doesNotMatch(JSON.stringify(received), new RegExp(DOUBLE_API_KEY), 'the API key never rides on a msg');
    return { output: out === 'out1' ? 1 : 2, msg: received };
  }

  /** The node's last status (the helper spies on the prototype: calls of all nodes are mixed). */
  function lastStatus(nodeId: string): { fill: string; shape: string; text: string } {
    const calls = (helper.getNode(nodeId).status as unknown as { getCalls(): Array<{ thisValue: any; args: any[] }> })
      .getCalls()
      .filter(call => call.thisValue.id === nodeId);
    return calls.at(-1)!.args[0];
  }

  const sessionNode = (extra: Record<string, unknown> = {}) => ({
    id: 'session',
    type: 'm2m-didit-session',
    action: 'create',
    workflowId: DOUBLE_WORKFLOW_ID,
    vendorData: 'vendorData',
    vendorDataType: 'msg',
    callback: 'https://hmi.plant.example/done',
    ...extra,
  });

  it('creates a session with the msg’s vendor_data and metadata, and sends the URL on output 1', async () => {
    await load([sessionNode()]);
    const { output, msg } = await send('session', { vendorData: 'press-7/operator', metadata: { shift: 'B' } });
    assert.equal(output, 1);
    assert.match(msg.payload.url, /^https:\/\/verify\.didit\.me\/session\//);
    assert.equal(msg.payload.status, 'Not Started');
    assert.equal(msg.m2m.sessionId, msg.payload.sessionId);
    assert.equal(msg.m2m.provider, 'didit');
    const [request] = didit.requests;
    assert.equal(request.headers['x-api-key'], DOUBLE_API_KEY);
    assert.deepEqual(request.json, {
      workflow_id: DOUBLE_WORKFLOW_ID,
      vendor_data: 'press-7/operator',
      callback: 'https://hmi.plant.example/done',
      metadata: { shift: 'B' },
    });
    const again = await send('session', { vendorData: 'press-7/operator' });
    assert.equal(again.msg.payload.sessionId, msg.payload.sessionId, 'Didit returns the unfinished session');
    assert.equal(lastStatus('session').fill, 'green');
  });

  it('routes a decision: Approved to output 1, pending and declined to output 2 with the status as reason', async () => {
    await load([sessionNode(), { id: 'decide', type: 'm2m-didit-session', action: 'decision' }]);
    const created = (await send('session', { vendorData: 'gate-2' })).msg;
    const pending = await send('decide', { m2m: created.m2m });
    assert.deepEqual(
      [pending.output, pending.msg.m2m.reasons, pending.msg.m2m.decision],
      [2, ['didit_not_started'], 'in_review'],
    );
    assert.equal(lastStatus('decide').fill, 'yellow');
    didit.finish(created.payload.sessionId, 'Declined');
    const declined = await send('decide', { m2m: { sessionId: created.payload.sessionId } });
    assert.deepEqual([declined.output, declined.msg.m2m.reasons], [2, ['didit_declined']]);
    assert.deepEqual([lastStatus('decide').fill, lastStatus('decide').shape], ['red', 'dot']);
    didit.finish(created.payload.sessionId, 'Approved', 93);
    const approved = await send('decide', { m2m: { sessionId: created.payload.sessionId } });
    assert.equal(approved.output, 1);
    assert.deepEqual(approved.msg.payload.faceMatchScores, [93]);
    assert.equal(approved.msg.payload.raw, undefined, 'the document data stays out unless asked for');
    assert.deepEqual(approved.msg.m2m.reasons, []);
  });

  it('puts Didit’s errors on output 2 as reasons, the wait of a rate limit included', async () => {
    await load([sessionNode(), { id: 'decide', type: 'm2m-didit-session', action: 'decision' }], {
      apiKey: 'sk_test_not_the_key',
    });
    const refused = await send('session', { vendorData: 'x' });
    assert.deepEqual([refused.output, refused.msg.m2m.reasons], [2, ['didit_unauthorized']]);
    assert.equal(lastStatus('session').text, 'm2m-didit-session.status.error');
    didit.script = () => ({
      status: 429,
      body: { detail: 'Request was throttled.' },
      headers: { 'retry-after': '30' },
    });
    const limited = await send('decide', { m2m: { sessionId: 'abc' } });
    assert.deepEqual(
      [limited.output, limited.msg.m2m.reasons, limited.msg.m2m.retryAfter],
      [2, ['didit_rate_limited'], 30],
    );
    const missing = await send('decide', { payload: 'no session id here' });
    assert.deepEqual(missing.msg.m2m.reasons, ['no_session_id'], JSON.stringify(missing.msg.m2m.error));
  });

  it('says at deploy when a node and its identity API do not fit, in both directions', async () => {
    await helper.load(
      [nodeRed.http.capture, ...m2mNodes],
      <Array<{ id: string; type: string; [key: string]: unknown }>>[
        { id: 'tab', type: 'tab' },
        { id: 'diditApi', type: 'm2m-identity-api', provider: 'didit', baseUrl: didit.url },
        { id: 'm2mApi', type: 'm2m-identity-api', provider: 'm2m', baseUrl: 'http://127.0.0.1:9' },
        { id: 'device', type: 'm2m-device', deviceId: 'press-7', api: 'diditApi' },
        { id: 'attest', z: 'tab', type: 'm2m-attest', device: 'device', wires: [[], []] },
        {
          id: 'session',
          z: 'tab',
          type: 'm2m-didit-session',
          api: 'm2mApi',
          workflowId: DOUBLE_WORKFLOW_ID,
          wires: [[], []],
        },
        { id: 'nowf', z: 'tab', type: 'm2m-didit-session', api: 'diditApi', workflowId: '', wires: [[], []] },
      ],
      { diditApi: { apiKey: DOUBLE_API_KEY } },
    );
    assert.deepEqual(
      [lastStatus('attest').fill, lastStatus('attest').text],
      ['red', 'm2m-attest.status.wrong-provider'],
    );
    assert.equal(lastStatus('session').text, 'm2m-didit-session.status.wrong-provider');
    assert.equal(lastStatus('nowf').text, 'm2m-didit-session.status.no-workflow');
    helper.getNode('attest').receive({ payload: 1 });
    await new Promise(resolve => setTimeout(resolve, 50));
    const errors = (helper.getNode('attest').error as unknown as { getCalls(): Array<{ thisValue: any; args: any[] }> })
      .getCalls()
      .filter(call => call.thisValue.id === 'attest');
    assert.equal(
      errors.at(-1)?.args[0].code,
      'wrong_provider',
      'its input is answered with the reason, for Catch nodes',
    );
    assert.equal(didit.requests.length, 0);
  });

  it('says at deploy that a Didit configuration without its API key or webhook secret cannot work', async () => {
    await helper.load(
      [nodeRed.http.capture, ...m2mNodes],
      flow([
        sessionNode(),
        { id: 'face', type: 'm2m-didit-face-match', userImage: 'payload', refImage: 'refImage' },
        { id: 'hook', type: 'm2m-webhook-in', path: '/didit-hook', wires: [[], []] },
      ]),
      { diditApi: {} },
    );
    assert.deepEqual(
      ['session', 'face', 'hook'].map(id => [lastStatus(id).fill, lastStatus(id).text]),
      [
        ['red', 'm2m-didit-session.status.no-key'],
        ['red', 'm2m-didit-face-match.status.no-key'],
        ['red', 'm2m-webhook-in.status.no-secret'],
      ],
    );
    helper.getNode('session').receive({ payload: 1 });
    await new Promise(resolve => setTimeout(resolve, 50));
    const errors = (
      helper.getNode('session').error as unknown as { getCalls(): Array<{ thisValue: any; args: any[] }> }
    )
      .getCalls()
      .filter(call => call.thisValue.id === 'session');
    assert.equal(errors.at(-1)?.args[0].code, 'didit_no_api_key');
    assert.equal(didit.requests.length, 0);
  });

  describe('face match', () => {
    const faceNode = (extra: Record<string, unknown> = {}) => ({
      id: 'face',
      type: 'm2m-didit-face-match',
      userImage: 'payload',
      userImageType: 'msg',
      refImage: 'refImage',
      refImageType: 'msg',
      threshold: 40,
      saveApiRequest: false,
      ...extra,
    });

    it('sends both images and the threshold, and routes Approved to output 1 with the score', async () => {
      const refFile = path.join(nodeRed.userDir, 'badge-1234.png');
      fs.writeFileSync(refFile, PNG);
      await load([faceNode()]);
      const { output, msg } = await send('face', { payload: JPEG, refImage: refFile });
      assert.equal(output, 1);
      assert.equal(msg.m2m.score, 87.5);
      assert.equal(msg.m2m.decision, 'approved');
      assert.ok(Buffer.isBuffer(msg.payload) && msg.payload.equals(JPEG), 'payload left as it came');
      assert.ok(!JSON.stringify(msg.m2m).includes(JPEG.toString('base64')), 'no image on msg.m2m');
      const parts = didit.requests[0].parts!;
      assert.deepEqual((parts.user_image as { bytes: Buffer }).bytes, JPEG);
      assert.deepEqual((parts.ref_image as { bytes: Buffer }).bytes, PNG, 'the file named by the msg');
      assert.equal(parts.face_match_score_decline_threshold, '40');
      assert.equal(parts.save_api_request, 'false');
      assert.equal(parts.rotate_image, 'false');
    });

    it('routes a declined match to output 2 with Didit’s warnings as reasons', async () => {
      didit.faceScore = 12;
      await load([faceNode()]);
      const { output, msg } = await send('face', { payload: JPEG, refImage: JPEG });
      assert.deepEqual([output, msg.m2m.reasons, msg.m2m.score], [2, ['LOW_FACE_MATCH_SIMILARITY'], 12]);
      assert.equal(lastStatus('face').fill, 'red');
    });

    it('refuses what is not an image, or not there, before spending a credit', async () => {
      await load([faceNode()]);
      const notImage = await send('face', { payload: Buffer.from('%PDF-1.7'), refImage: JPEG });
      assert.deepEqual([notImage.output, notImage.msg.m2m.reasons], [2, ['didit_image_format']]);
      const noRef = await send('face', { payload: JPEG });
      assert.deepEqual(noRef.msg.m2m.reasons, ['image_missing']);
      const noFile = await send('face', { payload: JPEG, refImage: '/nonexistent/badge.png' });
      assert.deepEqual(noFile.msg.m2m.reasons, ['image_missing']);
      assert.equal(didit.requests.length, 0);
    });
  });
});
