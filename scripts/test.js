#!/usr/bin/env node
'use strict';
// `npm test`: every suite of the package, one after the other, and one closing line with the
// counts of all of them: `N passed, N failed, N skipped`.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const mocha = path.join(root, 'node_modules', 'mocha', 'bin', 'mocha.js');
const reporter = path.join(__dirname, 'count-reporter.js');
const chromium = process.env.M2M_CHROMIUM || '/usr/bin/chromium';
const compatDir = path.join(root, 'node_modules', '.cache', 'm2m-node-red-3.1');

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

function suite(name, specs, env = {}) {
  console.log(`\n=== ${name}`);
  const countsFile = path.join(os.tmpdir(), `m2m-test-counts-${process.pid}-${Date.now()}.json`);
  const status = run(process.execPath, [mocha, '--reporter', reporter, ...specs], {
    ...env,
    M2M_TEST_COUNTS: countsFile,
  });
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

function skip(name, why) {
  console.log(`\n=== ${name}\nskipped: ${why}`);
  totals.skipped += 1;
  skipped.add(`${name}: ${why}`);
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

suite('unit, node, end-to-end and scorecard tests', []);

// Node-RED 3.1 is the oldest version package.json claims; the node tests run against it too.
const nodeRed31 = path.join(compatDir, 'node_modules', 'node-red');
if (!fs.existsSync(path.join(nodeRed31, 'package.json'))) {
  console.log('\n=== installing node-red@3.1 for the compatibility run');
  fs.mkdirSync(compatDir, { recursive: true });
  fs.writeFileSync(path.join(compatDir, 'package.json'), JSON.stringify({ name: 'm2m-compat', private: true }));
  run('npm', [
    'install',
    '--prefix',
    compatDir,
    '--no-audit',
    '--no-fund',
    'node-red@3.1',
    'node-red-node-test-helper@0.3.6',
  ]);
}
if (fs.existsSync(path.join(nodeRed31, 'package.json'))) {
  const version = JSON.parse(fs.readFileSync(path.join(nodeRed31, 'package.json'), 'utf8')).version;
  suite(
    `node tests on node-red ${version}`,
    ['--no-config', '--exit', '--timeout', '20000', 'dist/test/nodes/**/*.test.js', 'dist/test/e2e/**/*.test.js'],
    { M2M_NODE_RED_PATH: require.resolve('node-red', { paths: [compatDir] }) },
  );
} else {
  console.log('node-red@3.1 could not be installed');
  totals.failed += 1;
}

if (fs.existsSync(chromium)) {
  suite('editor in headless Chromium', [
    '--no-config',
    '--exit',
    '--timeout',
    '120000',
    'dist/test/editor/**/*.spec.js',
  ]);
} else if (process.env.CI) {
  console.log(`\n=== editor in headless Chromium\n${chromium} is missing: CI must install Debian's chromium package`);
  totals.failed += 1;
} else {
  skip('editor in headless Chromium', `${chromium} not found (apt-get install chromium, or set M2M_CHROMIUM)`);
}

try {
  for (const reason of fs.readFileSync(skipsFile, 'utf8').split('\n').filter(Boolean)) skipped.add(reason);
  fs.rmSync(skipsFile);
} catch {
  // nothing was skipped
}
if (skipped.size) console.log(`\nskipped, and why:\n${[...skipped].map(reason => `  ${reason}`).join('\n')}`);
console.log(`\n${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
process.exit(totals.failed > 0 ? 1 : 0);
