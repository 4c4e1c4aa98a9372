/**
 * Client of identity API v1 (DESIGN.md §3) on axios: timeouts on every call, answers validated
 * by schema, and failures as ApiError with a stable code: the problem's `code` when the verifier
 * sent RFC 9457 problem+json, else one of `verifier_unreachable`, `verifier_timeout`,
 * `bad_response`, `http_<status>`.
 */
import axios, { type AxiosInstance, type AxiosResponse } from 'axios';
import * as http from 'node:http';
import * as https from 'node:https';
import { M2MError } from '../errors';
import * as s from '../schema';
import { normaliseUrl, redactUrl } from '../url';
import { redirectNote, transportError } from './transport-error';

export class ApiError extends M2MError {
  /** RFC 9457 problem document, when the server sent one. */
  readonly problem?: Record<string, unknown>;

  constructor(code: string, message: string, status: number, problem?: Record<string, unknown>) {
    super(code, message, status);
    this.problem = problem;
  }
}

export interface ApiClientOptions {
  /** The verifier's base URL, the one `/v1` hangs off; normalised, it is the `aud` of attestations. */
  baseUrl: string;
  enrollmentToken?: string;
  apiKey?: string;
  timeoutMs?: number;
}

const registerAnswer = s.object({
  deviceId: s.string({ pattern: s.patterns.deviceId }),
  status: s.literal('active', 'pending', 'revoked'),
});
const challengeAnswer = s.object({
  nonce: s.string({ pattern: s.patterns.base64url, minLength: 16, maxLength: 128 }),
  expiresAt: s.string({ maxLength: 64 }),
});
const attestAnswer = s.object({
  decision: s.literal('approved', 'declined', 'in_review'),
  reasons: s.array(s.string({ maxLength: 128 }), { maxItems: 64 }),
  token: s.optional(s.string({ maxLength: 8192 })),
  expiresAt: s.optional(s.string({ maxLength: 64 })),
  certificate: s.optional(s.string({ maxLength: 16 * 1024 })),
  certificateExpiresAt: s.optional(s.string({ maxLength: 64 })),
  sessionId: s.string({ maxLength: 128 }),
});

const introspectionAnswer = s.object({ active: s.boolean() });

const session = s.object({
  sessionId: s.string({ maxLength: 128 }),
  at: s.string({ maxLength: 64 }),
  decision: s.literal('approved', 'declined', 'in_review'),
  reasons: s.array(s.string({ maxLength: 128 }), { maxItems: 64 }),
  score: s.optional(s.number()),
  tokenExpiresAt: s.optional(s.string({ maxLength: 64 })),
});
const fleetDevice = s.object({
  deviceId: s.string({ pattern: s.patterns.deviceId }),
  status: s.literal('active', 'pending', 'revoked'),
  thumbprint: s.string({ maxLength: 128 }),
  metadata: s.optional(s.jsonValue()),
  createdAt: s.string({ maxLength: 64 }),
  updatedAt: s.string({ maxLength: 64 }),
  lastAttestation: s.optional(session),
});
const fleetPage = s.object({
  total: s.number({ integer: true, min: 0 }),
  devices: s.array(fleetDevice, { maxItems: 1000 }),
});
const deviceHistory = s.object({
  sessions: s.array(session, { maxItems: 1000 }),
  audit: s.array(
    s.object({
      at: s.string({ maxLength: 64 }),
      action: s.literal('active', 'pending', 'revoked', 'rekey_allowed', 'rekeyed', 'key_changed'),
      actor: s.string({ maxLength: 128 }),
      reason: s.optional(s.string({ maxLength: 500 })),
    }),
    { maxItems: 1000 },
  ),
});
const statusAnswer = s.object({ deviceId: s.string({ maxLength: 128 }), status: s.string({ maxLength: 16 }) });

export type FleetPage = s.Infer<typeof fleetPage>;
export type DeviceHistory = s.Infer<typeof deviceHistory>;

export type RegisterAnswer = s.Infer<typeof registerAnswer> & { created: boolean };
export type ChallengeAnswer = s.Infer<typeof challengeAnswer>;
export type AttestAnswer = s.Infer<typeof attestAnswer>;

export class IdentityApiClient {
  /** The normalised base URL: the `aud` of this device's attestations (lib/url). */
  readonly audience: string;
  /** The base URL without credentials, for messages. */
  readonly displayUrl: string;
  private readonly http: AxiosInstance;
  private readonly options: ApiClientOptions;

  constructor(options: ApiClientOptions) {
    this.options = options;
    const audience = normaliseUrl(options.baseUrl);
    this.displayUrl = redactUrl(options.baseUrl.trim());
    if (!audience)
      throw new ApiError(
        'bad_url',
        `the identity API URL must be an http or https URL: ${JSON.stringify(this.displayUrl)}`,
        0,
      );
    this.audience = audience;
    this.http = axios.create({
      // Credentials in the URL still reach axios (HTTP basic auth); only messages drop them.
      baseURL: options.baseUrl.trim().replace(/\/+$/, ''),
      timeout: options.timeoutMs ?? 10_000,
      // Keep-alive: a re-authenticating gateway talks to one verifier all day.
      httpAgent: new http.Agent({ keepAlive: true, maxSockets: 4 }),
      httpsAgent: new https.Agent({ keepAlive: true, maxSockets: 4 }),
      maxContentLength: 1024 * 1024,
      maxRedirects: 0,
      validateStatus: () => true,
      headers: { 'content-type': 'application/json', accept: 'application/json, application/problem+json' },
    });
  }

  async register(registration: string): Promise<RegisterAnswer> {
    const headers: Record<string, string> = this.options.enrollmentToken
      ? { authorization: `Bearer ${this.options.enrollmentToken}` }
      : {};
    const { status, data } = await this.call('post', '/v1/devices', { registration }, headers);
    return { ...answer(registerAnswer, data, 'registration'), created: status === 201 };
  }

  /** Moves the device to another key, signed by the old and the new one (buildKeyChange). */
  async changeKey(deviceId: string, keyChange: string): Promise<s.Infer<typeof registerAnswer>> {
    const path = `/v1/devices/${encodeURIComponent(deviceId)}/key`;
    return answer(registerAnswer, (await this.call('post', path, { keyChange })).data, 'key change');
  }

  async challenge(deviceId: string): Promise<ChallengeAnswer> {
    return answer(challengeAnswer, (await this.call('post', '/v1/challenges', { deviceId })).data, 'challenge');
  }

  async attest(attestation: string): Promise<AttestAnswer> {
    return answer(attestAnswer, (await this.call('post', '/v1/attestations', { attestation })).data, 'attestation');
  }

  /** RFC 7662 introspection (needs the admin key): whether the verifier considers `token` active. */
  async introspect(token: string): Promise<boolean> {
    const data = (await this.call('post', '/v1/tokens/introspect', { token }, this.adminHeaders())).data;
    return answer(introspectionAnswer, data, 'introspection').active;
  }

  /** A page of the fleet (admin key): devices with their latest attestation. */
  async listDevices(query: Record<string, string>): Promise<FleetPage> {
    const search = new URLSearchParams(query).toString();
    const data = (await this.call('get', `/v1/devices${search ? `?${search}` : ''}`, undefined, this.adminHeaders()))
      .data;
    return answer(fleetPage, data, 'device list');
  }

  /** A device's attestations and status changes (admin key). */
  async deviceHistory(deviceId: string): Promise<DeviceHistory> {
    const path = `/v1/devices/${encodeURIComponent(deviceId)}/history`;
    return answer(deviceHistory, (await this.call('get', path, undefined, this.adminHeaders())).data, 'history');
  }

  /** Revokes, approves or reinstates a device (admin key), recording who and why. */
  async setDeviceStatus(
    deviceId: string,
    action: 'revoke' | 'approve' | 'reinstate',
    audit: { actor: string; reason?: string },
  ): Promise<{ deviceId: string; status: string }> {
    const path = `/v1/devices/${encodeURIComponent(deviceId)}/${action}`;
    const data = (await this.call('post', path, audit, this.adminHeaders())).data;
    return answer(statusAnswer, data, 'status change');
  }

  /** Lets the device register a new key for 24 h (admin key), recording who and why. */
  async allowRekey(deviceId: string, audit: { actor: string; reason?: string }): Promise<{ deviceId: string }> {
    const path = `/v1/devices/${encodeURIComponent(deviceId)}/rekey`;
    const data = (await this.call('post', path, audit, this.adminHeaders())).data;
    return answer(s.object({ deviceId: s.string({ maxLength: 128 }) }), data, 're-key');
  }

  private adminHeaders(): Record<string, string> {
    return this.options.apiKey ? { 'x-api-key': this.options.apiKey } : {};
  }

  /**
   * The verifier's signed revocation list (lib/revocations), or `unchanged` when it still has
   * `etag`. Public: it needs no credential.
   */
  async revocations(etag?: string): Promise<{ jws: string; etag: string } | 'unchanged'> {
    const response = await this.call('get', '/v1/revocations', undefined, {
      accept: 'application/jwt, application/problem+json',
      ...(etag ? { 'if-none-match': etag } : {}),
    });
    if (response.status === 304) return 'unchanged';
    const jws = answer(s.string({ maxLength: 64 * 1024 * 1024 }), response.data, 'revocation list');
    return { jws, etag: String(response.headers.etag ?? '') };
  }

  /** Where the verifier publishes its token-signing keys. */
  get jwksUrl(): URL {
    return new URL(`${this.audience}/.well-known/jwks.json`);
  }

  async health(): Promise<unknown> {
    return (await this.call('get', '/v1/health')).data;
  }

  close(): void {
    (this.http.defaults.httpAgent as http.Agent).destroy();
    (this.http.defaults.httpsAgent as https.Agent).destroy();
  }

  private async call(method: 'get' | 'post', url: string, body?: unknown, headers: Record<string, string> = {}) {
    let response: AxiosResponse;
    try {
      response = await this.http.request({ method, url, data: body, headers });
    } catch (err) {
      const failed = transportError(err, {
        service: 'identity API',
        url: this.displayUrl,
        codes: { timeout: 'verifier_timeout', unreachable: 'verifier_unreachable', badResponse: 'bad_response' },
      });
      throw new ApiError(failed.code, failed.message, 0);
    }
    if ((response.status >= 200 && response.status < 300) || response.status === 304) return response;
    const problem = s.isPlainObject(response.data) ? response.data : undefined;
    const code = typeof problem?.code === 'string' ? problem.code : `http_${response.status}`;
    const detail =
      redirectNote(response) ??
      (typeof problem?.detail === 'string'
        ? problem.detail
        : typeof problem?.title === 'string'
          ? problem.title
          : response.status === 404
            ? // Not even a problem document: nothing of ours answers there.
              'HTTP 404, no identity API at this URL; check the base URL (an m2m-verifier in Node-RED serves under /m2m, e.g. http://host:1880/m2m)'
            : `HTTP ${response.status}`);
    throw new ApiError(code, `${method.toUpperCase()} ${this.displayUrl}${url}: ${detail}`, response.status, problem);
  }
}

function answer<T>(schema: s.Schema<T>, data: unknown, what: string): T {
  try {
    return schema.parse(data, what);
  } catch (err) {
    throw new ApiError('bad_response', `identity API sent an unexpected ${what} answer: ${(err as Error).message}`, 0);
  }
}
