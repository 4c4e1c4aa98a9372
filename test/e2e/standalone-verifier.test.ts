/**
 * End to end: the standalone verifier as its own process, driven over real HTTP by the provision
 * and attest nodes, with the bad inputs a gateway meets in the field.
 */
import * as assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { IdentityApiClient } from '../../lib/edge/api-client';
import { buildAttestation } from '../../lib/edge/attestation';
import { Keystore } from '../../lib/edge/keystore';
import { startCli } from '../helpers/verifier-cli';
import {
  KEYSTORE_SECRET,
  catchNode,
  firstMessage,
  gatewayFlow,
  helper,
  keystoreFile,
  m2mNodes,
  newUserDir,
  nextMessage,
  removeDir,
  startNodeRed,
  stopNodeRed,
} from '../nodes/harness';

const ENROLLMENT_TOKEN = 'e2e-enrollment-token';
const ADMIN_KEY = 'e2e-admin-key-long-enough';

describe('end to end: nodes against the standalone m2m-verifier process', function () {
  this.timeout(30_000);
  let verifier: { child: ChildProcess; url: string };
  let dataDir: string;
  let userDir: string;

  beforeEach(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-e2e-'));
    verifier = await startCli(['--port', '0', '--store', `sqlite:${path.join(dataDir, 'verifier.db')}`], {
      M2M_ENROLLMENT_TOKEN: ENROLLMENT_TOKEN,
      M2M_ADMIN_KEY: ADMIN_KEY,
    });
    await startNodeRed();
    userDir = newUserDir();
  });
  afterEach(async () => {
    await stopNodeRed();
    if (verifier.child.exitCode === null) {
      const exited = new Promise(resolve => verifier.child.once('exit', resolve));
      verifier.child.kill('SIGTERM');
      await exited;
    }
    removeDir(dataDir);
    removeDir(userDir);
  });

  const load = (enrollmentToken = ENROLLMENT_TOKEN) => {
    const { flow, credentials } = gatewayFlow(verifier.url, { enrollmentToken });
    return helper.load([catchNode, ...m2mNodes], flow, credentials);
  };
  async function provision() {
    const registered = nextMessage('provisioned');
    helper.getNode('provision').receive({ payload: 'go' });
    return registered;
  }
  async function attest() {
    const answer = firstMessage(['approved', 'declined']);
    helper.getNode('attest').receive({ payload: 'reading' });
    const { nodeId, msg } = await answer;
    return { output: nodeId === 'approved' ? 1 : 2, m2m: msg.m2m };
  }
  async function caughtError(nodeId: string) {
    const caught = nextMessage('caught');
    helper.getNode(nodeId).receive({ payload: 'go' });
    const { error, m2m } = await caught;
    // Node-RED 4 copies the code to msg.error.code; msg.m2m.error has it on every version.
    if (error.code !== undefined) assert.equal(error.code, m2m.error.code);
    return m2m.error.code as string;
  }

  it('provisions and attests: approved with a token the verifier introspects as active', async () => {
    await load();
    assert.equal((await provision()).m2m.status, 'active');
    const { output, m2m } = await attest();
    assert.deepEqual([output, m2m.decision], [1, 'approved']);
    const introspection = (await fetch(`${verifier.url}/v1/tokens/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': ADMIN_KEY },
      body: JSON.stringify({ token: m2m.token }),
    }).then(r => r.json())) as Record<string, unknown>;
    assert.deepEqual([introspection.active, introspection.sub], [true, 'press-7']);
  });

  it('reports a wrong enrollment token to Catch nodes', async () => {
    await load('not-the-token');
    assert.equal(await caughtError('provision'), 'forbidden');
  });

  it('routes an unknown (never provisioned) device to output 2', async () => {
    await load();
    assert.deepEqual((await attest()).m2m.reasons, ['device_unknown']);
  });

  it('routes a revoked device to output 2', async () => {
    await load();
    await provision();
    await fetch(`${verifier.url}/v1/devices/press-7/revoke`, { method: 'POST', headers: { 'x-api-key': ADMIN_KEY } });
    assert.deepEqual((await attest()).m2m.reasons, ['device_revoked']);
  });

  it('declines a replayed attestation and one for another verifier over the wire', async () => {
    await load();
    await provision();
    const identity = new Keystore(path.join(userDir, 'm2m-identity', 'keys'), KEYSTORE_SECRET).load('press-7')!;
    const rawComponents = (
      helper.getNode('device') as unknown as { components(): Record<string, string> }
    ).components();
    const client = new IdentityApiClient({ baseUrl: verifier.url });
    try {
      const { nonce } = await client.challenge('press-7');
      const jws = buildAttestation(identity, { audience: verifier.url, nonce, rawComponents });
      assert.equal((await client.attest(jws)).decision, 'approved');
      assert.deepEqual((await client.attest(jws)).reasons, ['nonce_reused']);
      const second = await client.challenge('press-7');
      const elsewhere = buildAttestation(identity, {
        audience: 'https://verifier.other-plant.example',
        nonce: second.nonce,
        rawComponents,
      });
      assert.deepEqual((await client.attest(elsewhere)).reasons, ['wrong_aud']);
    } finally {
      client.close();
    }
  });

  it('keeps running when the verifier goes away: output 2 with verifier_unreachable', async () => {
    await load();
    await provision();
    const exited = new Promise(resolve => verifier.child.once('exit', resolve));
    verifier.child.kill('SIGTERM');
    await exited;
    const { output, m2m } = await attest();
    assert.deepEqual([output, m2m.decision, m2m.reasons], [2, 'error', ['verifier_unreachable']]);
  });

  it('reports an unreadable keystore and writes no new key', async () => {
    fs.mkdirSync(keystoreFile(userDir), { recursive: true }); // a folder where the file should be
    await load();
    assert.equal(await caughtError('provision'), 'keystore_unreadable');
    assert.ok(fs.statSync(keystoreFile(userDir)).isDirectory());
  });
});
