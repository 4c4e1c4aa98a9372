/**
 * A Node-RED user dir with this package linked in, as `npm link` would, and a credential secret
 * of its own: what the quick start and the editor test run Node-RED in.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const packageRoot = path.resolve(__dirname, '..', '..');
export const PACKAGE_NAME: string = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')).name;

function writeOnce(file: string, content: () => string, mode = 0o644): void {
  if (!fs.existsSync(file)) fs.writeFileSync(file, content(), { mode });
}

/** Creates what is missing in `userDir`; an existing flow or secret is kept. */
export function prepareUserDir(userDir: string, flows?: () => string): string {
  const link = path.join(userDir, 'node_modules', ...PACKAGE_NAME.split('/'));
  fs.mkdirSync(path.dirname(link), { recursive: true });
  // The link of the package's unscoped name, from before: two links would load every node twice.
  const unscoped = path.join(userDir, 'node_modules', 'node-red-contrib-m2m-identity');
  if (fs.lstatSync(unscoped, { throwIfNoEntry: false })?.isSymbolicLink()) fs.rmSync(unscoped);
  if (!fs.existsSync(link)) fs.symlinkSync(packageRoot, link, 'dir');
  writeOnce(path.join(userDir, 'package.json'), () =>
    JSON.stringify({ name: 'm2m-node-red-home', private: true }, null, 2),
  );
  // flows_cred.json and the keystores are encrypted from the first start.
  writeOnce(path.join(userDir, '.credential-secret'), () => crypto.randomBytes(32).toString('base64url'), 0o600);
  writeOnce(
    path.join(userDir, 'settings.js'),
    () => `// Written by ${PACKAGE_NAME} (tools/node-red-home.ts); delete this folder to start over.
const fs = require('fs');
const path = require('path');
module.exports = {
  uiHost: '127.0.0.1',
  uiPort: Number(process.env.PORT) || 1880,
  flowFile: 'flows.json',
  credentialSecret: fs.readFileSync(path.join(__dirname, '.credential-secret'), 'utf8').trim(),
  logging: { console: { level: 'info', metrics: false, audit: false } },
  // The "what's new" tour and the update-check consent dialog cover the editor on a first visit;
  // this user dir is about our nodes, and the update check would phone home.
  editorTheme: { tours: false },
  telemetry: { enabled: false },
};
`,
  );
  if (flows) writeOnce(path.join(userDir, 'flows.json'), flows);
  return path.join(userDir, 'settings.js');
}

/**
 * The red.js to start: that of the Node-RED M2M_NODE_RED_PATH names (its lib/red.js, as the test
 * runs of other Node-RED versions set it), else this package's own.
 */
export function defaultRedJs(): string {
  const other = process.env.M2M_NODE_RED_PATH;
  return other
    ? path.join(path.dirname(other), '..', 'red.js')
    : require.resolve('node-red/red.js', { paths: [packageRoot] });
}

/** Node-RED from `userDir`, on `port`; `redJs` picks another Node-RED than the one this package has. */
export function startNodeRed(
  userDir: string,
  port: number,
  stdio: 'inherit' | 'pipe' = 'inherit',
  redJs = defaultRedJs(),
): ChildProcess {
  return spawn(process.execPath, [redJs, '--userDir', userDir, '--settings', path.join(userDir, 'settings.js')], {
    stdio: stdio === 'inherit' ? 'inherit' : ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PORT: String(port) },
  });
}
