#!/usr/bin/env node
/**
 * `npm start`: Node-RED on 127.0.0.1:1880 (PORT to change it) with this package loaded and the
 * quick-start flow deployed, in a user dir of its own (.m2m-quickstart/, delete it to start over).
 */
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
const userDir = path.join(root, '.m2m-quickstart');
const port = Number(process.env.PORT) || 1880;
const flowFile = path.join(userDir, 'flows.json');

function writeOnce(file: string, content: () => string, mode = 0o644): void {
  if (!fs.existsSync(file)) fs.writeFileSync(file, content(), { mode });
}

fs.mkdirSync(path.join(userDir, 'node_modules'), { recursive: true });

// Node-RED loads packages from <userDir>/node_modules: link this one in, as `npm link` would.
const link = path.join(userDir, 'node_modules', 'node-red-contrib-m2m-identity');
if (!fs.existsSync(link)) fs.symlinkSync(root, link, 'dir');
writeOnce(path.join(userDir, 'package.json'), () => JSON.stringify({ name: 'm2m-quickstart', private: true }, null, 2));

// A credential secret of its own, so flows_cred.json and the keystore are encrypted from the first start.
const secretFile = path.join(userDir, '.credential-secret');
writeOnce(secretFile, () => crypto.randomBytes(32).toString('base64url'), 0o600);
writeOnce(path.join(userDir, 'settings.js'), () => `// Written by npm start (bin/quickstart.ts); delete .m2m-quickstart/ to start over.
const fs = require('fs');
const path = require('path');
module.exports = {
  uiHost: '127.0.0.1',
  uiPort: Number(process.env.PORT) || 1880,
  flowFile: 'flows.json',
  credentialSecret: fs.readFileSync(path.join(__dirname, '.credential-secret'), 'utf8').trim(),
  logging: { console: { level: 'info', metrics: false, audit: false } },
};
`);
writeOnce(flowFile, () => fs.readFileSync(path.join(root, 'examples', 'm2m-attest', 'quick-start.json'), 'utf8'));

const redJs = require.resolve('node-red/red.js', { paths: [root] });
console.log(`m2m quick start: Node-RED with node-red-contrib-m2m-identity, user dir ${path.relative(process.cwd(), userDir) || userDir}`);
console.log(`m2m quick start: open http://127.0.0.1:${port}/ and watch the debug sidebar (Ctrl-C stops)`);
const child = spawn(process.execPath, [redJs, '--userDir', userDir, '--settings', path.join(userDir, 'settings.js')], {
  stdio: 'inherit',
  env: { ...process.env, PORT: String(port) },
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal));
child.on('exit', code => process.exit(code ?? 0));
