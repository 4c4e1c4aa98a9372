#!/usr/bin/env node
'use strict';
// `npm run validate`: packs the package as npm would publish it, unpacks it, and runs the Flow
// Library scorecard checks of node-red-dev on the unpacked copy. Only the checks against the
// Flow Library catalogue (P08 similar names, N01 unique node names) cannot run here: the
// catalogue is not reachable, so they are reported as not checked rather than passed.
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const CATALOGUE = 'catalogue.nodered.org';
// Deviations we keep on purpose, each with its reason; printed as ACCEPTED, never hidden.
const ACCEPTED = {
  D03: 'better-sqlite3 13 requires Node >= 22; 12.x is the newest that installs on the Node 20 gateways node-red 4.1 supports',
};
const OFFLINE_CHECKS = {
  P08: 'similar package names (Flow Library catalogue)',
  N01: 'unique node names (Flow Library catalogue)',
};

// node-red-dev asks the catalogue with axios; answer those calls with an empty catalogue so the
// other checks run, and mark the two checks as not checked.
function stubCatalogue() {
  const devRoot = path.dirname(require.resolve('node-red-dev/package.json'));
  const axiosPath = require.resolve('axios', { paths: [path.join(devRoot, 'src', 'libs')] });
  const axios = require(axiosPath);
  const get = axios.get.bind(axios);
  axios.get = (url, ...rest) =>
    String(url).includes(CATALOGUE) ? Promise.resolve({ data: { modules: [] } }) : get(url, ...rest);
  return devRoot;
}

/** Runs the scorecard on an unpacked package folder; resolves with {checks, parseFailures}. */
async function scorecard(dir) {
  const devRoot = stubCatalogue();
  const lib = name => require(path.join(devRoot, 'src', 'libs', name));
  const messages = [];
  const cli = {
    log: m => messages.push(['log', m]),
    warn: m => messages.push(['warn', m]),
    error: m => {
      throw m instanceof Error ? m : new Error(String(m));
    },
  };
  const parseFailures = [];
  const log = console.log;
  console.log = (...args) => {
    if (String(args[0]).startsWith('Unable to parse')) parseFailures.push(args.slice(1).join(' '));
    else log(...args);
  };
  const card = {};
  try {
    await lib('checkpackage')(dir, cli, card, false);
    await lib('checknodes')(dir, cli, card, false);
    await new Promise(resolve => setImmediate(resolve)); // checknodes finishes N02 a tick late
    await lib('checkdeps')(dir, cli, card, false);
  } finally {
    console.log = log;
  }
  const checks = Object.entries(card)
    .filter(([id]) => /^[A-Z]\d\d$/.test(id))
    .map(([id, result]) =>
      OFFLINE_CHECKS[id]
        ? { id, status: 'not checked offline', detail: OFFLINE_CHECKS[id] }
        : {
            id,
            status: result.test ? 'pass' : ACCEPTED[id] ? 'accepted' : 'fail',
            detail:
              result.test || !ACCEPTED[id] ? JSON.stringify(result) : `${JSON.stringify(result)}: ${ACCEPTED[id]}`,
          },
    );
  checks.push({
    id: 'N00',
    status: parseFailures.length ? 'fail' : 'pass',
    detail: parseFailures.length ? `Unable to parse ${parseFailures.join(', ')}` : 'every registerType parsed',
  });
  return { checks, messages, parseFailures };
}

/** The built package (dist/ as it is: `prepare` would rebuild it under running tests) packed and unpacked. */
function packAndUnpack() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-pack-'));
  const output = execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dir], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [{ filename }] = JSON.parse(output);
  execFileSync('tar', ['xzf', path.join(dir, filename), '-C', dir]);
  return { dir, packageDir: path.join(dir, 'package') };
}

async function main() {
  const { dir, packageDir } = packAndUnpack();
  try {
    // checkdeps' npm-check needs the dependencies installed beside the package.
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(packageDir, 'node_modules'), 'dir');
    const { checks } = await scorecard(packageDir);
    for (const check of checks) console.log(`${check.status.toUpperCase().padEnd(19)} ${check.id}  ${check.detail}`);
    const failed = checks.filter(check => check.status === 'fail');
    console.log(failed.length ? `scorecard: ${failed.length} check(s) failed` : 'scorecard: no failure');
    process.exitCode = failed.length ? 1 : 0;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { scorecard, packAndUnpack };
if (require.main === module)
  main().then(
    () => process.exit(process.exitCode),
    err => {
      console.error(err);
      process.exit(1);
    },
  );
