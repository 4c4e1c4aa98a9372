/**
 * docs/deploy.md's example, run as written: docs/deploy/three-verifiers.sh starts three verifiers
 * on one PostgreSQL behind HAProxy with docs/deploy/haproxy.cfg; devices use the balancer's URL.
 */
import * as assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as path from 'node:path';
import { attestation, makeDevice, registration } from '../fixtures/device';
import { freePort } from '../helpers/ports';
import { skipWith } from '../helpers/services';
import { POSTGRES, type StoreSpec, describeBackend } from '../helpers/stores';

const SCRIPT = path.join(__dirname, '..', '..', '..', 'docs', 'deploy', 'three-verifiers.sh');
const ADMIN_KEY = 'deploy-admin-key';
const ENROLLMENT_TOKEN = 'deploy-enrollment-token';

function haproxyMissing(): boolean {
  try {
    execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
    return false;
  } catch {
    return true;
  }
}

describeBackend(POSTGRES, 'docs/deploy.md: three verifiers behind HAProxy', () => {
  let db: StoreSpec;
  let example: ChildProcess | undefined;
  let output = '';

  before(function () {
    if (haproxyMissing())
      skipWith(this, 'deploy.md example: haproxy is not installed (.ci/run installs it with apt-get)');
  });

  afterEach(async () => {
    if (example && example.exitCode === null) {
      const exited = new Promise(resolve => example!.once('exit', resolve));
      example.kill('SIGTERM');
      await exited;
    }
    await db?.drop();
  });

  it('serves one fleet through the balancer, spreads the load, and keeps serving when a verifier dies', async function () {
    this.timeout(60_000);
    db = await POSTGRES.fresh();
    const ports = {
      LB_PORT: await freePort(),
      V1_PORT: await freePort(),
      V2_PORT: await freePort(),
      V3_PORT: await freePort(),
    };
    example = spawn('bash', [SCRIPT], {
      env: {
        ...process.env,
        ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])),
        M2M_STORE: db.spec,
        M2M_ADMIN_KEY: ADMIN_KEY,
        M2M_ENROLLMENT_TOKEN: ENROLLMENT_TOKEN,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    example.stdout!.on('data', chunk => {
      output += chunk;
    });
    example.stderr!.on('data', chunk => {
      output += chunk;
    });
    const lb = `http://127.0.0.1:${ports.LB_PORT}`;
    const backends = [ports.V1_PORT, ports.V2_PORT, ports.V3_PORT].map(port => `http://127.0.0.1:${port}`);
    const call = async (base: string, pathname: string, body?: unknown, headers: Record<string, string> = {}) => {
      const response = await fetch(base + pathname, {
        method: body === undefined ? 'GET' : 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: response.status, text: await response.text() };
    };

    // Ready when HAProxy has seen all three pass their /readyz checks. Three verifiers starting
    // on one database, on two busy cores, once took over 20 s.
    const deadline = Date.now() + 45_000;
    for (;;) {
      const states = await Promise.all(
        backends.map(url =>
          call(url, '/readyz').then(
            r => `${r.status} ${r.text.slice(0, 200)}`,
            err => `no answer: ${(err as Error).message}`,
          ),
        ),
      );
      if (states.every(state => state.startsWith('200 '))) break;
      if (Date.now() > deadline)
        throw new Error(`the example did not start; /readyz: ${states.join(' | ')}\n${output}`);
      await new Promise(resolve => setTimeout(resolve, 200));
    }
    await new Promise(resolve => setTimeout(resolve, 2500));

    // A gateway attests every few minutes; ten of them, a few times each, stay within the
    // per-device challenge limit.
    const devices = Array.from({ length: 10 }, () => makeDevice());
    for (const device of devices) {
      const enrolled = await call(
        lb,
        '/v1/devices',
        { registration: registration(device) },
        {
          authorization: `Bearer ${ENROLLMENT_TOKEN}`,
        },
      );
      assert.equal(enrolled.status, 201, enrolled.text);
    }
    let turn = 0;
    const attestThroughBalancer = async () => {
      const device = devices[turn++ % devices.length];
      const challenge = await call(lb, '/v1/challenges', { deviceId: device.deviceId });
      assert.equal(challenge.status, 201, challenge.text);
      const signed = attestation(device, lb, JSON.parse(challenge.text).nonce);
      return JSON.parse((await call(lb, '/v1/attestations', { attestation: signed })).text).decision;
    };
    for (let i = 0; i < 30; i++) assert.equal(await attestThroughBalancer(), 'approved');

    const approvedOn = await Promise.all(
      backends.map(async url => {
        const text = (await call(url, '/metrics', undefined, { authorization: `Bearer ${ADMIN_KEY}` })).text;
        return Number(/^m2m_attestations_total\{decision="approved"\} (\d+)$/m.exec(text)?.[1] ?? 0);
      }),
    );
    assert.equal(
      approvedOn.reduce((a, b) => a + b, 0),
      30,
    );
    assert.ok(
      approvedOn.every(n => n > 0),
      `every verifier took a share: ${approvedOn}`,
    );

    execFileSync('pkill', ['-KILL', '-f', '--', `--port ${ports.V2_PORT} `]);
    for (let i = 0; i < 15; i++) assert.equal(await attestThroughBalancer(), 'approved', `after the kill, #${i}`);
  });
});
