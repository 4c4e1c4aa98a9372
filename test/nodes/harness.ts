/**
 * Shared set-up for node tests. node-red-node-test-helper gives nodes an httpNode app that it does
 * not serve, so this serves it on a loopback port of its own, as Node-RED would.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import type { NodeAPI } from 'node-red';
import { loadHelper, nodeRedPath, tempUserDir } from '../helpers/node-red';

const dist = path.join(__dirname, '..', '..', 'nodes');
const nodeModule = (type: string) => require(path.join(dist, type, `${type}.js`));

export const helper = loadHelper();
const coreNodes = path.join(
  path.dirname(require.resolve('@node-red/nodes/package.json', { paths: [path.dirname(nodeRedPath())] })),
  'core',
);
export const catchNode = require(path.join(coreNodes, 'common', '25-catch.js'));
export const m2mNodes = [
  'm2m-reauth-timer',
  'm2m-token-check',
  'm2m-identity-api',
  'm2m-device',
  'm2m-provision',
  'm2m-tinyml-verify',
  'm2m-attest',
  'm2m-verifier',
  'm2m-webhook-in',
  'm2m-didit-session',
  'm2m-didit-face-match',
].map(nodeModule);

export interface NodeHttp {
  url: string;
  /** Pass as the first "node" to helper.load: it captures RED.httpAdmin and RED.httpNode for the server. */
  capture(RED: NodeAPI): void;
  close(): Promise<void>;
}

type App = (req: http.IncomingMessage, res: http.ServerResponse, next: (err?: unknown) => void) => void;

/**
 * Serves the editor's app and httpNode at one root, as Node-RED does by default: the editor's
 * JSON body parser sees every request first, and what neither app answers, or an error neither
 * handles, ends in express's final handler (an HTML page, with the stack outside production).
 */
export async function serveHttpNode(): Promise<NodeHttp> {
  let apps: { admin: App; node: App } | undefined;
  const finalHandler = (res: http.ServerResponse) => (err?: unknown) => {
    res.statusCode = err ? ((err as { status?: number }).status ?? 500) : 404;
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(`<!DOCTYPE html><pre>${err ? (err as Error).stack : 'Cannot GET'}</pre>`);
  };
  const server = http.createServer((req, res) => {
    if (!apps) {
      res.statusCode = 503;
      res.end();
      return;
    }
    const { admin, node } = apps;
    admin(req, res, err => (err ? finalHandler(res)(err) : node(req, res, finalHandler(res))));
  });
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    capture: RED => {
      apps = { admin: RED.httpAdmin as unknown as App, node: RED.httpNode as unknown as App };
    },
    close: () =>
      new Promise(resolve => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const ENROLLMENT_TOKEN = 'node-test-enrollment-token';
export const ADMIN_KEY = 'node-test-admin-key';
export const KEYSTORE_SECRET = 'node-test-keystore-secret';

/** A gateway flow: provision and attest, with helper nodes on every output and a catch node. */
export function gatewayFlow(apiUrl: string, credentials: { enrollmentToken: string; apiKey?: string }) {
  return {
    flow: [
      { id: 'tab', type: 'tab', label: 'test' },
      { id: 'api', type: 'm2m-identity-api', baseUrl: apiUrl, timeout: 2000 },
      {
        id: 'device',
        type: 'm2m-device',
        deviceId: 'press-7',
        api: 'api',
        sources: 'machine-id,cpu',
        extra: '{"plc.serial":"S7-42"}',
        metadata: '{"line":"2"}',
      },
      {
        id: 'provision',
        z: 'tab',
        x: 100,
        y: 100,
        type: 'm2m-provision',
        device: 'device',
        onDeploy: false,
        wires: [['provisioned']],
      },
      {
        id: 'attest',
        z: 'tab',
        x: 100,
        y: 100,
        type: 'm2m-attest',
        device: 'device',
        wires: [['approved'], ['declined']],
      },
      { id: 'catch', z: 'tab', x: 100, y: 100, type: 'catch', scope: null, uncaught: false, wires: [['caught']] },
      ...['provisioned', 'approved', 'declined', 'caught'].map(id => ({
        id,
        z: 'tab',
        x: 100,
        y: 100,
        type: 'helper',
      })),
    ] as Array<{ id: string; type: string; [key: string]: unknown }>,
    credentials: {
      api: credentials,
      device: { keystoreSecret: KEYSTORE_SECRET },
    } as Record<string, Record<string, string | undefined>>,
  };
}

/** A gateway and a verifier in one Node-RED, as in the quick start. */
export function identityFlow(baseUrl: string, overrides: { apiUrl?: string } = {}) {
  const gateway = gatewayFlow(overrides.apiUrl ?? `${baseUrl}/m2m`, {
    enrollmentToken: ENROLLMENT_TOKEN,
    apiKey: ADMIN_KEY,
  });
  gateway.flow.push({
    id: 'verifier',
    z: 'tab',
    x: 100,
    y: 100,
    type: 'm2m-verifier',
    path: '/m2m',
    publicUrl: `${baseUrl}/m2m`,
    store: '',
    loopbackEnrollment: false,
    manualApproval: false,
  });
  gateway.credentials.verifier = { enrollmentToken: ENROLLMENT_TOKEN, adminKey: ADMIN_KEY };
  return gateway;
}

/**
 * The code on a message a Catch node got: msg.m2m.error.code on every Node-RED, and the same in
 * msg.error.code from Node-RED 4 on (3.x copies no code there).
 */
export function caughtCode(msg: { error?: { code?: unknown }; m2m?: { error?: { code?: unknown } } }): unknown {
  const code = msg.m2m?.error?.code;
  if (msg.error?.code !== undefined) assert.equal(msg.error.code, code, 'msg.error.code is msg.m2m.error.code');
  return code;
}

/** Resolves with the first message any of the helper nodes receives, and which one got it. */
export function firstMessage(nodeIds: string[], timeoutMs = 8000): Promise<{ nodeId: string; msg: any }> {
  const listeners = new Map<string, (msg: unknown) => void>();
  const stop = () => {
    for (const [id, listener] of listeners) helper.getNode(id)?.removeListener('input', listener);
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`no message reached ${nodeIds.join(' or ')} within ${timeoutMs} ms`));
    }, timeoutMs);
    for (const nodeId of nodeIds) {
      const listener = (msg: unknown) => {
        clearTimeout(timer);
        stop();
        resolve({ nodeId, msg });
      };
      listeners.set(nodeId, listener);
      helper.getNode(nodeId).on('input', listener);
    }
  });
}

export async function nextMessage(nodeId: string, timeoutMs?: number): Promise<any> {
  return (await firstMessage([nodeId], timeoutMs)).msg;
}

export function newUserDir(): string {
  const dir = tempUserDir();
  helper.settings({ userDir: dir });
  return dir;
}

export function keystoreFile(userDir: string, deviceId = 'press-7'): string {
  return path.join(userDir, 'm2m-identity', 'keys', `${deviceId}.keystore.json`);
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** A fresh user dir, with uiPort set to `http`'s port: where an empty identity API base URL points. */
export function tempUserDirFor(http: NodeHttp): string {
  const dir = tempUserDir();
  helper.settings({ userDir: dir, uiHost: '127.0.0.1', uiPort: Number(new URL(http.url).port) });
  return dir;
}

/** The test helper's Node-RED, started and stopped with promises (its API takes callbacks). */
export const startNodeRed = (): Promise<void> => new Promise(resolve => helper.startServer(resolve));

export async function stopNodeRed(): Promise<void> {
  await helper.unload();
  await new Promise<void>(resolve => helper.stopServer(() => resolve()));
}

/**
 * Around each test of the calling suite: the helper's Node-RED, a server for its apps and a fresh
 * user dir whose uiPort is that server's. The object returned holds the current ones.
 */
export function nodeRedPerTest(): { http: NodeHttp; userDir: string } {
  const current = {} as { http: NodeHttp; userDir: string };
  beforeEach(async () => {
    await startNodeRed();
    current.http = await serveHttpNode();
    current.userDir = tempUserDirFor(current.http);
  });
  afterEach(async () => {
    await stopNodeRed();
    await current.http.close();
    removeDir(current.userDir);
  });
  return current;
}
