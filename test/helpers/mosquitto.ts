/**
 * A Mosquitto 2 of the test's own, on free ports, never the system broker on 1883: a plain
 * listener for the dynamic-security admin, and a TLS listener that requires a client certificate
 * from the CA the test names (the verifier's) and takes the certificate's CN as the user name. The
 * server certificate comes from a throwaway CA made here.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spkiOf } from '../../lib/crypto/keys';
import { P256PrivateKey } from '../../lib/crypto/p256';
import { createAuthorityCertificate } from '../../lib/x509/authority';
import { nodeCrypto, pem, x509 } from '../../lib/x509/library';
import { signerForX509 } from '../../lib/x509/signing';
import type { Hardware } from './hardware';
import { freePort } from './ports';

const PLUGIN = '/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so';
export const BROKER_ADMIN = { username: 'admin', password: 'broker-admin-password' };

export interface TestBroker {
  adminUrl: string;
  tlsUrl: string;
  tlsPort: number;
  /** The CA of the broker's server certificate (PEM): what clients verify the broker with. */
  serverCa: string;
  crlFile?: string;
  pidFile: string;
  dir: string;
  stop(): Promise<void>;
  start(): Promise<void>;
}

function keyPem(key: P256PrivateKey): string {
  const jwk = { ...key.publicKey.toJwk(), d: Buffer.from(key.exportScalar()).toString('base64url') };
  return crypto.createPrivateKey({ key: jwk, format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** A server certificate for 127.0.0.1 and localhost, from a CA made for it. */
async function serverCertificate(): Promise<{ ca: string; certificate: string; key: string }> {
  const lib = x509();
  const caKey = P256PrivateKey.generate();
  const caDer = await createAuthorityCertificate(caKey, 'CN=test broker CA', Date.now());
  const serverKey = P256PrivateKey.generate();
  const { crypto: signing, keys, signingAlgorithm } = signerForX509(caKey);
  const publicKey = new lib.PublicKey(new Uint8Array(spkiOf(serverKey.publicKey)));
  const certificate = await lib.X509CertificateGenerator.create(
    {
      subject: 'CN=localhost',
      issuer: 'CN=test broker CA',
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      publicKey,
      signingKey: keys.privateKey,
      signingAlgorithm,
      extensions: [
        new lib.ExtendedKeyUsageExtension(['1.3.6.1.5.5.7.3.1']),
        new lib.SubjectAlternativeNameExtension([
          { type: 'dns', value: 'localhost' },
          { type: 'ip', value: '127.0.0.1' },
        ]),
        await lib.SubjectKeyIdentifierExtension.create(publicKey, false, nodeCrypto),
      ],
    },
    signing,
  );
  return { ca: pem('CERTIFICATE', caDer), certificate: certificate.toString('pem'), key: keyPem(serverKey) };
}

export function mosquittoProblem(): string | undefined {
  if (spawnSync('sh', ['-c', 'command -v mosquitto && command -v mosquitto_ctrl']).status !== 0)
    return 'Mosquitto suites: mosquitto and mosquitto_ctrl are not installed (apt-get install mosquitto mosquitto-clients)';
  if (!fs.existsSync(PLUGIN)) return `Mosquitto suites: the dynamic-security plugin ${PLUGIN} is missing`;
  try {
    require('mqtt');
  } catch {
    return 'Mosquitto suites: the mqtt package does not load';
  }
  return undefined;
}

/**
 * Starts a broker trusting `clientCa` (PEM) for device certificates; with `crl`, it also reads a
 * CRL file (which must exist: the verifier writes it before the broker starts).
 */
export async function startMosquitto(clientCa: string, options: { crl?: string } = {}): Promise<Hardware<TestBroker>> {
  const problem = mosquittoProblem();
  if (problem) return { skipReason: problem };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-mosquitto-'));
  const [adminPort, tlsPort] = [await freePort(), await freePort()];
  const server = await serverCertificate();
  const file = (name: string, content: string, mode = 0o644) => {
    fs.writeFileSync(path.join(dir, name), content, { mode });
    return path.join(dir, name);
  };
  const crlFile = options.crl !== undefined ? file('crl.pem', options.crl) : undefined;
  const dynsec = path.join(dir, 'dynamic-security.json');
  const init = spawnSync('mosquitto_ctrl', ['dynsec', 'init', dynsec, BROKER_ADMIN.username, BROKER_ADMIN.password]);
  if (init.status !== 0) return { skipReason: `Mosquitto suites: mosquitto_ctrl dynsec init failed: ${init.stderr}` };
  const config = file(
    'mosquitto.conf',
    [
      'user root',
      'per_listener_settings false',
      'allow_anonymous false',
      'persistence false',
      `log_dest file ${path.join(dir, 'mosquitto.log')}`,
      'connection_messages true',
      // Without it every TLS 1.3 connect waits ~45 ms on Nagle's algorithm.
      'set_tcp_nodelay true',
      `plugin ${PLUGIN}`,
      `plugin_opt_config_file ${dynsec}`,
      `listener ${adminPort} 127.0.0.1`,
      `listener ${tlsPort} 127.0.0.1`,
      `cafile ${file('clients-ca.pem', clientCa)}`,
      `certfile ${file('server.pem', server.certificate)}`,
      `keyfile ${file('server.key', server.key, 0o600)}`,
      'require_certificate true',
      'use_identity_as_username true',
      'use_username_as_clientid true',
      ...(crlFile ? [`crlfile ${crlFile}`] : []),
      '',
    ].join('\n'),
  );
  const pidFile = path.join(dir, 'mosquitto.pid');
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn('mosquitto', ['-c', config], { stdio: 'ignore' });
    fs.writeFileSync(pidFile, String(child.pid));
    const started = Date.now();
    while (!(await answers(adminPort)) || !(await answers(tlsPort))) {
      if (child.exitCode !== null || Date.now() - started > 10_000)
        throw new Error(
          `mosquitto did not start: ${fs.readFileSync(path.join(dir, 'mosquitto.log'), 'utf8').slice(-2000)}`,
        );
      await new Promise(resolve => setTimeout(resolve, 50));
    }
  };
  const stop = async () => {
    const running = child;
    if (!running || running.exitCode !== null) return;
    await new Promise<void>(resolve => {
      running.once('exit', () => resolve());
      running.kill('SIGTERM');
    });
  };
  await start();
  process.on('exit', () => child?.kill('SIGKILL'));
  return {
    ready: {
      adminUrl: `mqtt://127.0.0.1:${adminPort}`,
      tlsUrl: `mqtts://127.0.0.1:${tlsPort}`,
      tlsPort,
      serverCa: server.ca,
      crlFile,
      pidFile,
      dir,
      start,
      stop,
    },
  };
}

function answers(port: number): Promise<boolean> {
  return new Promise(resolve => {
    const socket = require('node:net').connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
