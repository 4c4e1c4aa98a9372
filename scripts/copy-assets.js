#!/usr/bin/env node
// Node-RED finds a node's (or plugin's) editor file, locales and icons beside the built .js, so
// tsc's output needs the non-TypeScript files of nodes/ and plugins/ copied next to it.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const copied = [];

function copyTree(from, to) {
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) {
      copyTree(source, target);
    } else if (!entry.name.endsWith('.ts')) {
      fs.mkdirSync(to, { recursive: true });
      fs.copyFileSync(source, target);
      copied.push(path.relative(root, target));
    }
  }
}

for (const folder of ['nodes', 'plugins']) copyTree(path.join(root, folder), path.join(root, 'dist', folder));
console.log(`copy-assets: ${copied.length} files into dist/nodes and dist/plugins`);
