/**
 * The verifier's HTTP edge: a plain `(req, res)` listener, so the same code serves under
 * node:http (standalone) and mounted in Node-RED's express (where a body parser may already
 * have read the body). One route table, one handler per call; every error, whatever the input,
 * becomes RFC 9457 problem+json with a 4xx code: nothing a client sends reaches a 500 or the log.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { M2MError, ValidationError } from '../errors';
import { readRawBody, tooLarge } from '../http-body';
import { parseJson } from '../schema';
import * as schemas from './schemas';
import { requestPath } from '../url';
import type { Verifier } from './verifier';

export const MAX_BODY_BYTES = 1024 * 1024;

/** As it arrives: plain, or from express, where a body parser (or our own raw reader) may have been first. */
type Request = IncomingMessage & { body?: unknown; _body?: boolean; rawBody?: Buffer };

interface Call {
  params: string[];
  /** The query string's parameters, one value per name. */
  query: Record<string, string>;
  headers: IncomingMessage['headers'];
  remoteAddress: string;
  /** The body as JSON (or, where the route takes it, a form). */
  json(options?: { form?: boolean }): unknown;
  /** The body as JSON, or undefined when there is none. */
  body(): unknown;
}

interface Route {
  method: 'GET' | 'POST';
  path: RegExp;
  /** Admin routes check `x-api-key` before anything of the request is looked at. */
  admin?: true;
  handle(verifier: Verifier, call: Call): Promise<Answer>;
}

/** JSON, or text as it is when `type` is given. */
type Answer = ({ body: unknown } | { body: string; type: string }) & {
  status?: number;
  headers?: Record<string, string>;
};

const routes: Route[] = [
  {
    method: 'POST',
    path: /^\/v1\/devices$/,
    async handle(verifier, call) {
      const { created, ...device } = await verifier.register(
        bearerToken(call.headers),
        call.json(),
        call.remoteAddress,
      );
      return { status: created ? 201 : 200, body: device };
    },
  },
  {
    method: 'POST',
    path: /^\/v1\/challenges$/,
    handle: async (verifier, call) => ({
      status: 201,
      body: await verifier.challenge(call.json(), call.remoteAddress),
    }),
  },
  {
    method: 'POST',
    path: /^\/v1\/attestations$/,
    handle: async (verifier, call) => ({ body: await verifier.attest(call.json()) }),
  },
  {
    method: 'GET',
    path: /^\/v1\/devices$/,
    admin: true,
    handle: async (verifier, { query }) => ({ body: await verifier.listDevices(query) }),
  },
  {
    method: 'GET',
    path: /^\/v1\/devices\/([^/]+)$/,
    admin: true,
    handle: async (verifier, { params }) => ({ body: await verifier.getDevice(params[0]) }),
  },
  {
    method: 'GET',
    path: /^\/v1\/devices\/([^/]+)\/history$/,
    admin: true,
    handle: async (verifier, { params }) => ({ body: await verifier.deviceHistory(params[0]) }),
  },
  {
    method: 'POST',
    path: /^\/v1\/devices\/([^/]+)\/(revoke|approve|reinstate)$/,
    admin: true,
    async handle(verifier, call) {
      const { reason, actor } = schemas.statusChangeBody.parse(call.body() ?? {}, 'body');
      const action = call.params[1] as 'revoke' | 'approve' | 'reinstate';
      return { body: await verifier.setStatus(call.params[0], action, { actor: actor ?? 'admin-api', reason }) };
    },
  },
  {
    method: 'POST',
    path: /^\/v1\/devices\/([^/]+)\/key$/,
    handle: async (verifier, call) => ({ body: await verifier.changeKey(call.params[0], call.json()) }),
  },
  {
    method: 'POST',
    path: /^\/v1\/devices\/([^/]+)\/rekey$/,
    admin: true,
    async handle(verifier, call) {
      const { reason, actor } = schemas.statusChangeBody.parse(call.body() ?? {}, 'body');
      return { body: await verifier.allowRekey(call.params[0], { actor: actor ?? 'admin-api', reason }) };
    },
  },
  {
    method: 'POST',
    path: /^\/v1\/tokens\/introspect$/,
    admin: true,
    handle: async (verifier, call) => ({ body: await verifier.introspect(call.json({ form: true })) }),
  },
  {
    method: 'GET',
    path: /^\/v1\/webhooks\/subscribers$/,
    admin: true,
    handle: async verifier => ({ body: { subscribers: await verifier.listSubscribers() } }),
  },
  {
    method: 'POST',
    path: /^\/v1\/webhooks\/subscribers\/([^/]+)\/enable$/,
    admin: true,
    handle: async (verifier, { params }) => ({ body: await verifier.enableSubscriber(params[0]) }),
  },
  {
    method: 'GET',
    path: /^\/v1\/webhooks\/deliveries$/,
    admin: true,
    handle: async (verifier, { query }) => ({ body: { deliveries: await verifier.listDeliveries(query) } }),
  },
  {
    method: 'POST',
    path: /^\/v1\/webhooks\/deliveries\/([^/]+)\/replay$/,
    admin: true,
    handle: async (verifier, { params }) => ({ status: 202, body: await verifier.replayDelivery(params[0]) }),
  },
  { method: 'GET', path: /^\/\.well-known\/jwks\.json$/, handle: async verifier => ({ body: verifier.jwks() }) },
  {
    method: 'GET',
    path: /^\/v1\/revocations$/,
    async handle(verifier, { headers }) {
      const { jws, etag } = await verifier.revocations();
      const cached = { etag, 'cache-control': 'no-cache' };
      if (headerValue(headers['if-none-match']) === etag)
        return { status: 304, body: '', type: 'application/jwt', headers: cached };
      return { body: jws, type: 'application/jwt', headers: cached };
    },
  },
  {
    method: 'GET',
    path: /^\/v1\/ca$/,
    handle: async verifier => ({ body: verifier.certificateAuthority(), type: 'application/x-pem-file' }),
  },
  {
    method: 'GET',
    path: /^\/v1\/crl$/,
    handle: async verifier => ({
      body: await verifier.certificateRevocations(),
      type: 'application/x-pem-file',
      headers: { 'cache-control': 'no-cache' },
    }),
  },
  { method: 'GET', path: /^\/v1\/health$/, handle: async verifier => ({ body: await verifier.health() }) },
  // For load balancers and orchestrators: alive (the event loop answers), and ready (the store
  // answers at this code's schema version).
  { method: 'GET', path: /^\/healthz$/, handle: async () => ({ body: { status: 'ok' } }) },
  { method: 'GET', path: /^\/readyz$/, handle: async verifier => ({ body: await verifier.health() }) },
  {
    method: 'GET',
    path: /^\/metrics$/,
    admin: true,
    handle: async verifier => ({ body: await verifier.metricsText(), type: 'text/plain; version=0.0.4' }),
  },
];

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function bearerToken(headers: IncomingMessage['headers']): string | undefined {
  return headerValue(headers.authorization)?.match(/^Bearer\s+(.+)$/i)?.[1];
}

/** The RFC 9457 document for an error; anything but an M2MError is an opaque 500. */
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

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string | number> = {},
  type = 'application/json',
): void {
  if (res.headersSent || res.destroyed) return;
  const text = type === 'application/json' || type === 'application/problem+json' ? JSON.stringify(body) : String(body);
  res.writeHead(status, {
    'cache-control': 'no-store',
    ...headers,
    'content-type': `${type}; charset=utf-8`,
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** The one writer of problem+json answers, for the listener and whoever mounts it. */
export function sendProblem(res: ServerResponse, err: unknown): void {
  const { status, body } = problem(err);
  const headers: Record<string, string | number> = {};
  const retryAfter = err instanceof M2MError ? err.detail?.retryAfter : undefined;
  if (typeof retryAfter === 'number') headers['retry-after'] = retryAfter;
  // Past the body limit, or a body that trickles, the connection is closed rather than read on.
  if (status === 413 || status === 408) {
    headers.connection = 'close';
    res.once('finish', () => res.socket?.destroy());
  }
  send(res, status, body, headers, 'application/problem+json');
}

/**
 * The raw body, at most MAX_BODY_BYTES, or what an express body parser already made of it (and
 * inflated, if it came compressed).
 */
async function readBody(req: Request): Promise<Buffer | { parsed: unknown }> {
  if (Number(req.headers['content-length']) > MAX_BODY_BYTES) throw tooLarge(MAX_BODY_BYTES);
  if (Buffer.isBuffer(req.rawBody)) return req.rawBody;
  // Mounted behind express: a body parser got there first.
  if (req._body || (req.body !== undefined && req.readableEnded)) {
    const body = req.body;
    return Buffer.isBuffer(body) ? body : typeof body === 'string' ? Buffer.from(body) : { parsed: body };
  }
  const raw = await readRawBody(req, { maxBytes: MAX_BODY_BYTES });
  const encoding = headerValue(req.headers['content-encoding'])?.trim().toLowerCase();
  // Read as is, a compressed body would be refused as bad JSON, or worse, half-understood.
  if (raw.length > 0 && encoding && encoding !== 'identity')
    throw new M2MError(
      'unsupported_encoding',
      `Content-Encoding ${encoding} is not accepted: send the body as is`,
      415,
    );
  return raw;
}

/**
 * JSON whatever the content type claims, or, where the route takes it (RFC 7662 introspection
 * clients send it), a form.
 */
function decodeBody(body: Buffer | { parsed: unknown }, contentType: string | undefined, form: boolean): unknown {
  if (!Buffer.isBuffer(body)) return body.parsed;
  const text = body.toString('utf8');
  if (form && contentType?.includes('application/x-www-form-urlencoded'))
    return Object.fromEntries(new URLSearchParams(text));
  return parseJson(text);
}

function decodeParam(param: string): string {
  try {
    return decodeURIComponent(param);
  } catch {
    throw new ValidationError('the path is not valid percent-encoding');
  }
}

export interface ListenerOptions {
  /** Where internal errors are reported (their details never reach the client). */
  onError?: (err: unknown) => void;
  /**
   * Reverse proxies whose X-Forwarded-For is believed: behind them, the client is the last address
   * the chain added before reaching one of them. From anyone else the header is ignored (it would
   * let a client pick its address, and with it its rate limits).
   */
  trustedProxies?: readonly string[];
}

/** An IPv4 client of a dual-stack socket as plain IPv4, so one client has one spelling. */
function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function clientAddress(req: Request, trustedProxies: ReadonlySet<string>): string {
  const peer = plainAddress(req.socket?.remoteAddress ?? '');
  if (!trustedProxies.has(peer)) return peer;
  const hops = (headerValue(req.headers['x-forwarded-for']) ?? '')
    .split(',')
    .map(hop => plainAddress(hop.trim()))
    .filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) if (!trustedProxies.has(hops[i])) return hops[i];
  return hops[0] ?? peer;
}

async function handle(
  verifier: Verifier,
  req: Request,
  res: ServerResponse,
  trustedProxies: ReadonlySet<string>,
): Promise<void> {
  if (req.httpVersion === '1.1' && !req.headers.host)
    throw new M2MError('missing_host', 'an HTTP/1.1 request must carry a Host header', 400);
  const pathname = requestPath(req.url);
  // Read (and bound) the body before anything else, so no route answers with a body still unread.
  const body = await readBody(req);
  const matching = routes.filter(route => route.path.test(pathname));
  // HEAD is GET without the body (Node's response drops it): load balancers check health with it.
  const method = req.method === 'HEAD' ? 'GET' : req.method;
  const route = matching.find(candidate => candidate.method === method);
  if (!route) {
    if (matching.length)
      res.setHeader('allow', matching.flatMap(r => (r.method === 'GET' ? ['GET', 'HEAD'] : [r.method])).join(', '));
    throw matching.length
      ? new M2MError('method_not_allowed', `${req.method} is not allowed here`, 405)
      : new M2MError('not_found', 'no such route', 404);
  }
  // Prometheus sends a credential as a bearer token: admin routes take the key either way.
  const remoteAddress = clientAddress(req, trustedProxies);
  if (route.admin)
    await verifier.checkAdmin(headerValue(req.headers['x-api-key']) ?? bearerToken(req.headers), remoteAddress);
  const params = (route.path.exec(pathname) ?? []).slice(1).map(decodeParam);
  const answer = await route.handle(verifier, {
    params,
    query: Object.fromEntries(new URLSearchParams(req.url?.split('?')[1] ?? '')),
    headers: req.headers,
    remoteAddress,
    json: ({ form = false } = {}) => decodeBody(body, headerValue(req.headers['content-type']), form),
    body: () =>
      Buffer.isBuffer(body) && body.length === 0
        ? undefined
        : decodeBody(body, headerValue(req.headers['content-type']), false),
  });
  send(res, answer.status ?? 200, answer.body, answer.headers, 'type' in answer ? answer.type : undefined);
}

export function createRequestListener(
  verifier: Verifier,
  options: ListenerOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  const trustedProxies = new Set((options.trustedProxies ?? []).map(plainAddress));
  return (req, res) => {
    handle(verifier, req, res, trustedProxies).catch(err => {
      if (problem(err).status === 500) options.onError?.(err);
      sendProblem(res, err);
    });
  };
}
