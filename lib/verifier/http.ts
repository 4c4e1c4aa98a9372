/**
 * The verifier's HTTP edge: a plain `(req, res)` listener, so the same code serves under
 * node:http (standalone) and mounted in Node-RED's express (where a body parser may already
 * have read the body). One route table, one handler per call; errors become RFC 9457
 * problem+json.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { M2MError } from '../errors';
import { parseJson } from '../schema';
import type { Verifier } from './verifier';

export const MAX_BODY_BYTES = 1024 * 1024;

type Request = IncomingMessage & { body?: unknown; _body?: boolean; originalUrl?: string };
interface Call { params: string[]; headers: IncomingMessage['headers']; remoteAddress?: string; body: (options?: { form?: boolean }) => Promise<unknown> }
interface Route { method: 'GET' | 'POST'; path: RegExp; handle(verifier: Verifier, call: Call): Promise<{ status?: number; body: unknown }> }

const admin = (handle: Route['handle']): Route['handle'] => async (verifier, call) => {
  verifier.checkAdmin(headerValue(call.headers['x-api-key']));
  return handle(verifier, call);
};

const routes: Route[] = [
  {
    method: 'POST', path: /^\/v1\/devices$/,
    async handle(verifier, call) {
      const bearer = headerValue(call.headers.authorization)?.match(/^Bearer\s+(.+)$/i)?.[1];
      const { created, ...device } = await verifier.register(bearer, await call.body(), call.remoteAddress);
      return { status: created ? 201 : 200, body: device };
    },
  },
  { method: 'POST', path: /^\/v1\/challenges$/, handle: async (verifier, call) => ({ status: 201, body: await verifier.challenge(await call.body()) }) },
  { method: 'POST', path: /^\/v1\/attestations$/, handle: async (verifier, call) => ({ body: await verifier.attest(await call.body()) }) },
  { method: 'GET', path: /^\/v1\/devices$/, handle: admin(async verifier => ({ body: { devices: await verifier.listDevices() } })) },
  { method: 'GET', path: /^\/v1\/devices\/([^/]+)$/, handle: admin(async (verifier, { params }) => ({ body: await verifier.getDevice(params[0]) })) },
  { method: 'POST', path: /^\/v1\/devices\/([^/]+)\/revoke$/, handle: admin(async (verifier, { params }) => ({ body: await verifier.setStatus(params[0], 'revoke') })) },
  { method: 'POST', path: /^\/v1\/devices\/([^/]+)\/approve$/, handle: admin(async (verifier, { params }) => ({ body: await verifier.setStatus(params[0], 'approve') })) },
  { method: 'POST', path: /^\/v1\/devices\/([^/]+)\/reinstate$/, handle: admin(async (verifier, { params }) => ({ body: await verifier.setStatus(params[0], 'reinstate') })) },
  { method: 'POST', path: /^\/v1\/tokens\/introspect$/, handle: admin(async (verifier, call) => ({ body: await verifier.introspect(await call.body({ form: true })) })) },
  { method: 'GET', path: /^\/\.well-known\/jwks\.json$/, handle: async verifier => ({ body: verifier.jwks() }) },
  { method: 'GET', path: /^\/v1\/health$/, handle: async verifier => ({ body: await verifier.health() }) },
];

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function send(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': `${type}; charset=utf-8`, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

export function problem(err: unknown): { status: number; body: Record<string, unknown> } {
  const known = err instanceof M2MError ? err : new M2MError('internal', 'internal error', 500);
  const status = known.status >= 400 && known.status < 600 ? known.status : 500;
  return {
    status,
    body: {
      type: `urn:m2m-identity:problem:${known.code}`,
      title: known.code.replace(/_/g, ' '),
      status,
      // Internal errors keep their details to the log: the client learns nothing about the server.
      detail: status === 500 ? 'internal error' : known.message,
      code: known.code,
    },
  };
}

/**
 * The body as a JS value: JSON whatever the content type claims, or, where the route takes it
 * (RFC 7662 introspection clients send it), a form.
 */
function decodeBody(raw: Buffer | string, contentType: string | undefined, form: boolean): unknown {
  const text = raw.toString();
  if (form && contentType?.includes('application/x-www-form-urlencoded')) return Object.fromEntries(new URLSearchParams(text));
  return parseJson(text);
}

function readBody(req: Request, form = false): Promise<unknown> {
  // Mounted behind express: a body parser got there first.
  if (req._body || (req.body !== undefined && req.readableEnded)) {
    return Promise.resolve(Buffer.isBuffer(req.body) || typeof req.body === 'string' ? decodeBody(req.body, req.headers['content-type'], form) : req.body);
  }
  const declared = Number(req.headers['content-length']);
  if (declared > MAX_BODY_BYTES) return Promise.reject(new M2MError('payload_too_large', `body over ${MAX_BODY_BYTES} bytes`, 413));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        req.pause();
        reject(new M2MError('payload_too_large', `body over ${MAX_BODY_BYTES} bytes`, 413));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      try {
        resolve(decodeBody(Buffer.concat(chunks), req.headers['content-type'], form));
      } catch (err) {
        reject(err);
      }
    });
    req.on('error', reject);
  });
}

export interface ListenerOptions {
  /** Where internal errors are reported (their details never reach the client). */
  onError?: (err: unknown) => void;
}

export function createRequestListener(verifier: Verifier, options: ListenerOptions = {}): (req: IncomingMessage, res: ServerResponse) => void {
  return (incoming, res) => {
    const req = incoming as Request;
    const pathname = new URL(req.url ?? '/', 'http://verifier.invalid').pathname;
    const matching = routes.filter(route => route.path.test(pathname));
    const route = matching.find(candidate => candidate.method === req.method);
    if (!route) {
      if (matching.length) res.setHeader('allow', matching.map(r => r.method).join(', '));
      const err = matching.length
        ? new M2MError('method_not_allowed', `${req.method} is not allowed on ${pathname}`, 405)
        : new M2MError('not_found', `no route ${pathname}`, 404);
      const { status, body } = problem(err);
      send(res, status, body, 'application/problem+json');
      return;
    }
    Promise.resolve()
      .then(() => {
        const params = (route.path.exec(pathname) ?? []).slice(1).map(param => decodeURIComponent(param));
        return route.handle(verifier, { params, headers: req.headers, remoteAddress: req.socket?.remoteAddress, body: ({ form } = {}) => readBody(req, form) });
      })
      .then(({ status = 200, body }) => send(res, status, body))
      .catch(err => {
        const answer = problem(err);
        if (answer.status === 500) options.onError?.(err);
        if (answer.status === 413) res.setHeader('connection', 'close');
        send(res, answer.status, answer.body, 'application/problem+json');
        if (answer.status === 413) res.on('finish', () => req.socket?.destroy());
      });
  };
}
