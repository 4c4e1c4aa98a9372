/**
 * Routes our nodes add to Node-RED's express apps, and take away again on close (Node-RED has
 * no API to remove a route; its own http in node splices the router stack the same way).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NodeAPI } from 'node-red';
import { M2MError } from '../../lib/errors';
import { type BodyLimits, readRawBody } from '../../lib/http-body';
import { requestPath } from '../../lib/url';
import { sendProblem } from '../../lib/verifier/http';

export type Handler = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void;
type ErrorHandler = (err: unknown, req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void;
interface ExpressLayer {
  handle: unknown;
  name?: string;
}
export interface ExpressApp {
  use(path: string, handler: Handler): void;
  use(handler: ErrorHandler): void;
  _router?: { stack: ExpressLayer[] };
  /** The app this one is mounted in (express sets it on mount). */
  parent?: ExpressApp;
}

/** Mounts `handler` under `path` of `app`; the function returned removes it. */
export function mount(app: ExpressApp, path: string, handler: Handler | ErrorHandler): () => void {
  if (handler.length === 4) app.use(handler as ErrorHandler);
  else app.use(path, handler as Handler);
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

/**
 * When the editor and httpNode share a root (Node-RED's default, both at /), the editor's JSON
 * body parser reads every request first, and a malformed or oversized body becomes express's
 * HTML error page with server paths in it. This error handler, on the editor's app, answers such
 * errors for requests under `fullPath` as problem+json instead; the function returned removes it.
 */
export function answerParserErrors(RED: NodeAPI, fullPath: string): () => void {
  const handler: ErrorHandler = (err, req, res, next) => {
    const path = requestPath((req as { originalUrl?: string }).originalUrl ?? req.url);
    if (path !== fullPath && !path.startsWith(`${fullPath}/`)) {
      next(err);
      return;
    }
    const type = (err as { type?: string }).type;
    sendProblem(
      res,
      type === 'entity.too.large'
        ? new M2MError('payload_too_large', 'body too large', 413)
        : new M2MError(
            'invalid_request',
            type === 'entity.parse.failed' ? 'body is not valid JSON' : 'the request body could not be read',
            400,
          ),
    );
  };
  return mount(RED.httpAdmin as unknown as ExpressApp, fullPath, handler);
}

/** A request whose exact bytes were kept: `rawBody`, with `_body` set so express's body parsers skip it. */
export type RawBodyRequest = IncomingMessage & { rawBody?: Buffer; _body?: boolean; body?: unknown };

/**
 * Keeps the raw bytes of POSTs to `fullPath` for a signature check. The editor's JSON parser reads
 * every request under a shared root before httpNode's routes see it, and it sits in the editor's
 * own app, ahead of the RED.httpAdmin nodes are given. So, like Node-RED's http in node for its
 * raw-body option, this middleware goes to the front of the top-level app that both are mounted
 * in (found through httpNode's parent), reads the body, bounded in size and time, and marks it
 * read. Where httpNode has no parent (node-red-node-test-helper), RED.httpAdmin is the editor's
 * app itself. Returns the function that removes it.
 */
export function captureRawBody(RED: NodeAPI, fullPath: string, limits: BodyLimits): () => void {
  const handler: Handler = (req, res, next) => {
    const request = req as RawBodyRequest;
    const target = requestPath((req as { originalUrl?: string }).originalUrl ?? req.url);
    if (req.method !== 'POST' || target !== fullPath || request._body) {
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
