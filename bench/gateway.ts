/**
 * What the package costs a gateway, beside Node-RED itself, measured side by side in one run:
 *
 * - footprint: a production install (`npm install --omit=dev`) of the packed package against one
 *   of node-red alone, node_modules bytes each, and the ratio (goal ≤ 1.0x), also without the
 *   compiler output a source build of better-sqlite3 leaves, and the largest packages;
 * - throughput: messages per second through a chain of Node-RED nodes (change → change) with and
 *   without m2m-tinyml-verify in the middle, for a stamped 100 Hz source: all messages at once
 *   (the node micro-batches windows) and one at a time (each message waits for the one before);
 *   goals ≥ 0.8x batched, ≥ 0.5x one at a time.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { packageRoot } from '../bin/node-red-home';
import { WINDOW } from '../lib/tinyml/features';
import { SeededRandom } from '../lib/tinyml/random';
import { drawInstallation, drawUnit, SimulatedSensor } from '../lib/tinyml/simulator';
import { loadHelper, tempUserDir } from '../test/helpers/node-red';
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

/** A production install of `spec` into a fresh folder, handed to `inspect` before it is removed. */
function withInstall<T>(spec: string, allowScripts: Record<string, boolean>, inspect: (nodeModules: string) => T): T {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-install-'));
  try {
    fs.writeFileSync(
      path.join(dir, 'package.json'),
      JSON.stringify({ name: 'm2m-bench', private: true, allowScripts }),
    );
    execFileSync('npm', ['install', '--omit=dev', '--no-audit', '--no-fund', '--loglevel=error', spec], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    return inspect(path.join(dir, 'node_modules'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * What node-gyp leaves beside better-sqlite3's binary when it compiles from source (object files,
 * the static library, dependency lists): an install that finds a prebuilt binary has only
 * build/Release/better_sqlite3.node.
 */
function compilerLeftovers(nodeModules: string): number {
  const build = path.join(nodeModules, 'better-sqlite3', 'build');
  if (!fs.existsSync(build)) return 0;
  const binary = path.join(build, 'Release', 'better_sqlite3.node');
  return directoryBytes(build) - (fs.existsSync(binary) ? fs.statSync(binary).size : 0);
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

export async function footprint(): Promise<void> {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8'));
  const packDir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-pack-'));
  execFileSync('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', packDir], {
    cwd: packageRoot,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const tarball = path.join(packDir, fs.readdirSync(packDir)[0]);
  const nodeRedVersion = JSON.parse(fs.readFileSync(require.resolve('node-red/package.json'), 'utf8')).version;
  const ours = withInstall(tarball, { 'better-sqlite3': true }, nodeModules => ({
    bytes: directoryBytes(nodeModules),
    leftovers: compilerLeftovers(nodeModules),
    packages: packageBytes(nodeModules),
  }));
  const nodeRed = withInstall(`node-red@${nodeRedVersion}`, {}, nodeModules => ({
    bytes: directoryBytes(nodeModules),
  }));
  fs.rmSync(packDir, { recursive: true, force: true });
  const mb = (bytes: number) => bytes / 1e6;
  const prebuilt = ours.bytes - ours.leftovers;
  table([
    { install: `node-red@${nodeRedVersion} alone`, 'node_modules MB': mb(nodeRed.bytes), ratio: '1', goal: '' },
    {
      install: `${pkg.name} (production)`,
      'node_modules MB': mb(ours.bytes),
      ratio: (ours.bytes / nodeRed.bytes).toFixed(3),
      goal: '≤ 1.0',
    },
    {
      install: '  the same with a prebuilt better-sqlite3',
      'node_modules MB': mb(prebuilt),
      ratio: (prebuilt / nodeRed.bytes).toFixed(3),
      goal: '≤ 1.0',
    },
  ]);
  if (ours.leftovers > 0) {
    console.log(
      `(no prebuilt better-sqlite3 could be downloaded here, so it was compiled: ${mb(ours.leftovers).toFixed(0)} MB of compiler output beside its binary)`,
    );
  }
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

type Message = { topic: string; payload: number; timestamp: number };

/** A 100 Hz stamped transmitter's readings, enrolment first. */
function readings(count: number): Message[] {
  const rng = new SeededRandom(4242);
  const installation = drawInstallation(rng, { rateHz: 100 });
  const recording = new SimulatedSensor(installation, drawUnit(rng, installation), 4243).record(1e6, count);
  return Array.from(recording.values, (value, i) => ({
    topic: 'press-1',
    payload: value,
    timestamp: recording.sourceTimes[i],
  }));
}

export async function throughput(): Promise<void> {
  const helper = loadHelper();
  const nodeDir = path.join(__dirname, '..', 'nodes');
  const tinyml = require(path.join(nodeDir, 'm2m-tinyml-verify', 'm2m-tinyml-verify.js'));
  const core = path.dirname(require.resolve('@node-red/nodes/package.json'));
  const change = require(path.join(core, 'core', 'function', '15-change.js'));
  const enrolWindows = 20;
  const stream = readings((enrolWindows + 1) * WINDOW + 20_000);
  const enrolment = stream.slice(0, (enrolWindows + 1) * WINDOW);
  const measured = stream.slice(enrolment.length);
  const passThrough = (id: string, wires: string[][]) => ({
    id,
    type: 'change',
    rules: [{ t: 'set', p: 'hop', pt: 'msg', to: id, tot: 'str' }],
    wires,
  });

  async function chain(withCheck: boolean, mode: 'batched' | 'one at a time'): Promise<number> {
    await new Promise<void>(resolve => helper.startServer(resolve));
    const userDir = tempUserDir();
    helper.settings({ userDir });
    const middle = withCheck
      ? {
          id: 'middle',
          type: 'm2m-tinyml-verify',
          timeProperty: 'timestamp',
          enrolWindows,
          unverified: 'pass',
          enrolOnRequest: true,
          wires: [['last'], ['last']],
        }
      : passThrough('middle', [['last']]);
    await helper.load([change, tinyml], [
      passThrough('first', [['middle']]),
      middle,
      passThrough('last', [['end']]),
      { id: 'end', type: 'helper' },
    ] as never);
    const first = helper.getNode('first');
    const end = helper.getNode('end');
    let arrived = 0;
    let next: (() => void) | undefined;
    end.on('input', () => {
      arrived++;
      next?.();
    });
    const deliver = async (messages: Message[], oneByOne: boolean) => {
      const target = arrived + messages.length;
      if (oneByOne) {
        for (const msg of messages) {
          const landed = new Promise<void>(resolve => {
            next = resolve;
          });
          first.receive({ ...msg, m2m: undefined });
          await landed;
        }
        next = undefined;
      } else {
        for (const msg of messages) first.receive({ ...msg });
        while (arrived < target) await new Promise(resolve => setImmediate(resolve));
      }
    };
    if (withCheck) {
      // Enrol first (the model loads on deploy), so the measured part is verification.
      await deliver([{ ...enrolment[0], m2m: { enrol: true } } as Message, ...enrolment.slice(1)], false);
    }
    const started = process.hrtime.bigint();
    await deliver(measured, mode === 'one at a time');
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    await helper.unload();
    await new Promise<void>(resolve => helper.stopServer(() => resolve()));
    fs.rmSync(userDir, { recursive: true, force: true });
    return measured.length / seconds;
  }

  const rows: Array<Record<string, string | number>> = [];
  for (const mode of ['batched', 'one at a time'] as const) {
    // Two rounds, alternating, the better of each: the first chain in a process also pays the JIT.
    let bare = 0;
    let checked = 0;
    for (let round = 0; round < 2; round++) {
      bare = Math.max(bare, await chain(false, mode));
      checked = Math.max(checked, await chain(true, mode));
    }
    rows.push({
      mode,
      'bare chain msg/s': bare,
      'with m2m-tinyml-verify msg/s': checked,
      ratio: checked / bare,
      goal: mode === 'batched' ? '≥ 0.8' : '≥ 0.5',
    });
  }
  table(rows);
}

export async function run(): Promise<void> {
  await throughput();
  await footprint();
}
