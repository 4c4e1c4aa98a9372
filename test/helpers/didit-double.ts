/**
 * A test double of Didit's identity verification API v3 (this machine has no internet). It
 * follows the documented contract, not Didit's real service:
 * - authentication, `x-api-key`; 401 for a wrong key, 403 `{"detail": "You do not have
 *   permission to perform this action."}` without one: https://docs.didit.me/getting-started/api-authentication
 * - `POST /v3/session/` (201, `session_id`, `session_number`, `session_token`, `url`, `status`
 *   "Not Started", ...; an unfinished session with the same `vendor_data` comes back, still 201,
 *   with its `callback` and `metadata` updated): https://docs.didit.me/sessions-api/create-session
 * - `GET /v3/session/{id}/decision/` (status strings of integration/verification-statuses;
 *   per-step arrays such as `face_matches[]`): https://docs.didit.me/sessions-api/retrieve-session
 * - `POST /v3/face-match/` (multipart `user_image`, `ref_image` ≤ 5 MB, optional
 *   `face_match_score_decline_threshold` default 30, Approved strictly above it, otherwise
 *   Declined with LOW_FACE_MATCH_SIMILARITY): https://docs.didit.me/standalone-apis/face-match
 * - errors and rate limits (`detail` bodies, 429 with `Retry-After`):
 *   https://docs.didit.me/integration/api-errors, https://docs.didit.me/integration/rate-limiting
 * Every request is recorded (method, path, headers, JSON body or multipart parts) for tests to
 * assert field by field; `script` overrides an answer (an error, a delay, silence).
 */
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export const DOUBLE_API_KEY = 'sk_test_double_key_for_the_didit_test_double';
export const DOUBLE_WORKFLOW_ID = '11111111-2222-3333-4444-555555555555';

/** The smallest files each format's signature check accepts, padded to look like images. */
export const JPEG = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(64, 7)]);
export const PNG = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(64, 9)]);

export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  json?: Record<string, unknown>;
  /** Multipart parts: text fields as strings, files as their bytes, name and type. */
  parts?: Record<string, string | { bytes: Buffer; filename: string; type: string }>;
}

/** An answer the test wants instead of the documented one (without `status`: the documented one, late). */
export type Scripted = { status?: number; body?: unknown; headers?: Record<string, string>; delayMs?: number } | 'hang';

export interface DiditDouble {
  url: string;
  requests: RecordedRequest[];
  /** Called before each request is answered; return an answer to override it. */
  script?: (request: RecordedRequest, n: number) => Scripted | undefined;
  /** Sets a session's status, as the operator finishing the hosted flow would. */
  finish(sessionId: string, status: string, faceScore?: number): void;
  /** Scores the double gives a face pair: by the user image's first bytes' hash, default 87.5. */
  faceScore: number;
  close(): Promise<void>;
}

interface Session {
  session_id: string;
  session_number: number;
  session_token: string;
  url: string;
  vendor_data?: string;
  metadata?: unknown;
  callback?: string;
  status: string;
  workflow_id: string;
  faceScore?: number;
}

const UNFINISHED = ['Not Started', 'In Progress', 'Resubmitted', 'Awaiting User'];

async function readRequest(req: http.IncomingMessage): Promise<RecordedRequest> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  const recorded: RecordedRequest = { method: req.method ?? '', path: req.url ?? '', headers: req.headers };
  const type = req.headers['content-type'] ?? '';
  if (type.startsWith('application/json') && body.length) recorded.json = JSON.parse(body.toString('utf8'));
  if (type.startsWith('multipart/form-data')) {
    // undici's Response parses multipart exactly as a server framework would.
    const form = await new Response(body, { headers: { 'content-type': type } }).formData();
    recorded.parts = {};
    for (const [name, value] of form as unknown as Iterable<[string, string | File]>) {
      recorded.parts[name] =
        typeof value === 'string'
          ? value
          : { bytes: Buffer.from(await value.arrayBuffer()), filename: value.name, type: value.type };
    }
  }
  return recorded;
}

export async function startDiditDouble(): Promise<DiditDouble> {
  const sessions = new Map<string, Session>();
  const requests: RecordedRequest[] = [];
  let sessionNumber = 43_000;

  const documented = (request: RecordedRequest): { status: number; body?: unknown } => {
    const key = request.headers['x-api-key'];
    if (!key) return { status: 403, body: { detail: 'You do not have permission to perform this action.' } };
    if (key !== DOUBLE_API_KEY) return { status: 401, body: { detail: 'Invalid API key.' } };

    if (request.method === 'POST' && request.path === '/v3/session/') {
      const body = request.json ?? {};
      if (typeof body.workflow_id !== 'string')
        return { status: 400, body: { workflow_id: ['This field is required.'] } };
      const vendorData = typeof body.vendor_data === 'string' ? body.vendor_data : undefined;
      const pending = [...sessions.values()].find(
        session =>
          vendorData !== undefined && session.vendor_data === vendorData && UNFINISHED.includes(session.status),
      );
      if (pending) {
        pending.callback = body.callback as string | undefined;
        pending.metadata = body.metadata;
        return { status: 201, body: publicSession(pending) };
      }
      const token = crypto.randomBytes(8).toString('hex');
      const session: Session = {
        session_id: crypto.randomUUID(),
        session_number: ++sessionNumber,
        session_token: token,
        url: `https://verify.didit.me/session/${token}`,
        vendor_data: vendorData,
        metadata: body.metadata,
        callback: body.callback as string | undefined,
        status: 'Not Started',
        workflow_id: body.workflow_id,
      };
      sessions.set(session.session_id, session);
      return { status: 201, body: publicSession(session) };
    }

    const decision = /^\/v3\/session\/([^/]+)\/decision\/$/.exec(request.path);
    if (request.method === 'GET' && decision) {
      const session = sessions.get(decision[1]);
      if (!session) return { status: 404, body: { detail: 'Not found.' } };
      return {
        status: 200,
        body: {
          session_id: session.session_id,
          session_number: session.session_number,
          session_url: session.url,
          status: session.status,
          workflow_id: session.workflow_id,
          features: ['ID_VERIFICATION', 'LIVENESS', 'FACE_MATCH'],
          vendor_data: session.vendor_data ?? null,
          metadata: session.metadata ?? null,
          callback: session.callback ?? null,
          id_verifications: session.status === 'Approved' ? [{ node_id: 'feature_ocr_1', status: 'Approved' }] : null,
          face_matches:
            session.faceScore === undefined
              ? null
              : [{ node_id: 'feature_face_1', status: session.status, score: session.faceScore, warnings: [] }],
        },
      };
    }

    if (request.method === 'POST' && request.path === '/v3/face-match/') {
      const parts = request.parts ?? {};
      const missing = ['user_image', 'ref_image'].filter(name => typeof parts[name] !== 'object');
      if (missing.length)
        return { status: 400, body: Object.fromEntries(missing.map(name => [name, ['No file was submitted.']])) };
      for (const name of ['user_image', 'ref_image']) {
        const file = parts[name] as { bytes: Buffer };
        if (file.bytes.length > 5 * 1024 * 1024)
          return { status: 400, body: { [name]: ['The file exceeds the maximum size of 5 MB.'] } };
      }
      const threshold = Number(parts.face_match_score_decline_threshold ?? 30);
      const score = double.faceScore;
      const approved = score > threshold;
      return {
        status: 200,
        body: {
          request_id: crypto.randomUUID(),
          face_match: {
            status: approved ? 'Approved' : 'Declined',
            score,
            user_image: {
              entities: [{ age: 31.2, bbox: [40, 40, 100, 100], confidence: 0.71, gender: 'male' }],
              best_angle: 0,
            },
            ref_image: {
              entities: [{ age: 29.8, bbox: [150, 230, 670, 890], confidence: 0.72, gender: 'male' }],
              best_angle: 0,
            },
            warnings: approved
              ? []
              : [
                  {
                    risk: 'LOW_FACE_MATCH_SIMILARITY',
                    log_type: 'warning',
                    short_description: 'Low face match similarity',
                    long_description: 'The facial features of the provided image do not match the reference image.',
                  },
                ],
          },
          created_at: new Date().toISOString(),
        },
      };
    }
    return { status: 404, body: { detail: 'Not found.' } };
  };

  const server = http.createServer((req, res) => {
    readRequest(req).then(
      async request => {
        requests.push(request);
        const scripted = double.script?.(request, requests.length - 1);
        if (scripted === 'hang') return;
        if (scripted?.delayMs) await new Promise(resolve => setTimeout(resolve, scripted.delayMs));
        const answer = scripted?.status ? { status: scripted.status, body: scripted.body } : documented(request);
        const body = answer.body === undefined ? '' : JSON.stringify(answer.body);
        res.writeHead(answer.status, {
          ...(body ? { 'content-type': 'application/json' } : {}),
          ...scripted?.headers,
        });
        res.end(body);
      },
      () => res.destroy(),
    );
  });
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));

  const double: DiditDouble = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    faceScore: 87.5,
    finish(sessionId, status, faceScore) {
      const session = sessions.get(sessionId);
      if (!session) throw new Error(`the double has no session ${sessionId}`);
      session.status = status;
      session.faceScore = faceScore;
    },
    close: () =>
      new Promise(resolve => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return double;
}

function publicSession(session: Session): Record<string, unknown> {
  const { faceScore: _internal, ...fields } = session;
  return { ...fields, metadata: fields.metadata ?? null, vendor_data: fields.vendor_data ?? null };
}
