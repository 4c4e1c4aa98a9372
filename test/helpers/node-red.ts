/**
 * Node tests run against the node-red in node_modules, or the one M2M_NODE_RED_PATH names (the
 * compatibility run installs node-red 3.1 elsewhere and points this at it).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export function nodeRedPath(): string {
  return process.env.M2M_NODE_RED_PATH || require.resolve('node-red');
}

/** node-red-node-test-helper, from beside the node-red under test when that one has it. */
export function loadHelper(): typeof import('node-red-node-test-helper') {
  const helper = require(
    process.env.M2M_NODE_RED_PATH
      ? require.resolve('node-red-node-test-helper', { paths: [path.dirname(nodeRedPath())] })
      : 'node-red-node-test-helper',
  );
  helper.init(nodeRedPath());
  return helper;
}

/** A fresh Node-RED user dir: keystores and databases the nodes write land here. */
export function tempUserDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-nr-'));
}
