/**
 * `npm run bench`: every benchmark of the package in one run, so figures and ratios are measured
 * side by side on the same machine state. Each module prints its own table; `npm run bench --
 * crypto` runs only the named ones.
 */
const suites: Record<string, () => Promise<{ run(): Promise<void> }>> = {
  crypto: () => import('./crypto.js'),
  verifier: () => import('./verifier.js'),
  tinyml: () => import('./tinyml.js'),
};

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const names = wanted.length ? wanted : Object.keys(suites);
  for (const name of names) {
    const load = suites[name];
    if (!load) throw new Error(`unknown benchmark ${name}; known: ${Object.keys(suites).join(', ')}`);
    console.log(`\n## ${name}`);
    await (await load()).run();
  }
}

main().then(() => process.exit(0), err => {
  console.error(err);
  process.exit(1);
});
