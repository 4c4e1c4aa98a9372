/**
 * `npm run bench`: every benchmark of the package in one run, so figures and ratios are measured
 * side by side on the same machine state. Each module in bench/ exports `run()` and prints its
 * own table; `npm run bench -- crypto` runs only the named ones.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

async function main(): Promise<void> {
  // A benchmark is a module here that exports run(); the others (stats) are its helpers.
  const suites = new Map<string, { run(): Promise<void> }>();
  for (const file of fs.readdirSync(__dirname).sort()) {
    if (!file.endsWith('.js') || file === 'index.js') continue;
    const loaded = require(path.join(__dirname, file));
    if (typeof loaded.run === 'function') suites.set(path.basename(file, '.js'), loaded);
  }
  const wanted = process.argv.slice(2);
  for (const name of wanted.length ? wanted : suites.keys()) {
    const suite = suites.get(name);
    if (!suite) throw new Error(`unknown benchmark ${name}; known: ${[...suites.keys()].join(', ')}`);
    console.log(`\n## ${name}`);
    await suite.run();
  }
}

main().then(
  () => process.exit(0),
  err => {
    console.error(err);
    process.exit(1);
  },
);
