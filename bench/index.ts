/**
 * `npm run bench`: every benchmark of the package in one run, so figures and ratios are measured
 * side by side on the same machine state. Each module in bench/ exports `run()` and prints its
 * own table; `npm run bench -- crypto` runs only the named ones.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

async function main(): Promise<void> {
  const available = fs
    .readdirSync(__dirname)
    .filter(file => file.endsWith('.js') && file !== 'index.js')
    .map(file => path.basename(file, '.js'))
    .sort();
  const wanted = process.argv.slice(2);
  for (const name of wanted.length ? wanted : available) {
    if (!available.includes(name)) throw new Error(`unknown benchmark ${name}; known: ${available.join(', ')}`);
    console.log(`\n## ${name}`);
    const suite = require(path.join(__dirname, name)) as { run(): Promise<void> };
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
