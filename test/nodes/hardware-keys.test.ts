/**
 * m2m-device with its key in a file, in a SoftHSM2 token and in a software TPM, side by side in
 * one Node-RED against a standalone verifier: each registers, attests, and stamps messages that
 * m2m-token-check accepts; a file-key device moves into the token without enrolling again; a
 * wrong setting reaches the status and Catch with its code; the PIN shows up nowhere.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type RunningVerifier, SqliteStore, startVerifierServer } from '../../lib/verifier';
import { type SoftwareTpm, TEST_PIN, type TestToken, requireHardware, softHsm, softwareTpm } from '../helpers/hardware';
import { ADMIN_KEY, ENROLLMENT_TOKEN } from '../verifier/harness';
import {
  KEYSTORE_SECRET,
  catchNode,
  caughtCode,
  helper,
  keystoreFile,
  m2mNodes,
  newUserDir,
  nextMessage,
  removeDir,
  startNodeRed,
  stopNodeRed,
} from './harness';

type FlowNode = { id: string; type: string; [key: string]: unknown };

describe('nodes: device keys in a file, a SoftHSM2 token and a TPM, side by side', function () {
  this.timeout(120_000);
  let hsm: TestToken;
  let tpm: SoftwareTpm;
  let dir: string;
  let userDir: string;
  let verifier: RunningVerifier;
  /** Tokens outlive a test: each test's devices get labels of their own. */
  let run = 0;

  before(async function () {
    hsm = requireHardware(this, softHsm());
    tpm = requireHardware(this, await softwareTpm());
  });

  beforeEach(async () => {
    run++;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-hardware-'));
    verifier = await startVerifierServer({
      port: 0,
      store: new SqliteStore(path.join(dir, 'verifier.db')),
      adminKey: ADMIN_KEY,
      enrollmentToken: ENROLLMENT_TOKEN,
      tokenTtlSeconds: 60,
    });
    await startNodeRed();
    userDir = newUserDir();
  });
  afterEach(async () => {
    await stopNodeRed();
    await verifier.close();
    removeDir(dir);
    removeDir(userDir);
  });

  type Store = 'file' | 'hsm' | 'hsm-p256' | 'tpm';
  const deviceConfig = (id: string, deviceId: string, store: Store, overrides: Record<string, unknown> = {}) => ({
    id,
    type: 'm2m-device',
    deviceId,
    api: 'api',
    sources: 'machine-id',
    extra: '{}',
    metadata: '{}',
    ...(store === 'file'
      ? { keyStore: 'file' }
      : store === 'tpm'
        ? { keyStore: 'tpm', pkcs11Module: tpm.module, pkcs11Token: tpm.token }
        : {
            keyStore: 'pkcs11',
            pkcs11Module: hsm.module,
            pkcs11Token: hsm.token,
            pkcs11KeyType: store === 'hsm' ? 'ed25519' : 'p256',
          }),
    pkcs11KeyLabel: `m2m-${deviceId}-${run}`,
    ...overrides,
  });

  /** Per device: its config, provision, a re-auth timer stamping proofs, into one m2m-token-check. */
  function flow(devices: Array<{ deviceId: string; store: Store; pin?: string; config?: Record<string, unknown> }>) {
    const nodes: FlowNode[] = [
      { id: 'tab', type: 'tab' },
      { id: 'api', type: 'm2m-identity-api', baseUrl: verifier.url, timeout: 5000 },
      {
        id: 'check',
        z: 'tab',
        type: 'm2m-token-check',
        api: 'api',
        audience: '',
        proofMaxAge: 300,
        requireProof: true,
        wires: [['valid'], ['invalid']],
      },
      { id: 'catch', z: 'tab', x: 100, y: 100, type: 'catch', scope: null, uncaught: false, wires: [['caught']] },
      ...['valid', 'invalid', 'caught', 'provisioned'].map(id => ({ id, z: 'tab', type: 'helper' })),
    ];
    const credentials: Record<string, Record<string, string>> = {
      api: { enrollmentToken: ENROLLMENT_TOKEN, apiKey: ADMIN_KEY },
    };
    for (const { deviceId, store, pin, config } of devices) {
      nodes.push(
        deviceConfig(`device-${deviceId}`, deviceId, store, config),
        {
          id: `provision-${deviceId}`,
          z: 'tab',
          type: 'm2m-provision',
          device: `device-${deviceId}`,
          onDeploy: false,
          wires: [['provisioned']],
        },
        {
          id: `timer-${deviceId}`,
          z: 'tab',
          type: 'm2m-reauth-timer',
          device: `device-${deviceId}`,
          fraction: 0.5,
          floor: 1,
          networkPoll: 0,
          offline: 'hold',
          maxMessages: 100,
          maxBytes: 100000,
          proofs: true,
          wires: [['check'], []],
        },
      );
      credentials[`device-${deviceId}`] = {
        keystoreSecret: KEYSTORE_SECRET,
        ...(store === 'file' ? {} : { pin: pin ?? TEST_PIN }),
      };
    }
    return { nodes, credentials };
  }

  async function provision(deviceId: string): Promise<any> {
    const answer = nextMessage('provisioned', 20_000);
    helper.getNode(`provision-${deviceId}`).receive({ payload: 'go' });
    return (await answer).m2m;
  }

  const admin = { headers: { authorization: `Bearer ${ADMIN_KEY}` } };
  const registered = async (deviceId: string) =>
    (await fetch(`${verifier.url}/v1/devices/${deviceId}`, admin)).json() as Promise<any>;

  function collect(ids: string[]): Record<string, any[]> {
    const out: Record<string, any[]> = Object.fromEntries(ids.map(id => [id, []]));
    for (const id of ids) helper.getNode(id).on('input', (msg: unknown) => out[id].push(msg));
    return out;
  }

  async function until(check: () => boolean, ms: number, what: string): Promise<void> {
    const started = Date.now();
    while (!check()) {
      if (Date.now() - started > ms) throw new Error(`${what} not reached within ${ms} ms`);
      await new Promise(resolve => setTimeout(resolve, 50));
    }
  }

  it('registers, attests and stamps proofs for a file key, an Ed25519 key in SoftHSM2 and a P-256 key in a TPM', async () => {
    const devices = [
      { deviceId: 'press-file', store: 'file' as const },
      { deviceId: 'press-hsm', store: 'hsm' as const },
      { deviceId: 'press-tpm', store: 'tpm' as const },
    ];
    const { nodes, credentials } = flow(devices);
    await helper.load([catchNode, ...m2mNodes], nodes, credentials);
    for (const { deviceId, store } of devices) {
      const answer = await provision(deviceId);
      assert.deepEqual([answer.status, answer.keyStorage], ['active', store === 'hsm' ? 'pkcs11' : store], deviceId);
    }
    const out = collect(['valid', 'invalid', 'caught']);
    for (const { deviceId } of devices)
      for (const reading of [1, 2]) helper.getNode(`timer-${deviceId}`).receive({ payload: { deviceId, reading } });
    // Each timer holds its messages until its first token (a random wait of up to 5 s, then the attestation).
    await until(() => out.valid.length + out.invalid.length >= 6, 30_000, 'six checked messages');
    assert.deepEqual(
      out.invalid.map(msg => msg.m2m.reason),
      [],
    );
    assert.deepEqual(
      out.valid.map(msg => `${msg.m2m.deviceId}:${msg.payload.reading}`).sort(),
      devices.flatMap(({ deviceId }) => [`${deviceId}:1`, `${deviceId}:2`]).sort(),
      'every message from the device it claims, its proof checked',
    );
    const seen = await Promise.all(devices.map(({ deviceId }) => registered(deviceId)));
    assert.deepEqual(
      seen.map(device => [device.jwk.kty, device.jwk.crv, device.metadata.keyStorage]),
      [
        ['OKP', 'Ed25519', 'file'],
        ['OKP', 'Ed25519', 'pkcs11'],
        ['EC', 'P-256', 'tpm'],
      ],
    );
    assert.deepEqual(out.caught, []);
  });

  it('moves a registered file-key device into the token without enrolling again, and drops the file key', async () => {
    const deviceId = 'press-move';
    let { nodes, credentials } = flow([{ deviceId, store: 'file' }]);
    await helper.load([catchNode, ...m2mNodes], nodes, credentials);
    assert.equal((await provision(deviceId)).keyStorage, 'file');
    const before = await registered(deviceId);
    assert.ok(fs.existsSync(keystoreFile(userDir, deviceId)));
    await helper.unload();

    ({ nodes, credentials } = flow([{ deviceId, store: 'hsm-p256' }]));
    await helper.load([catchNode, ...m2mNodes], nodes, credentials);
    const moved = await provision(deviceId);
    assert.deepEqual(
      [moved.status, moved.keyStorage, moved.keyChanged, moved.created],
      ['active', 'pkcs11', true, false],
    );
    const after = await registered(deviceId);
    assert.deepEqual([before.jwk.kty, after.jwk.kty, after.metadata.keyStorage], ['OKP', 'EC', 'pkcs11']);
    assert.equal(after.createdAt, before.createdAt, 'the same registration, not a new one');
    assert.ok(
      !fs.existsSync(keystoreFile(userDir, deviceId)),
      'the file key is gone once the verifier has the new one',
    );
    const history = (await (await fetch(`${verifier.url}/v1/devices/${deviceId}/history`, admin)).json()) as any;
    assert.equal(history.audit[0].action, 'key_changed');

    const out = collect(['valid', 'invalid']);
    helper.getNode(`timer-${deviceId}`).receive({ payload: 'after the move' });
    await until(() => out.valid.length + out.invalid.length === 1, 30_000, 'the stamped message');
    assert.deepEqual(
      out.valid.map(msg => [msg.m2m.deviceId, msg.payload]),
      [[deviceId, 'after the move']],
    );
    // Provisioning again is the plain idempotent registration now.
    assert.equal((await provision(deviceId)).keyChanged, undefined);
  });

  it('hands a file-key device over to its TPM key from the re-auth timer alone, with no m2m-provision run', async () => {
    const deviceId = 'press-timer-move';
    let { nodes, credentials } = flow([{ deviceId, store: 'file' }]);
    await helper.load([catchNode, ...m2mNodes], nodes, credentials);
    await provision(deviceId);
    await helper.unload();

    ({ nodes, credentials } = flow([{ deviceId, store: 'tpm' }]));
    await helper.load([catchNode, ...m2mNodes], nodes, credentials);
    const out = collect(['valid', 'invalid', 'caught']);
    helper.getNode(`timer-${deviceId}`).receive({ payload: 'first reading' });
    await until(() => out.valid.length + out.invalid.length === 1, 30_000, 'the stamped message');
    assert.deepEqual(
      out.valid.map(msg => [msg.m2m.deviceId, msg.payload]),
      [[deviceId, 'first reading']],
    );
    const device = await registered(deviceId);
    assert.deepEqual([device.jwk.kty, device.metadata.keyStorage], ['EC', 'tpm']);
    assert.ok(!fs.existsSync(keystoreFile(userDir, deviceId)));
    assert.deepEqual(out.caught, []);
  });

  it('puts a wrong module, token or PIN on the status and on Catch with its code, and the PIN nowhere', async () => {
    const wrongPin = `${TEST_PIN}-typo`;
    const cases = [
      { deviceId: 'press-module', store: 'hsm' as const, config: { pkcs11Module: '/opt/none/libpkcs11.so' } },
      { deviceId: 'press-token', store: 'hsm' as const, config: { pkcs11Token: 'no-such-token' } },
      { deviceId: 'press-pin', store: 'tpm' as const, pin: wrongPin },
    ];
    const { nodes, credentials } = flow(cases);
    await helper.load([catchNode, ...m2mNodes], nodes, credentials);
    const out = collect(['caught', 'provisioned', 'valid', 'invalid']);
    for (const { deviceId } of cases) helper.getNode(`provision-${deviceId}`).receive({ payload: 'go' });
    await until(() => out.caught.length === 3, 20_000, 'three failures on Catch');
    assert.deepEqual(out.caught.map(msg => [caughtCode(msg), msg.error.source.id]).sort(), [
      ['pkcs11_module', 'provision-press-module'],
      ['pkcs11_pin_incorrect', 'provision-press-pin'],
      ['pkcs11_token_not_found', 'provision-press-token'],
    ]);
    for (const { deviceId } of cases) {
      const shown = (helper.getNode(`provision-${deviceId}`).status as unknown as { lastCall: { args: any[] } })
        .lastCall.args[0];
      // The test helper loads no message catalogs: the text is the catalog key (it shows the code).
      assert.deepEqual([shown.fill, shown.text], ['red', 'm2m-provision.status.failed'], deviceId);
    }
    // The timers try too, on their own: they keep running and hold what they cannot stamp.
    for (const { deviceId } of cases) helper.getNode(`timer-${deviceId}`).receive({ payload: 'held' });
    await new Promise(resolve => setTimeout(resolve, 6000));
    assert.deepEqual([out.valid.length, out.provisioned.length], [0, 0]);

    const flows = (helper as unknown as { _redNodes: { getFlows(): { flows: unknown[] } } })._redNodes.getFlows();
    const statuses = nodes
      .filter(node => node.z)
      .flatMap(node => (helper.getNode(node.id).status as unknown as { args: unknown[][] }).args);
    const haystacks = {
      flows: JSON.stringify(flows),
      logs: JSON.stringify(helper.log().args),
      statuses: JSON.stringify(statuses),
      msgs: JSON.stringify(out),
    };
    for (const [where, text] of Object.entries(haystacks)) {
      assert.ok(!text.includes(TEST_PIN), `the PIN found in ${where}`);
    }
  });
});
