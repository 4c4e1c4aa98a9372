import * as assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { SqliteStore, Verifier, createRequestListener } from '../../lib/verifier';
import { attestation, makeDevice, registration } from '../fixtures/device';
import { VERIFIER_BIN as BIN, startCli } from '../helpers/verifier-cli';

function exitCode(child: ChildProcess): Promise<number | null> {
  return new Promise(resolve => child.once('exit', code => resolve(code)));
}

describe('verifier: standalone command and embedding', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-cli-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('prints `listening on`, serves the API and stops with exit 0 on SIGTERM', async () => {
    const { child, url } = await startCli(['--port', '0', '--store', `sqlite:${path.join(dir, 'v.db')}`], {
      M2M_ADMIN_KEY: 'cli-admin-key-for-tests',
      M2M_ENROLLMENT_TOKEN: 'cli-enrollment-token-tests',
    });
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await fetch(`${url}/v1/health`).then(r => r.json());
    assert.deepEqual(health, { status: 'ok', store: 'ok' });
    const exited = exitCode(child);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.ok(fs.existsSync(path.join(dir, 'v.db')));
  });

  it('generates secrets it was not given and says so on stderr', async () => {
    const { child, stderr } = await startCli(['--port', '0', '--store', `sqlite:${path.join(dir, 'v.db')}`], {
      M2M_ADMIN_KEY: '',
      M2M_ENROLLMENT_TOKEN: '',
    });
    const exited = exitCode(child);
    child.kill('SIGTERM');
    await exited;
    assert.match(stderr(), /M2M_ENROLLMENT_TOKEN not set; generated one/);
    assert.match(stderr(), /M2M_ADMIN_KEY not set; generated one/);
  });

  it('applies a fleet workflow given with --workflow', async () => {
    const workflow = JSON.stringify([{ step: 'signature' }, { step: 'tinyml', minScore: 0.6, required: true }]);
    const { child, url } = await startCli(
      ['--port', '0', '--store', `sqlite:${path.join(dir, 'v.db')}`, '--workflow', workflow],
      { M2M_ADMIN_KEY: 'cli-admin-key-for-tests', M2M_ENROLLMENT_TOKEN: 'cli-enrollment-token-tests' },
    );
    try {
      const device = makeDevice();
      const post = (pathname: string, body: unknown, headers: Record<string, string> = {}) =>
        fetch(url + pathname, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: JSON.stringify(body),
        }).then(r => r.json() as Promise<any>);
      await post(
        '/v1/devices',
        { registration: registration(device) },
        { authorization: 'Bearer cli-enrollment-token-tests' },
      );
      const { nonce } = await post('/v1/challenges', { deviceId: device.deviceId });
      const answer = await post('/v1/attestations', { attestation: attestation(device, url, nonce) });
      assert.deepEqual([answer.decision, answer.reasons], ['declined', ['tinyml_missing']]);
    } finally {
      const exited = exitCode(child);
      child.kill('SIGTERM');
      await exited;
    }
  });

  it('refuses a malformed --workflow with exit 2', async () => {
    const child = spawn(process.execPath, [BIN, '--port', '0', '--workflow', '[{"step":"guess"}]'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', chunk => {
      stderr += chunk;
    });
    assert.equal(await exitCode(child), 2);
    assert.match(stderr, /--workflow: workflow\[0\]\.step/);
  });

  it('issues certificates with --certificates, serving its CA, and refuses a bad lifetime or broker setting with exit 2', async () => {
    const store = `sqlite:${path.join(dir, 'v.db')}`;
    const secrets = { M2M_ADMIN_KEY: 'cli-admin-key-for-tests', M2M_ENROLLMENT_TOKEN: 'cli-enrollment-token-tests' };
    const { child, url } = await startCli(['--port', '0', '--store', store, '--certificates'], secrets);
    const ca = await fetch(`${url}/v1/ca`);
    assert.equal(ca.status, 200);
    assert.match(await ca.text(), /^-----BEGIN CERTIFICATE-----/);
    const exited = exitCode(child);
    child.kill('SIGTERM');
    await exited;
    const refused = async (args: string[], env: Record<string, string>, reason: RegExp) => {
      const bad = spawn(process.execPath, [BIN, '--port', '0', '--store', store, ...args], {
        env: { ...process.env, ...secrets, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      bad.stderr.on('data', chunk => {
        stderr += chunk;
      });
      assert.equal(await exitCode(bad), 2, stderr);
      assert.match(stderr, reason);
    };
    await refused(['--certificates', '--certificate-lifetime', '3d'], {}, /24 h/);
    await refused(['--ca-key', 'ca.key'], {}, /--ca-key and --ca-cert go together/);
    await refused([], { M2M_MOSQUITTO: '{"url":"mqtt://admin:pw@127.0.0.1:1883"}' }, /M2M_MOSQUITTO\[0\]/);
  });

  it('exits 2 with the reason when PostgreSQL is unreachable, the URL from M2M_STORE, its password masked', async () => {
    const child = spawn(process.execPath, [BIN, '--port', '0', '--workers', '1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, M2M_STORE: 'postgres://plant:s3cret@127.0.0.1:1/test?connect_timeout_ms=2000' },
    });
    let stderr = '';
    child.stderr.on('data', chunk => {
      stderr += chunk;
    });
    assert.equal(await exitCode(child), 2);
    assert.match(stderr, /cannot open store postgres:\/\/plant:\*\*\*@127\.0\.0\.1:1\/test.*ECONNREFUSED/);
    assert.doesNotMatch(stderr, /s3cret/);
  });

  it('serves the same API mounted in express behind a JSON body parser', async function () {
    let express: typeof import('express');
    try {
      express = require('express');
    } catch {
      this.skip(); // express comes with node-red; without it this embedding cannot be shown
    }
    const verifier = await Verifier.create({
      store: new SqliteStore(':memory:'),
      publicUrl: 'http://127.0.0.1/m2m',
      enrollmentToken: 'cli-enrollment-token-tests',
    });
    const app = express();
    app.use(express.json());
    app.use('/m2m', createRequestListener(verifier));
    const server = http.createServer(app);
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const answer = await fetch(`http://127.0.0.1:${port}/m2m/v1/devices`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer cli-enrollment-token-tests' },
        body: JSON.stringify({ registration: registration(makeDevice('press-9')) }),
      });
      assert.equal(answer.status, 201);
      assert.deepEqual(await answer.json(), { deviceId: 'press-9', status: 'active' });
    } finally {
      server.close();
      await verifier.close();
    }
  });
});
