/**
 * Routes our nodes add to Node-RED's express apps, and take away again on close (Node-RED has
 * no API to remove a route; its own http in node splices the router stack the same way).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NodeAPI } from 'node-red';
import { type BodyLimits, readRawBody } from '../../lib/http-body';
import { requestPath } from '../../lib/url';
import { sendProblem } from '../../lib/verifier/http';

export type Handler = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void;
interface ExpressLayer {
  handle: unknown;
  name?: string;
}
export interface ExpressApp {
  use(path: string, handler: Handler): void;
  _router?: { stack: ExpressLayer[] };
  /** The app this one is mounted in (express sets it on mount). */
  parent?: ExpressApp;
}

/** Mounts `handler` under `path` of `app`; the function returned removes it. */
export function mount(app: ExpressApp, path: string, handler: Handler): () => void {
  app.use(path, handler);
  return () => {
    const stack = app._router?.stack ?? [];
    for (let i = stack.length - 1; i >= 0; i--) if (stack[i].handle === handler) stack.splice(i, 1);
  };
}

/** Where `mountPath` of httpNode is, seen from the top of Node-RED's server. */
export function nodeUrlPath(RED: NodeAPI, mountPath: string): string {
  const root = (RED.settings as { httpNodeRoot?: string | false }).httpNodeRoot;
  return `${typeof root === 'string' ? root.replace(/\/+$/, '') : ''}${mountPath}`;
}

/** A request whose exact bytes were kept: `rawBody`, with `_body` set so express's body parsers skip it. */
export type RawBodyRequest = IncomingMessage & { rawBody?: Buffer; _body?: boolean; body?: unknown };

/**
 * Whether `target` is `fullPath` as express matches a mounted path: letters in any case, a
 * trailing slash or not, and, for a `subtree`, anything below it. A sender that writes the path
 * another way still reaches the route, so its body must be kept as well.
 */
export function underPath(target: string, fullPath: string, subtree: boolean): boolean {
  const path = target.toLowerCase().replace(/\/+$/, '');
  const root = fullPath.toLowerCase().replace(/\/+$/, '');
  return path === root || (subtree && path.startsWith(`${root}/`));
}

/**
 * Keeps the raw bytes of POSTs (or, with `anyMethod`, of any request: Node-RED's parser reads a
 * GET's body too) to `fullPath` (and, with `subtree`, below it): for a signature
 * check, and so that no body parser of Node-RED's answers a malformed or oversized body with its
 * HTML error page. The editor's JSON parser reads every request under a shared root before
 * httpNode's routes see it, and it sits in the editor's own app, ahead of the RED.httpAdmin nodes
 * are given. So, like Node-RED's http in node for its raw-body option, this middleware goes to
 * the front of the top-level app that both are mounted in (found through httpNode's parent),
 * reads the body, bounded in size and time, answers problem+json when it cannot, and marks it
 * read. Where httpNode has no parent (node-red-node-test-helper), RED.httpAdmin is the editor's
 * app itself. Returns the function that removes it.
 */
export function captureRawBody(
  RED: NodeAPI,
  fullPath: string,
  limits: BodyLimits,
  { subtree = false, anyMethod = false }: { subtree?: boolean; anyMethod?: boolean } = {},
): () => void {
  const handler: Handler = (req, res, next) => {
    const request = req as RawBodyRequest;
    const target = requestPath((req as { originalUrl?: string }).originalUrl ?? req.url);
    if ((!anyMethod && req.method !== 'POST') || request._body || !underPath(target, fullPath, subtree)) {
      next();
      return;
    }
    readRawBody(req, limits).then(
      body => {
        request.rawBody = body;
        request._body = true;
        next();
      },
      err => sendProblem(res, err),
    );
  };
  let app = RED.httpNode as unknown as ExpressApp;
  while (app.parent) app = app.parent;
  if (app === (RED.httpNode as unknown as ExpressApp)) app = RED.httpAdmin as unknown as ExpressApp;
  const remove = mount(app, '/', handler);
  const stack = app._router?.stack;
  if (stack) {
    const layer = stack.pop()!;
    // After express's own query and init layers, before everything else.
    const first = stack.findIndex(entry => entry.name !== 'query' && entry.name !== 'expressInit');
    stack.splice(first === -1 ? stack.length : first, 0, layer);
  }
  return remove;
}
