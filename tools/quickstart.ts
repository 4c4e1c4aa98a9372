#!/usr/bin/env node
/**
 * `npm start`: Node-RED on 127.0.0.1:1880 (PORT to change it) with this package loaded and the
 * quick-start flow deployed, in a user dir of its own (.m2m-quickstart/, delete it to start over).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PACKAGE_NAME, packageRoot, prepareUserDir, startNodeRed } from './node-red-home';

const userDir = path.join(packageRoot, '.m2m-quickstart');
const port = Number(process.env.PORT) || 1880;

prepareUserDir(userDir, () => fs.readFileSync(path.join(packageRoot, 'examples', 'quick-start.json'), 'utf8'));
console.log(
  `m2m quick start: Node-RED with ${PACKAGE_NAME}, user dir ${path.relative(process.cwd(), userDir) || userDir}`,
);
console.log(`m2m quick start: open http://127.0.0.1:${port}/ and watch the debug sidebar (Ctrl-C stops)`);
const child = startNodeRed(userDir, port);
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => child.kill(signal));
child.on('exit', code => process.exit(code ?? 0));
