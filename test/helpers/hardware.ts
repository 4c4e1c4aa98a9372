/**
 * Real key-holding hardware for the PKCS#11 suites, started by the tests themselves: a SoftHSM2
 * token initialised in a temporary folder, and a software TPM (swtpm behind tpm2-abrmd on a
 * private D-Bus) with a tpm2-pkcs11 token. `.ci/run` installs both from Debian packages; where one
 * is missing the suites needing it say so (skipWith) and the rest still run.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { skipWith } from './services';

export interface TestToken {
  module: string;
  token: string;
  pin: string;
}

export type Hardware<T> = { ready: T; skipReason?: undefined } | { ready?: undefined; skipReason: string };

/**
 * The token, or the suite skipped saying why; under CI, where .ci/run installs both back-ends, a
 * missing one fails the suite instead of passing it by.
 */
export function requireHardware<T>(context: Mocha.Context, hardware: Hardware<T>): T {
  if (hardware.ready) return hardware.ready;
  if (process.env.CI) throw new Error(`${hardware.skipReason} (.ci/run installs it)`);
  return skipWith(context, hardware.skipReason ?? 'hardware missing');
}

const SOFTHSM_MODULES = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'];
const TPM2_PKCS11_MODULE = '/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so';
export const TEST_PIN = '4711-test-pin';
const SO_PIN = '12345678';

function missingCommand(commands: string[]): string | undefined {
  return commands.find(command => spawnSync('sh', ['-c', `command -v ${command}`]).status !== 0);
}

function pkcs11jsProblem(): string | undefined {
  try {
    require('pkcs11js');
    return undefined;
  } catch (err) {
    return `pkcs11js does not load on Node ${process.version}: ${(err as Error).message.split('\n')[0]}`;
  }
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): string {
  const result = spawnSync(command, args, { env, encoding: 'utf8', timeout: 60_000 });
  if (result.status !== 0)
    throw new Error(`${command} ${args.join(' ')} failed (${result.status}): ${result.stderr || result.stdout}`);
  return result.stdout;
}

let softHsmToken: Hardware<TestToken> | undefined;

/**
 * One SoftHSM2 token for the whole test process: SoftHSM reads SOFTHSM2_CONF when the module is
 * first initialised, so every suite shares this folder.
 */
export function softHsm(): Hardware<TestToken> {
  if (softHsmToken) return softHsmToken;
  const module = SOFTHSM_MODULES.find(file => fs.existsSync(file));
  const problem =
    pkcs11jsProblem() ??
    (module ? undefined : 'SoftHSM2 suites: libsofthsm2.so is not installed (apt-get install softhsm2)') ??
    (missingCommand(['softhsm2-util']) && 'SoftHSM2 suites: softhsm2-util is not installed');
  if (problem || !module) {
    softHsmToken = { skipReason: problem ?? 'SoftHSM2 missing' };
    return softHsmToken;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-softhsm-'));
  fs.mkdirSync(path.join(dir, 'tokens'));
  const conf = path.join(dir, 'softhsm2.conf');
  fs.writeFileSync(
    conf,
    `directories.tokendir = ${path.join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`,
  );
  process.env.SOFTHSM2_CONF = conf;
  run('softhsm2-util', ['--init-token', '--free', '--label', 'm2m-test', '--pin', TEST_PIN, '--so-pin', SO_PIN]);
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  softHsmToken = { ready: { module, token: 'm2m-test', pin: TEST_PIN } };
  return softHsmToken;
}

let softwareTpmStarted: Promise<Hardware<SoftwareTpm>> | undefined;

/**
 * One software TPM for the whole test process, stopped when it exits: tpm2-abrmd is reached over
 * D-Bus, and GLib keeps a process's first session bus connection for good, so a second TPM on a
 * second bus would be out of reach.
 */
export function softwareTpm(): Promise<Hardware<SoftwareTpm>> {
  softwareTpmStarted ??= startSoftwareTpm();
  return softwareTpmStarted;
}

export interface SoftwareTpm extends TestToken {
  /** The TPM's count of wrong authorisations (its dictionary-attack lockout counter). */
  lockoutCounter(): number;
  /** Stops the TPM (the token "removed"); `resume` starts it again on its state. */
  pause(): Promise<void>;
  resume(): Promise<void>;
}

async function freePortPair(): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>(resolve => {
      const server = net.createServer().once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 20_000 + 2 * Math.floor(Math.random() * 10_000);
    if ((await free(port)) && (await free(port + 1))) return port;
  }
  throw new Error('no two free ports in a row for swtpm');
}

async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > ms) throw new Error(`${what} within ${ms} ms`);
    await new Promise(resolve => setTimeout(resolve, 100));
  }
}

function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise(resolve => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/**
 * swtpm on two free ports, a private D-Bus session bus and tpm2-abrmd in front of it (tpm2-pkcs11
 * runs out of object contexts talking to swtpm directly), then a tpm2-pkcs11 store with one token.
 * Sets the tpm2-pkcs11 environment of this process, read when the module initialises.
 */
async function startSoftwareTpm(): Promise<Hardware<SoftwareTpm>> {
  const missing = missingCommand(['swtpm', 'dbus-daemon', 'tpm2-abrmd', 'tpm2_ptool', 'tpm2_getcap']);
  const problem =
    pkcs11jsProblem() ??
    (missing && `TPM suites: ${missing} is not installed`) ??
    (fs.existsSync(TPM2_PKCS11_MODULE) ? undefined : `TPM suites: ${TPM2_PKCS11_MODULE} is not installed`);
  if (problem) return { skipReason: problem };

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-tpm-'));
  for (const sub of ['state', 'store']) fs.mkdirSync(path.join(dir, sub));
  const port = await freePortPair();
  const bus = `unix:path=${path.join(dir, 'dbus.sock')}`;
  const env = {
    ...process.env,
    DBUS_SESSION_BUS_ADDRESS: bus,
    TPM2TOOLS_TCTI: 'tabrmd:bus_type=session',
    TPM2_PKCS11_TCTI: 'tabrmd:bus_type=session',
    TPM2_PKCS11_STORE: path.join(dir, 'store'),
    TPM2_PKCS11_LOG_LEVEL: '0',
    // The TSS logs every failed command on stderr, which the token-removed tests cause on purpose.
    TSS2_LOG: process.env.TSS2_LOG ?? 'all+NONE',
  };
  let swtpm: ChildProcess | undefined;
  let dbus: ChildProcess | undefined;
  let abrmd: ChildProcess | undefined;

  const startTpm = async () => {
    swtpm = spawn(
      'swtpm',
      [
        'socket',
        '--tpm2',
        '--server',
        `type=tcp,port=${port},bindaddr=127.0.0.1`,
        '--ctrl',
        `type=tcp,port=${port + 1},bindaddr=127.0.0.1`,
        '--flags',
        'not-need-init,startup-clear',
        '--tpmstate',
        `dir=${path.join(dir, 'state')}`,
      ],
      { stdio: 'ignore' },
    );
    abrmd = spawn(
      'tpm2-abrmd',
      ['--session', '--allow-root', '--flush-all', `--tcti=swtpm:host=127.0.0.1,port=${port}`],
      {
        env,
        stdio: 'ignore',
      },
    );
    await until(
      () => spawnSync('tpm2_getcap', ['properties-fixed'], { env, timeout: 5000 }).status === 0,
      15_000,
      'the software TPM did not answer',
    );
  };
  const stopTpm = async () => {
    await stopChild(abrmd);
    await stopChild(swtpm);
  };

  try {
    dbus = spawn('dbus-daemon', ['--session', `--address=${bus}`, '--nofork', '--nopidfile'], { stdio: 'ignore' });
    await until(() => fs.existsSync(path.join(dir, 'dbus.sock')), 5000, 'dbus-daemon did not start');
    await startTpm();
    // swtpm locks out after 3 wrong authorisations for 1000 s; the wrong-PIN tests need more.
    run(
      'tpm2_dictionarylockout',
      ['--setup-parameters', '--max-tries=1000', '--recovery-time=1000', '--lockout-recovery-time=1'],
      env,
    );
    run('tpm2_ptool', ['init'], env);
    run('tpm2_ptool', ['addtoken', '--pid=1', '--label=m2m-tpm', `--userpin=${TEST_PIN}`, `--sopin=${SO_PIN}`], env);
  } catch (err) {
    await stopTpm();
    await stopChild(dbus);
    fs.rmSync(dir, { recursive: true, force: true });
    return { skipReason: `TPM suites: the software TPM did not start: ${(err as Error).message}` };
  }
  process.on('exit', () => {
    for (const child of [abrmd, swtpm, dbus]) child?.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });
  for (const name of [
    'DBUS_SESSION_BUS_ADDRESS',
    'TPM2_PKCS11_TCTI',
    'TPM2_PKCS11_STORE',
    'TPM2_PKCS11_LOG_LEVEL',
    'TSS2_LOG',
  ] as const)
    process.env[name] = env[name];
  return {
    ready: {
      module: TPM2_PKCS11_MODULE,
      token: 'm2m-tpm',
      pin: TEST_PIN,
      lockoutCounter: () => {
        const variable = run('tpm2_getcap', ['properties-variable'], env);
        const counter = /TPM2_PT_LOCKOUT_COUNTER:\s*(0x[0-9a-f]+|\d+)/i.exec(variable);
        if (!counter) throw new Error(`no lockout counter in tpm2_getcap's answer: ${variable}`);
        return Number(counter[1]);
      },
      pause: stopTpm,
      resume: startTpm,
    },
  };
}
