import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Keystore } from '../../lib/edge/keystore';
import {
  ADMIN_KEY,
  KEYSTORE_SECRET,
  catchNode,
  caughtCode,
  firstMessage,
  helper,
  identityFlow,
  keystoreFile,
  m2mNodes,
  newUserDir,
  nextMessage,
  removeDir,
  startNodeRed,
  stopNodeRed,
  serveHttpNode,
  type NodeHttp,
} from './harness';
import { rawRequest } from '../helpers/raw-http';
import { skipWith } from '../helpers/services';
import { PG_URL, POSTGRES } from '../helpers/stores';

describe('nodes: provision and attest against the m2m-verifier node', () => {
  let http: NodeHttp;
  let userDir: string;

  beforeEach(async () => {
    await startNodeRed();
    http = await serveHttpNode();
    userDir = newUserDir();
  });
  afterEach(async () => {
    await stopNodeRed();
    await http.close();
    removeDir(userDir);
  });

  async function load(overrides: Parameters<typeof identityFlow>[1] = {}) {
    const { flow, credentials } = identityFlow(http.url, overrides);
    await helper.load([http.capture, catchNode, ...m2mNodes], flow, credentials);
  }

  async function provision() {
    const registered = nextMessage('provisioned');
    helper.getNode('provision').receive({ payload: 'go' });
    return registered;
  }

  async function attest(msg: Record<string, unknown> = { payload: 21.5 }) {
    const answer = firstMessage(['approved', 'declined']);
    helper.getNode('attest').receive(msg);
    const { nodeId, msg: out } = await answer;
    return { output: nodeId === 'approved' ? 1 : 2, msg: out };
  }

  it('serves identity API v1 under /m2m on httpNode', async () => {
    await load();
    const health = await fetch(`${http.url}/m2m/v1/health`);
    assert.deepEqual(await health.json(), { status: 'ok', store: 'ok' });
  });

  it('answers request targets that are not URLs with problem+json, and Node-RED stays up', async () => {
    await load();
    for (const target of ['/m2m///', '/m2m//%zz', '/m2m//[', '/m2m//a:b@']) {
      const answer = await rawRequest(http.url, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      assert.equal(answer.status, 404, target);
      assert.match(answer.headers, /application\/problem\+json/i);
    }
    assert.equal((await fetch(`${http.url}/m2m/v1/health`)).status, 200);
  });

  it("answers malformed JSON with problem+json, not the editor body parser's HTML page", async () => {
    await load();
    const answer = await fetch(`${http.url}/m2m/v1/challenges`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{bad',
    });
    assert.equal(answer.status, 400);
    assert.match(answer.headers.get('content-type') ?? '', /application\/problem\+json/);
    const body = await answer.text();
    assert.equal(JSON.parse(body).code, 'invalid_request');
    assert.doesNotMatch(body, /node_modules|at JSON\.parse/);
  });

  it('provisions the device: creates the key once and registers it, idempotently', async () => {
    await load();
    const first = await provision();
    assert.deepEqual(first.m2m, {
      deviceId: 'press-7',
      status: 'active',
      created: true,
      keyCreated: true,
      keyStorage: 'file',
    });
    assert.equal(first.payload, 'go');
    const second = await provision();
    assert.deepEqual(second.m2m, {
      deviceId: 'press-7',
      status: 'active',
      created: false,
      keyCreated: false,
      keyStorage: 'file',
    });
    assert.equal(fs.statSync(keystoreFile(userDir)).mode & 0o777, 0o600);
  });

  it('attests an approved device: output 1 with a token, payload untouched', async () => {
    await load();
    await provision();
    const { output, msg } = await attest();
    assert.equal(output, 1);
    assert.equal(msg.payload, 21.5);
    assert.equal(msg.m2m.decision, 'approved');
    assert.equal(msg.m2m.deviceId, 'press-7');
    assert.match(msg.m2m.token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    assert.ok(Date.parse(msg.m2m.expiresAt) > Date.now());
    assert.deepEqual(msg.m2m.reasons, []);
  });

  it('sends a low TinyML score as evidence and routes the decline to output 2', async () => {
    await load();
    await provision();
    const { output, msg } = await attest({
      payload: 1,
      m2m: { tinyml: { score: 0.2, model: 'sensor-behaviour-v1', source: 'temp' } },
    });
    assert.equal(output, 2);
    assert.equal(msg.m2m.decision, 'declined');
    assert.deepEqual(msg.m2m.reasons, ['tinyml_low']);
    assert.equal(msg.m2m.score, 0.2);
    assert.equal(msg.m2m.tinyml.source, 'temp', 'keeps what was on msg.m2m');
  });

  it('sends TinyML evidence that has no score (warming up) and routes the review to output 2 without a token', async () => {
    await load();
    await provision();
    const tinyml = {
      source: 'press-1',
      score: null,
      trusted: false,
      reason: 'warming_up',
      model: 'sensor-behaviour-v1-stamped@x',
    };
    const { output, msg } = await attest({ payload: 1, m2m: { tinyml } });
    assert.deepEqual(
      [output, msg.m2m.decision, msg.m2m.reasons, msg.m2m.token],
      [2, 'in_review', ['tinyml_unscored'], undefined],
    );
  });

  it('routes an attestation of an unregistered device to output 2 with device_unknown', async () => {
    await load();
    const { output, msg } = await attest();
    assert.equal(output, 2);
    assert.deepEqual([msg.m2m.decision, msg.m2m.reasons], ['error', ['device_unknown']]);
  });

  it('routes a revoked device to output 2, and refuses to provision it again', async () => {
    await load();
    await provision();
    const revoke = await fetch(`${http.url}/m2m/v1/devices/press-7/revoke`, {
      method: 'POST',
      headers: { 'x-api-key': ADMIN_KEY },
    });
    assert.equal(revoke.status, 200);
    const { output, msg } = await attest();
    assert.deepEqual([output, msg.m2m.reasons], [2, ['device_revoked']]);
    const caught = nextMessage('caught');
    helper.getNode('provision').receive({ payload: 'again' });
    const error = await caught;
    assert.equal(caughtCode(error), 'device_revoked');
    assert.equal(error.error.stack, undefined, 'no stack in the debug sidebar');
  });

  it('takes extra components written as numbers, and reports one that is an object as bad_config', async () => {
    const loadWithExtra = async (extra: string) => {
      const { flow, credentials } = identityFlow(http.url);
      const device = flow.find(node => node.id === 'device')!;
      device.extra = extra;
      await helper.load([http.capture, catchNode, ...m2mNodes], flow, credentials);
    };
    await loadWithExtra('{"plc.serial": 12345, "plc.redundant": true}');
    const registered = await provision();
    assert.equal(registered.m2m.deviceId, 'press-7');
    await helper.unload();
    await loadWithExtra('{"plc.serial": {"rack": 1}}');
    const caught = nextMessage('caught');
    helper.getNode('provision').receive({ payload: 'go' });
    assert.equal((await caught).m2m.error.code, 'bad_config');
  });

  it('keeps running when the verifier is unreachable: output 2 with verifier_unreachable, twice', async () => {
    await load({ apiUrl: 'http://127.0.0.1:9/m2m' });
    for (let i = 0; i < 2; i++) {
      const { output, msg } = await attest();
      assert.deepEqual([output, msg.m2m.decision, msg.m2m.reasons], [2, 'error', ['verifier_unreachable']]);
    }
  });

  it('reports a corrupt keystore to Catch nodes and leaves the file as it was', async () => {
    const file = keystoreFile(userDir);
    fs.mkdirSync(require('node:path').dirname(file), { recursive: true });
    fs.writeFileSync(file, '{"format":"m2m-keystore-v1"', { mode: 0o600 });
    await load();
    const caught = nextMessage('caught');
    helper.getNode('provision').receive({ payload: 'go' });
    assert.equal(caughtCode(await caught), 'keystore_corrupt');
    assert.equal(fs.readFileSync(file, 'utf8'), '{"format":"m2m-keystore-v1"');
    const { output, msg } = await attest();
    assert.deepEqual([output, msg.m2m.reasons, msg.m2m.error.code], [2, ['keystore_corrupt'], 'keystore_corrupt']);
    assert.equal(typeof msg.m2m.error.message, 'string');
  });

  it('reports a failed provisioning on deploy to Catch nodes, with its code', async () => {
    const { flow, credentials } = identityFlow(http.url);
    (flow.find(node => node.id === 'provision') as Record<string, unknown>).onDeploy = true;
    credentials.api = { ...credentials.api, enrollmentToken: 'not-the-enrollment-token' };
    await helper.load([http.capture, catchNode, ...m2mNodes], flow, credentials);
    // Provisioning on deploy starts half a second after it.
    const caught = await nextMessage('caught', 10_000);
    assert.deepEqual([caughtCode(caught), caught.m2m.deviceId], ['forbidden', 'press-7']);
  });

  it('deletes the state files of nodes that are deleted, and keeps those of nodes redeployed', async () => {
    const { flow, credentials } = identityFlow(http.url);
    const extra = [
      { id: 'hook', z: 'tab', x: 100, y: 100, type: 'm2m-webhook-in', path: '/hooked', wires: [[], []] },
      {
        id: 'check',
        z: 'tab',
        x: 100,
        y: 100,
        type: 'm2m-token-check',
        api: 'api',
        proofMaxAge: 300,
        requireProof: true,
        wires: [[], []],
      },
    ];
    await helper.load([http.capture, catchNode, ...m2mNodes], [...flow, ...extra], credentials);
    const files = () =>
      ['webhook-in', 'token-check'].flatMap(kind => {
        const dir = path.join(userDir, 'm2m-identity', kind);
        return fs.existsSync(dir) ? fs.readdirSync(dir).map(file => `${kind}/${file}`) : [];
      });
    await new Promise(resolve => setTimeout(resolve, 200));
    assert.ok(
      files().some(file => file.startsWith('webhook-in/hook')),
      files().join(),
    );
    assert.ok(
      files().some(file => file.startsWith('token-check/check')),
      files().join(),
    );
    const mode = fs.statSync(path.join(userDir, 'm2m-identity', 'webhook-in', 'hook.db')).mode & 0o777;
    assert.equal(mode, 0o600, 'owner-only, like every other file of this package');
    await helper.setFlows(flow, 'full', credentials);
    assert.deepEqual(files(), [], 'gone with their nodes');
  });

  it('shows a red status, without crashing, when its database cannot be opened', async () => {
    const { flow, credentials } = identityFlow(http.url);
    const blocker = `${userDir}/not-a-folder`;
    fs.writeFileSync(blocker, '');
    (flow.find(node => node.id === 'verifier') as Record<string, unknown>).store = `${blocker}/verifier.db`;
    await helper.load([http.capture, catchNode, ...m2mNodes], flow, credentials);
    const verifier = helper.getNode('verifier');
    await new Promise(resolve => setTimeout(resolve, 200));
    const last = (verifier.status as unknown as { lastCall: { args: Array<{ fill: string; text: string }> } }).lastCall
      .args[0];
    assert.deepEqual([last.fill, last.text], ['red', 'm2m-verifier.status.failed']);
    const health = await fetch(`${http.url}/m2m/v1/health`);
    assert.equal(health.status, 503);
    assert.equal(((await health.json()) as { code: string }).code, 'verifier_unavailable');
  });

  it('refuses a PostgreSQL URL that carries its password (the flow file would keep it), without crashing', async () => {
    const { flow, credentials } = identityFlow(http.url);
    (flow.find(node => node.id === 'verifier') as Record<string, unknown>).store =
      'postgres://plant:s3cret@127.0.0.1:5432/test';
    await helper.load([http.capture, catchNode, ...m2mNodes], flow, credentials);
    const verifier = helper.getNode('verifier');
    await new Promise(resolve => setTimeout(resolve, 200));
    const spied = verifier as unknown as Record<'status' | 'error', { lastCall: { args: unknown[] } }>;
    assert.equal((spied.status.lastCall.args[0] as { fill: string }).fill, 'red');
    assert.match(
      JSON.stringify(spied.error.lastCall.args[0], Object.getOwnPropertyNames(spied.error.lastCall.args[0])),
      /bad_config/,
    );
    assert.equal((await fetch(`${http.url}/m2m/v1/health`)).status, 503);
  });

  it('keeps its store in PostgreSQL with the password as a credential', async function () {
    if (!PG_URL) skipWith(this, POSTGRES.skipReason!);
    const db = await POSTGRES.fresh();
    try {
      const { flow, credentials } = identityFlow(http.url);
      (flow.find(node => node.id === 'verifier') as Record<string, unknown>).store = db.spec;
      // This machine's PostgreSQL trusts local connections: the password travels but is not checked.
      credentials.verifier = { ...credentials.verifier, storePassword: 'kept-as-a-credential' };
      await helper.load([http.capture, catchNode, ...m2mNodes], flow, credentials);
      await provision();
      assert.equal((await attest()).output, 1);
      const approved = await db.sql("SELECT count(*)::int AS n FROM sessions WHERE decision = 'approved'");
      assert.equal(approved[0].n, 1, 'the decision is in PostgreSQL');
    } finally {
      await db.drop();
    }
  });

  it('removes its routes from httpNode when the flow stops', async () => {
    await load();
    assert.equal((await fetch(`${http.url}/m2m/v1/health`)).status, 200);
    await helper.unload();
    assert.equal((await fetch(`${http.url}/m2m/v1/health`)).status, 404);
  });

  it('never lets the private key reach a msg, a log line or the exported flow', async () => {
    await load();
    const seen: unknown[] = [];
    for (const id of ['provisioned', 'approved', 'declined', 'caught'])
      helper.getNode(id).on('input', (msg: unknown) => seen.push(msg));
    await provision();
    await attest();
    await attest({ payload: 0, m2m: { tinyml: { score: 0.1, model: 'm' } } });

    const seed = Buffer.from(
      new Keystore(`${userDir}/m2m-identity/keys`, KEYSTORE_SECRET).load('press-7')!.privateKey.exportSeed(),
    );
    const forms = ['hex', 'base64', 'base64url'].map(encoding => seed.toString(encoding as BufferEncoding));
    // What the editor exports: the runtime's active flow configuration.
    const flows = (
      helper as unknown as { _redNodes: { getFlows(): { flows: Array<{ id: string }> } } }
    )._redNodes.getFlows();
    assert.ok(flows.flows.some(node => node.id === 'device'));
    const logLines = helper.log().args.map((args: unknown[]) => JSON.stringify(args));
    const statuses = ['provision', 'attest', 'verifier'].flatMap(id =>
      (helper.getNode(id).status as unknown as { args: unknown[][] }).args.map((args: unknown[]) =>
        JSON.stringify(args),
      ),
    );
    const haystacks = {
      msgs: JSON.stringify(seen),
      flows: JSON.stringify(flows),
      logs: logLines.join('\n'),
      statuses: statuses.join('\n'),
    };
    assert.equal(seen.length, 3);
    for (const [where, text] of Object.entries(haystacks)) {
      for (const form of forms) assert.ok(!text.includes(form), `private key found in ${where}`);
      assert.ok(!/"d"\s*:/.test(text), `a JWK "d" member found in ${where}`);
    }
  });
});
