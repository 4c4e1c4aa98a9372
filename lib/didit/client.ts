/**
 * Client of Didit's identity verification API v3 (https://docs.didit.me), the calls a flow needs:
 * create a hosted verification session, read its decision, compare two faces. Like the identity
 * API client: axios with a timeout, answers checked by schema, and every failure an M2MError with
 * a stable `didit_*` code that a node routes on. The API key travels in `x-api-key` only; no
 * message, log line or error text carries it.
 *
 * Retries only where a repeat cannot do harm: reading a decision (a GET), and creating a session
 * that names its `vendor_data` (Didit returns the unfinished session for the same vendor_data
 * rather than a second one). A face match costs a credit per call, so it is never repeated.
 */
import axios, { type AxiosInstance, type AxiosResponse } from 'axios';
import * as https from 'node:https';
import { M2MError } from '../errors';
import * as s from '../schema';
import { redactUrl } from '../url';
import { redirectNote, transportError } from '../edge/transport-error';

export const DIDIT_BASE_URL = 'https://verification.didit.me';
/** Didit's upload limit per image (larger ones are answered 400). */
export const MAX_IMAGE_BYTES = 5 * 1024 * 1024;

/** Session statuses, as Didit spells them (docs: integration/verification-statuses). */
const FINAL_STATUSES = new Set(['Approved', 'Declined', 'Expired', 'Abandoned', 'Kyc Expired']);

/** A status that waiting will not change (anything else is still pending or in review). */
export function isFinalStatus(status: string): boolean {
  return FINAL_STATUSES.has(status);
}

/** A session status as a reason code on output 2: "In Review" → didit_in_review. */
export function statusReason(status: string): string {
  return `didit_${status
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_|_$/g, '')}`;
}

export class DiditError extends M2MError {
  /** Seconds Didit asked us to wait (429 Retry-After). */
  readonly retryAfter?: number;

  constructor(code: string, message: string, status: number, retryAfter?: number) {
    super(code, message, status, retryAfter === undefined ? undefined : { retryAfter });
    this.retryAfter = retryAfter;
  }
}

export interface DiditClientOptions {
  baseUrl?: string;
  apiKey: string;
  timeoutMs?: number;
  /** Waits before each retry of a safe call (default 0.5 s, 2 s). */
  retryDelaysMs?: number[];
}

export interface SessionRequest {
  workflowId: string;
  vendorData?: string;
  /** Where the operator's browser goes when the hosted flow ends. */
  callback?: string;
  metadata?: Record<string, unknown>;
  language?: string;
}

const uuid = s.string({ pattern: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, format: 'UUID' });
const text = (maxLength = 512) => s.string({ maxLength });

const sessionAnswer = s.object({
  session_id: text(128),
  session_number: s.optional(s.nullable(s.number())),
  // null for a key without sessions write access (docs: getting-started/api-authentication).
  url: s.nullable(s.string({ pattern: /^https?:\/\//, format: 'URL', maxLength: 2048 })),
  status: text(64),
  vendor_data: s.optional(s.nullable(text(1024))),
  workflow_id: s.optional(s.nullable(text(128))),
});

const warning = s.object({
  risk: s.optional(s.nullable(text(128))),
  log_type: s.optional(s.nullable(text(64))),
  short_description: s.optional(s.nullable(text(1024))),
});

const faceMatchResult = s.object({
  status: text(64),
  score: s.optional(s.nullable(s.number())),
  warnings: s.optional(s.nullable(s.array(warning, { maxItems: 64 }))),
});

const decisionAnswer = s.object({
  session_id: text(128),
  status: text(64),
  vendor_data: s.optional(s.nullable(text(1024))),
  workflow_id: s.optional(s.nullable(text(128))),
  features: s.optional(s.nullable(s.array(text(64), { maxItems: 64 }))),
  // Current v3 answers carry one entry per workflow step; older ones a single object.
  face_matches: s.optional(s.nullable(s.array(faceMatchResult, { maxItems: 16 }))),
  face_match: s.optional(s.nullable(faceMatchResult)),
});

const faceMatchAnswer = s.object({
  request_id: s.optional(s.nullable(text(128))),
  face_match: faceMatchResult,
});

export interface DiditSession {
  sessionId: string;
  sessionNumber?: number;
  url: string;
  status: string;
  vendorData?: string;
}

export interface DiditDecision {
  sessionId: string;
  status: string;
  vendorData?: string;
  workflowId?: string;
  features: string[];
  /** The face-match steps' scores (0-100), where the workflow has one. */
  faceMatchScores: number[];
  /** Didit's full answer, for flows that need the document fields. */
  raw: Record<string, unknown>;
}

export interface FaceMatchRequest {
  userImage: Buffer;
  refImage: Buffer;
  /** Scores at or below it are Declined (Didit's default 30). */
  declineThreshold?: number;
  rotateImage?: boolean;
  /** Keep the comparison as a session in Didit's console (its default); false stores nothing. */
  saveApiRequest?: boolean;
  vendorData?: string;
}

export interface FaceMatch {
  requestId?: string;
  status: string;
  score: number | null;
  warnings: Array<{ risk?: string; description?: string }>;
}

/** The image formats Didit takes, by their first bytes. */
const IMAGE_SIGNATURES: Array<{ type: string; magic: number[]; offset?: number }> = [
  { type: 'image/jpeg', magic: [0xff, 0xd8, 0xff] },
  { type: 'image/png', magic: [0x89, 0x50, 0x4e, 0x47] },
  { type: 'image/webp', magic: [0x57, 0x45, 0x42, 0x50], offset: 8 },
  { type: 'image/tiff', magic: [0x49, 0x49, 0x2a, 0x00] },
  { type: 'image/tiff', magic: [0x4d, 0x4d, 0x00, 0x2a] },
];

export function imageType(image: Buffer): string | undefined {
  return IMAGE_SIGNATURES.find(({ magic, offset = 0 }) => magic.every((byte, i) => image[offset + i] === byte))?.type;
}

function checkImage(image: Buffer, name: string): string {
  if (image.length > MAX_IMAGE_BYTES)
    throw new DiditError('didit_image_too_large', `${name} is ${image.length} bytes; Didit takes at most 5 MB`, 0);
  const type = imageType(image);
  if (!type) throw new DiditError('didit_image_format', `${name} is not a JPEG, PNG, WebP or TIFF image`, 0);
  return type;
}

/** Didit's error statuses as reason codes (docs: integration/api-errors). */
function statusCode(status: number): string {
  const known: Record<number, string> = {
    400: 'didit_bad_request',
    401: 'didit_unauthorized',
    402: 'didit_payment_required',
    403: 'didit_forbidden',
    404: 'didit_not_found',
    409: 'didit_conflict',
    429: 'didit_rate_limited',
  };
  return known[status] ?? (status >= 500 ? 'didit_unavailable' : `didit_http_${status}`);
}

/** Didit's error bodies have no one envelope: `detail`, a `code`, or fields keyed by name. */
function errorDetail(data: unknown): string {
  if (!s.isPlainObject(data)) return '';
  const parts = Object.entries(data)
    .filter(([key]) => key !== 'code')
    .map(
      ([key, value]) =>
        `${key === 'detail' ? '' : `${key}: `}${Array.isArray(value) ? value.join(' ') : String(value)}`,
    );
  const code = typeof data.code === 'string' ? ` (${data.code})` : '';
  return `${parts.join('; ').slice(0, 300)}${code}`;
}

function retryAfterSeconds(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds, 3600);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.min(3600, Math.ceil((date - Date.now()) / 1000)));
}

export class DiditClient {
  readonly displayUrl: string;
  private readonly http: AxiosInstance;
  private readonly retryDelaysMs: number[];

  constructor(options: DiditClientOptions) {
    const baseUrl = (options.baseUrl?.trim() || DIDIT_BASE_URL).replace(/\/+$/, '');
    this.displayUrl = redactUrl(baseUrl);
    if (!/^https?:\/\//.test(baseUrl))
      throw new DiditError('bad_url', `the Didit URL must be an http or https URL: ${this.displayUrl}`, 0);
    if (!options.apiKey) throw new DiditError('didit_no_api_key', 'the Didit API key is not set', 0);
    this.retryDelaysMs = options.retryDelaysMs ?? [500, 2000];
    this.http = axios.create({
      baseURL: baseUrl,
      timeout: options.timeoutMs ?? 20_000,
      httpsAgent: new https.Agent({ keepAlive: true, maxSockets: 4 }),
      maxContentLength: 4 * 1024 * 1024,
      maxRedirects: 0,
      validateStatus: () => true,
      headers: { 'x-api-key': options.apiKey, accept: 'application/json' },
    });
  }

  /** Creates a hosted verification session; with `vendorData`, an unfinished one for it comes back instead. */
  async createSession(request: SessionRequest): Promise<DiditSession> {
    uuid.parse(request.workflowId, 'workflow id');
    const body = {
      workflow_id: request.workflowId,
      ...(request.vendorData ? { vendor_data: request.vendorData } : {}),
      ...(request.callback ? { callback: request.callback } : {}),
      ...(request.metadata ? { metadata: request.metadata } : {}),
      ...(request.language ? { language: request.language } : {}),
    };
    try {
      JSON.stringify(body);
    } catch (err) {
      // Else axios fails inside the request and it would read as Didit being unreachable.
      throw new DiditError('didit_bad_metadata', `the metadata cannot be sent as JSON: ${(err as Error).message}`, 0);
    }
    const retries = request.vendorData ? this.retryDelaysMs : [];
    const data = await this.call({ method: 'post', url: '/v3/session/', data: body }, retries);
    const answer = parse(sessionAnswer, data, 'session');
    if (!answer.url)
      throw new DiditError(
        'didit_no_session_url',
        `Didit created session ${answer.session_id} without a link: the API key needs write access to sessions`,
        0,
      );
    return {
      sessionId: answer.session_id,
      ...(typeof answer.session_number === 'number' ? { sessionNumber: answer.session_number } : {}),
      url: answer.url,
      status: answer.status,
      ...(answer.vendor_data ? { vendorData: answer.vendor_data } : {}),
    };
  }

  async decision(sessionId: string): Promise<DiditDecision> {
    const id = s
      .string({ minLength: 1, maxLength: 128, pattern: /^[A-Za-z0-9_-]+$/, format: 'session id' })
      .parse(sessionId, 'session id');
    const data = await this.call({ method: 'get', url: `/v3/session/${id}/decision/` }, this.retryDelaysMs);
    const answer = parse(decisionAnswer, data, 'decision');
    const faceMatches = answer.face_matches ?? (answer.face_match ? [answer.face_match] : []);
    return {
      sessionId: answer.session_id,
      status: answer.status,
      ...(answer.vendor_data ? { vendorData: answer.vendor_data } : {}),
      ...(answer.workflow_id ? { workflowId: answer.workflow_id } : {}),
      features: answer.features ?? [],
      faceMatchScores: faceMatches
        .map(match => match.score)
        .filter((score): score is number => typeof score === 'number'),
      raw: data as Record<string, unknown>,
    };
  }

  /** 1:1 face comparison; checked locally first (size, format) so a bad image costs no credit. */
  async faceMatch(request: FaceMatchRequest): Promise<FaceMatch> {
    const form = new FormData();
    for (const [field, image, name] of [
      ['user_image', request.userImage, 'user image'],
      ['ref_image', request.refImage, 'reference image'],
    ] as const) {
      const type = checkImage(image, name);
      form.append(field, new Blob([new Uint8Array(image)], { type }), `${field}.${type.split('/')[1]}`);
    }
    if (request.declineThreshold !== undefined) {
      s.number({ min: 0, max: 100 }).parse(request.declineThreshold, 'decline threshold');
      form.append('face_match_score_decline_threshold', String(request.declineThreshold));
    }
    if (request.rotateImage !== undefined) form.append('rotate_image', String(request.rotateImage));
    if (request.saveApiRequest !== undefined) form.append('save_api_request', String(request.saveApiRequest));
    if (request.vendorData) form.append('vendor_data', request.vendorData);
    const data = await this.call({ method: 'post', url: '/v3/face-match/', data: form }, []);
    const answer = parse(faceMatchAnswer, data, 'face match');
    return {
      ...(answer.request_id ? { requestId: answer.request_id } : {}),
      status: answer.face_match.status,
      score: answer.face_match.score ?? null,
      warnings: (answer.face_match.warnings ?? []).map(w => ({
        ...(w.risk ? { risk: w.risk } : {}),
        ...(w.short_description ? { description: w.short_description } : {}),
      })),
    };
  }

  close(): void {
    (this.http.defaults.httpsAgent as https.Agent).destroy();
  }

  private async call(
    request: { method: 'get' | 'post'; url: string; data?: unknown },
    retryDelaysMs: number[],
  ): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once(request);
      } catch (err) {
        const retryable =
          err instanceof M2MError &&
          ['didit_unavailable', 'didit_timeout', 'didit_unreachable'].includes(err.code) &&
          attempt < retryDelaysMs.length;
        if (!retryable) throw err;
        await new Promise(resolve => setTimeout(resolve, retryDelaysMs[attempt]));
      }
    }
  }

  private async once(request: { method: 'get' | 'post'; url: string; data?: unknown }): Promise<unknown> {
    let response: AxiosResponse;
    try {
      response = await this.http.request(request);
    } catch (err) {
      const failed = transportError(err, {
        service: 'Didit',
        url: this.displayUrl,
        codes: { timeout: 'didit_timeout', unreachable: 'didit_unreachable', badResponse: 'didit_bad_response' },
      });
      throw new DiditError(failed.code, failed.message, 0);
    }
    if (response.status >= 200 && response.status < 300) return response.data;
    const detail = redirectNote(response) ?? errorDetail(response.data);
    throw new DiditError(
      statusCode(response.status),
      `Didit ${request.method.toUpperCase()} ${request.url}: HTTP ${response.status}${detail ? ` ${detail}` : ''}`,
      response.status,
      response.status === 429 ? retryAfterSeconds(response.headers['retry-after']) : undefined,
    );
  }
}

function parse<T>(schema: s.Schema<T>, data: unknown, what: string): T {
  try {
    return schema.parse(data, what);
  } catch (err) {
    throw new DiditError('didit_bad_response', `Didit sent an unexpected ${what} answer: ${(err as Error).message}`, 0);
  }
}
