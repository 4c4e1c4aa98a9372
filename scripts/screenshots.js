#!/usr/bin/env node
// `npm run screenshots`: the editor tests' latest screenshots (screenshots/, ignored by git) into
// docs/ for the README, on purpose rather than as a side effect of every test run.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const from = path.join(root, 'screenshots');
const shots = fs.existsSync(from) ? fs.readdirSync(from).filter(file => file.endsWith('.png')) : [];
if (!shots.length) {
  console.error('screenshots: none yet; run `npm run test:editor` first');
  process.exit(1);
}
for (const file of shots) fs.copyFileSync(path.join(from, file), path.join(root, 'docs', file));
console.log(`screenshots: ${shots.join(', ')} copied to docs/`);
