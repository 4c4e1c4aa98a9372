/**
 * The Didit client against the Didit test double (test/helpers/didit-double.ts, which follows the
 * documented v3 contract): every request asserted field by field, every documented error as a
 * reason code, retries only where a repeat is harmless.
 */
import * as assert from 'node:assert/strict';
import { DiditClient, MAX_IMAGE_BYTES, imageType } from '../../lib/didit/client';
import {
  DOUBLE_API_KEY,
  DOUBLE_WORKFLOW_ID,
  type DiditDouble,
  JPEG,
  PNG,
  startDiditDouble,
} from '../helpers/didit-double';

describe('didit: API client against the Didit double', () => {
  let didit: DiditDouble;
  let client: DiditClient;

  beforeEach(async () => {
    didit = await startDiditDouble();
    client = new DiditClient({ baseUrl: didit.url, apiKey: DOUBLE_API_KEY, timeoutMs: 1000, retryDelaysMs: [10, 10] });
  });
  afterEach(async () => {
    client.close();
    await didit.close();
  });

  function codeOf(expected: string, extra: (err: any) => void = () => undefined) {
    return (err: any) => {
      assert.equal(err.code, expected, err.message);
      assert.doesNotMatch(err.message, new RegExp(DOUBLE_API_KEY));
      extra(err);
      return true;
    };
  }

  it('creates a session with the documented request, and returns what a flow shows an operator', async () => {
    const session = await client.createSession({
      workflowId: DOUBLE_WORKFLOW_ID,
      vendorData: 'press-7/operator',
      callback: 'https://hmi.plant.example/done',
      metadata: { station: 'press-7' },
      language: 'de',
    });
    const [request] = didit.requests;
    assert.equal(request.method, 'POST');
    assert.equal(request.path, '/v3/session/');
    assert.equal(request.headers['x-api-key'], DOUBLE_API_KEY);
    assert.match(String(request.headers['content-type']), /^application\/json/);
    assert.equal(request.headers.authorization, undefined, 'the key travels in x-api-key only');
    assert.deepEqual(request.json, {
      workflow_id: DOUBLE_WORKFLOW_ID,
      vendor_data: 'press-7/operator',
      callback: 'https://hmi.plant.example/done',
      metadata: { station: 'press-7' },
      language: 'de',
    });
    assert.match(session.sessionId, /^[0-9a-f-]{36}$/);
    assert.match(session.url, /^https:\/\/verify\.didit\.me\/session\//);
    assert.equal(session.status, 'Not Started');
    assert.equal(session.vendorData, 'press-7/operator');
    assert.equal(typeof session.sessionNumber, 'number');
  });

  it('gets the unfinished session back for the same vendor_data, and a new one once it is finished', async () => {
    const first = await client.createSession({ workflowId: DOUBLE_WORKFLOW_ID, vendorData: 'gate-2' });
    const again = await client.createSession({ workflowId: DOUBLE_WORKFLOW_ID, vendorData: 'gate-2' });
    assert.equal(again.sessionId, first.sessionId);
    didit.finish(first.sessionId, 'Approved');
    const next = await client.createSession({ workflowId: DOUBLE_WORKFLOW_ID, vendorData: 'gate-2' });
    assert.notEqual(next.sessionId, first.sessionId);
  });

  it('reads a decision, with face-match scores from either answer shape', async () => {
    const session = await client.createSession({ workflowId: DOUBLE_WORKFLOW_ID, vendorData: 'press-7' });
    assert.equal((await client.decision(session.sessionId)).status, 'Not Started');
    didit.finish(session.sessionId, 'Approved', 91.2);
    const decision = await client.decision(session.sessionId);
    const request = didit.requests.at(-1)!;
    assert.deepEqual([request.method, request.path], ['GET', `/v3/session/${session.sessionId}/decision/`]);
    assert.equal(decision.status, 'Approved');
    assert.equal(decision.vendorData, 'press-7');
    assert.deepEqual(decision.faceMatchScores, [91.2]);
    assert.ok(Array.isArray(decision.raw.id_verifications));
    didit.script = () => ({
      status: 200,
      body: { session_id: 'x', status: 'Declined', face_match: { status: 'Declined', score: 12 } },
    });
    assert.deepEqual((await client.decision('x')).faceMatchScores, [12], 'the older single-object shape');
  });

  it('refuses a session id that would change the path, before any request', async () => {
    await assert.rejects(client.decision('../../v3/session'), codeOf('invalid_request'));
    assert.equal(didit.requests.length, 0);
  });

  it('sends a face match as multipart with both images and the threshold', async () => {
    const match = await client.faceMatch({
      userImage: JPEG,
      refImage: PNG,
      declineThreshold: 45,
      rotateImage: true,
      saveApiRequest: false,
      vendorData: 'camera-station-1',
    });
    const [request] = didit.requests;
    assert.deepEqual([request.method, request.path], ['POST', '/v3/face-match/']);
    assert.match(String(request.headers['content-type']), /^multipart\/form-data; boundary=/);
    const parts = request.parts!;
    const user = parts.user_image as { bytes: Buffer; type: string };
    const ref = parts.ref_image as { bytes: Buffer; type: string };
    assert.deepEqual([user.bytes, user.type], [JPEG, 'image/jpeg']);
    assert.deepEqual([ref.bytes, ref.type], [PNG, 'image/png']);
    assert.equal(parts.face_match_score_decline_threshold, '45');
    assert.equal(parts.rotate_image, 'true');
    assert.equal(parts.save_api_request, 'false');
    assert.equal(parts.vendor_data, 'camera-station-1');
    assert.deepEqual([match.status, match.score, match.warnings], ['Approved', 87.5, []]);
    assert.match(match.requestId!, /^[0-9a-f-]{36}$/);
  });

  it('reports a declined face match with its warnings', async () => {
    didit.faceScore = 21;
    const match = await client.faceMatch({ userImage: JPEG, refImage: JPEG });
    assert.equal(match.status, 'Declined');
    assert.deepEqual(match.warnings, [{ risk: 'LOW_FACE_MATCH_SIMILARITY', description: 'Low face match similarity' }]);
  });

  it('checks images before spending a credit: over 5 MB, or not an image', async () => {
    const big = Buffer.concat([JPEG, Buffer.alloc(MAX_IMAGE_BYTES)]);
    await assert.rejects(client.faceMatch({ userImage: big, refImage: JPEG }), codeOf('didit_image_too_large'));
    await assert.rejects(
      client.faceMatch({ userImage: JPEG, refImage: Buffer.from('%PDF-1.7') }),
      codeOf('didit_image_format'),
    );
    assert.equal(didit.requests.length, 0);
    assert.equal(imageType(Buffer.from('RIFF\0\0\0\0WEBPVP8 ', 'latin1')), 'image/webp');
  });

  it('turns every documented error into a reason code, without the key in any message', async () => {
    const cases: Array<[number, unknown, string]> = [
      [400, { workflow_id: ['Must be a valid UUID.'] }, 'didit_bad_request'],
      [401, { detail: 'This API key has expired.' }, 'didit_unauthorized'],
      [402, { detail: 'Payment required.' }, 'didit_payment_required'],
      [403, { detail: 'not-enough-credits', code: 'contract_billing_suspended' }, 'didit_forbidden'],
      [404, { detail: 'Not found.' }, 'didit_not_found'],
      [409, { detail: 'Conflict.' }, 'didit_conflict'],
    ];
    for (const [status, body, code] of cases) {
      didit.script = () => ({ status, body });
      await assert.rejects(client.createSession({ workflowId: DOUBLE_WORKFLOW_ID }), codeOf(code));
    }
    didit.script = () => ({ status: 403, body: { detail: 'x', code: 'contract_billing_suspended' } });
    await assert.rejects(
      client.createSession({ workflowId: DOUBLE_WORKFLOW_ID }),
      codeOf('didit_forbidden', err => assert.match(err.message, /contract_billing_suspended/)),
    );
  });

  it('reports a rate limit with the wait Didit asked for, and does not retry it', async () => {
    didit.script = () => ({
      status: 429,
      body: { detail: 'Request was throttled.' },
      headers: { 'retry-after': '17' },
    });
    await assert.rejects(
      client.decision('abc'),
      codeOf('didit_rate_limited', err => assert.equal(err.retryAfter, 17)),
    );
    assert.equal(didit.requests.length, 1);
  });

  it('retries a decision read through 5xx and timeouts, but never a face match', async () => {
    const session = await client.createSession({ workflowId: DOUBLE_WORKFLOW_ID });
    didit.requests.length = 0;
    didit.script = (_request, n) => (n === 0 ? { status: 502 } : n === 1 ? 'hang' : undefined);
    assert.equal((await client.decision(session.sessionId)).status, 'Not Started');
    assert.equal(didit.requests.length, 3);

    didit.requests.length = 0;
    didit.script = () => ({ status: 503 });
    await assert.rejects(client.faceMatch({ userImage: JPEG, refImage: JPEG }), codeOf('didit_unavailable'));
    assert.equal(didit.requests.length, 1, 'a face match costs a credit: not repeated');
  });

  it('retries a session creation only when it names its vendor_data (Didit then returns the same session)', async () => {
    didit.script = (_request, n) => (n === 0 ? { status: 500 } : undefined);
    await assert.rejects(client.createSession({ workflowId: DOUBLE_WORKFLOW_ID }), codeOf('didit_unavailable'));
    assert.equal(didit.requests.length, 1);
    didit.script = (_request, n) => (n === 1 ? { status: 500 } : undefined);
    const session = await client.createSession({ workflowId: DOUBLE_WORKFLOW_ID, vendorData: 'press-7' });
    assert.equal(didit.requests.length, 3);
    assert.equal(session.status, 'Not Started');
  });

  it('says so when Didit withholds the session link (a key without sessions write access)', async () => {
    didit.script = () => ({
      status: 201,
      body: { session_id: 'abc', session_number: 1, url: null, status: 'Not Started', session_token: null },
    });
    await assert.rejects(client.createSession({ workflowId: DOUBLE_WORKFLOW_ID }), codeOf('didit_no_session_url'));
  });

  it('says when the answer is not what Didit documents, and when Didit is unreachable', async () => {
    didit.script = () => ({ status: 201, body: { session_id: 'x' } });
    await assert.rejects(client.createSession({ workflowId: DOUBLE_WORKFLOW_ID }), codeOf('didit_bad_response'));
    const offline = new DiditClient({ baseUrl: 'http://127.0.0.1:9', apiKey: DOUBLE_API_KEY, retryDelaysMs: [] });
    await assert.rejects(offline.decision('abc'), codeOf('didit_unreachable'));
    offline.close();
  });

  it('does not follow a redirect to another host, so the key never goes there', async () => {
    const elsewhere = await startDiditDouble();
    try {
      didit.script = () => ({ status: 307, headers: { location: `${elsewhere.url}/v3/session/abc/decision/` } });
      await assert.rejects(
        client.decision('abc'),
        codeOf('didit_http_307', err =>
          assert.match(err.message, /redirected to http:\/\/127\.0\.0\.1:\d+\/v3\/session/),
        ),
      );
      assert.deepEqual(elsewhere.requests, []);
    } finally {
      await elsewhere.close();
    }
  });

  it("says metadata that cannot be JSON is the caller's, and sends nothing", async () => {
    const metadata: Record<string, unknown> = { line: 'press shop' };
    metadata.self = metadata;
    await assert.rejects(
      client.createSession({ workflowId: DOUBLE_WORKFLOW_ID, vendorData: 'press-7', metadata }),
      codeOf('didit_bad_metadata'),
    );
    assert.deepEqual(didit.requests, []);
  });

  it('is refused by Didit without the right key', async () => {
    const wrong = new DiditClient({ baseUrl: didit.url, apiKey: 'sk_test_wrong' });
    await assert.rejects(wrong.decision('abc'), codeOf('didit_unauthorized'));
    wrong.close();
    assert.throws(() => new DiditClient({ baseUrl: didit.url, apiKey: '' }), codeOf('didit_no_api_key'));
  });
});
