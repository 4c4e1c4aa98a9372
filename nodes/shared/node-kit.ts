/**
 * The little glue every node of this package shares: the status vocabulary of Node-RED's core
 * nodes, error text from the locale catalog, and where the node may write files.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Node, NodeAPI, NodeStatus } from 'node-red';
import { M2MError } from '../../lib/errors';
import { valueDepthExceeds } from '../../lib/schema';

/**
 * The status vocabulary of Node-RED's core nodes, plus one shape of ours: a red *dot* is a
 * decision against the device (declined, revoked) by a node that works, a red *ring* is a node
 * that does not (configuration, keystore, model), so an operator tells them apart at a glance.
 * green dot = working, yellow ring = waiting, grey ring = idle.
 */
export const status = {
  working: (text: string): NodeStatus => ({ fill: 'green', shape: 'dot', text }),
  waiting: (text: string): NodeStatus => ({ fill: 'yellow', shape: 'ring', text }),
  declined: (text: string): NodeStatus => ({ fill: 'red', shape: 'dot', text }),
  failed: (text: string): NodeStatus => ({ fill: 'red', shape: 'ring', text }),
  idle: (text: string): NodeStatus => ({ fill: 'grey', shape: 'ring', text }),
};

/**
 * A status that follows a count at message rate would flood the editor: the function returned
 * shows `render()` at most twice a second, what a person can read.
 */
export function throttledStatus(node: Node, render: () => NodeStatus): () => void {
  let timer: NodeJS.Timeout | undefined;
  node.on('close', () => clearTimeout(timer));
  return () => {
    timer ??= setTimeout(() => {
      timer = undefined;
      node.status(render());
    }, 500);
  };
}

export function errorCode(err: unknown): string {
  return err instanceof M2MError ? err.code : 'internal';
}

/**
 * A user-facing message for an error: the node's catalog entry `<type>.errors.<code>` when there
 * is one, else the error's own message. RED._ returns the key itself when it has no entry.
 */
export function errorText(RED: NodeAPI, type: string, err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const key = `${type}.errors.${errorCode(err)}`;
  const text = RED._(key, { message });
  return text === key ? message : text;
}

/**
 * The error a node hands to `done()` or `node.error()`: its text localised, its stable `code` an
 * own property, so Node-RED puts it on `msg.error.code` for Catch flows to branch on, and no stack,
 * which would otherwise fill the debug sidebar with the package's file paths.
 */
export function nodeError(RED: NodeAPI, type: string, err: unknown): Error & { code: string } {
  const error = Object.assign(new Error(errorText(RED, type, err)), { code: errorCode(err) });
  Reflect.deleteProperty(error, 'stack');
  return error;
}

/**
 * How deep a message's payload may nest. Node-RED copies a message recursively (for a Catch node,
 * for a second wire) and so does JSON: a few thousand levels overflow the stack, and such a
 * message could not even reach Catch.
 */
export const MAX_PAYLOAD_DEPTH = 1000;

/**
 * For a message whose payload nests past MAX_PAYLOAD_DEPTH: the error for Catch (payload_too_deep),
 * after the payload is replaced by a note, the one change that lets Node-RED copy the message to
 * Catch at all. Undefined for every other message, untouched.
 */
export function tooDeep(RED: NodeAPI, type: string, msg: { payload?: unknown; m2m?: unknown }): Error | undefined {
  if (!valueDepthExceeds(msg.payload, MAX_PAYLOAD_DEPTH)) return undefined;
  msg.payload = `[removed: the payload was nested deeper than ${MAX_PAYLOAD_DEPTH} levels]`;
  return messageError(
    RED,
    type,
    msg,
    new M2MError('payload_too_deep', `the payload is nested deeper than ${MAX_PAYLOAD_DEPTH} levels`, 400),
  );
}

/** An error as it travels on a msg (`msg.m2m.error`): code and text, nothing else. */
export function msgError(RED: NodeAPI, type: string, err: unknown): { code: string; message: string } {
  return { code: errorCode(err), message: errorText(RED, type, err) };
}

/**
 * The error for `done()` or `node.error()` when a message fails, its code also on msg.m2m.error:
 * there a Catch flow finds it on every Node-RED, where msg.error.code comes from Node-RED 4 on.
 */
export function messageError(
  RED: NodeAPI,
  type: string,
  msg: { m2m?: unknown },
  err: unknown,
): Error & { code: string } {
  msg.m2m = { ...m2mOf(msg), error: msgError(RED, type, err) };
  return nodeError(RED, type, err);
}

/** The folder under Node-RED's user dir where this package keeps keys, profiles and databases. */
export function dataDir(RED: NodeAPI, ...parts: string[]): string {
  const userDir = (RED.settings as { userDir?: string }).userDir ?? process.cwd();
  const dir = path.join(userDir, 'm2m-identity', ...parts);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/**
 * Where a node keeps its own state (`<kind>/<node id><suffix>` under the data folder): it
 * survives redeploys and restarts, and goes with the node (removeStateFiles when it is deleted).
 */
export function nodeStateFile(RED: NodeAPI, nodeId: string, kind: string, suffix: string): string {
  return path.join(dataDir(RED, kind), `${nodeId.replace(/[^\w-]/g, '_')}${suffix}`);
}

/** Deletes a deleted node's state files, with SQLite's companions; what is not there is fine. */
export function removeStateFiles(...files: string[]): void {
  for (const file of files)
    for (const companion of ['', '-wal', '-shm', '-journal']) fs.rmSync(`${file}${companion}`, { force: true });
}

/**
 * The URL of an m2m-verifier node mounted at `mount` in this Node-RED, as devices on this machine
 * reach it: what an empty base URL in m2m-identity-api means, and the verifier's default public
 * URL, so the two agree on the attestation audience.
 */
export function localVerifierUrl(RED: NodeAPI, mount = '/m2m'): string {
  const settings = RED.settings as { uiPort?: number; uiHost?: string; httpNodeRoot?: string | false };
  const nodeRoot = typeof settings.httpNodeRoot === 'string' ? settings.httpNodeRoot.replace(/\/+$/, '') : '';
  const host =
    !settings.uiHost || settings.uiHost === '0.0.0.0' || settings.uiHost === '::' ? '127.0.0.1' : settings.uiHost;
  return `http://${host.includes(':') ? `[${host}]` : host}:${settings.uiPort ?? 1880}${nodeRoot}${mount}`;
}

/**
 * A node that cannot work as configured: a red ring saying why from the start (not at the first
 * message), and every input answered with that error, for Catch nodes.
 */
export function disable(node: Node, RED: NodeAPI, type: string, statusText: string, err: M2MError): void {
  node.status(status.failed(statusText));
  node.on('input', (msg: unknown, _send: unknown, done: (err?: Error) => void) =>
    done(messageError(RED, type, msg as { m2m?: unknown }, err)),
  );
}

/**
 * Why a node that talks to the identity API through `api` cannot, if it cannot: no configuration,
 * or one of the other provider. Checked at deploy so the editor shows it at once.
 */
export function providerProblem(
  api: (() => { provider: 'm2m' | 'didit'; didit?: () => unknown }) | undefined,
  needed: 'm2m' | 'didit',
): M2MError | undefined {
  let provider: string;
  try {
    if (!api) throw new M2MError('no_api', 'no identity API configured', 400);
    provider = api().provider;
    // A Didit configuration without its API key cannot do anything: say so at deploy.
    if (provider === 'didit' && needed === 'didit') api().didit?.();
  } catch (err) {
    return err instanceof M2MError ? err : new M2MError('no_api', String(err), 400);
  }
  if (provider === needed) return undefined;
  return new M2MError(
    'wrong_provider',
    needed === 'm2m'
      ? 'its identity API is a Didit configuration: this node needs an m2m identity API'
      : 'its identity API is an m2m configuration: this node needs a Didit one',
    400,
  );
}

/** The status key (`status.<key>` of the node's catalog) for a providerProblem. */
export function providerStatusKey(problem: M2MError): 'wrong-provider' | 'no-key' | 'no-api' {
  if (problem.code === 'wrong_provider') return 'wrong-provider';
  return problem.code === 'didit_no_api_key' ? 'no-key' : 'no-api';
}

/**
 * A typed input's value for a message (msg, flow, global, env or a string), undefined where there
 * is none: Node-RED throws on a path through a missing object (msg.m2m.sessionId without msg.m2m).
 */
export function typedValue(RED: NodeAPI, node: Node, value: string, type: string, msg: unknown): unknown {
  try {
    return value ? RED.util.evaluateNodeProperty(value, type || 'str', node, msg as never) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What a message's `m2m` holds so far, for a node to add to: only a plain object counts (spread,
 * a string that an upstream node put there would become numbered keys).
 */
export function m2mOf(msg: { m2m?: unknown }): Record<string, unknown> {
  const m2m = msg.m2m;
  return m2m && typeof m2m === 'object' && !Array.isArray(m2m) ? (m2m as Record<string, unknown>) : {};
}
