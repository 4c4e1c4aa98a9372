/**
 * Identity API v1 (DESIGN.md §3) as plain operations, with no HTTP in sight: the HTTP layer
 * (./http) and the Node-RED node only translate requests into these calls.
 */
import * as crypto from 'node:crypto';
import { M2MError, SignatureError } from '../errors';
import { Ed25519PublicKey } from '../crypto/ed25519';
import { type PublicKey, publicKeyFromJwk } from '../crypto/keys';
import { type DecodedJws, JWS_TYPES, decodeJws, verifyDecoded } from '../crypto/jws';
import type { Infer } from '../schema';
import { REVOCATIONS_TYP, revocationEntries } from '../revocations';
import { normaliseUrl } from '../url';
import { type DeliveryOptions, DeliveryWorker } from './delivery';
import { orderedNonce, uuidv7 } from './ids';
import { decisionEvent, deviceEvent } from './events';
import { Metrics, type MetricsSnapshot, mergeSnapshots, renderPrometheus } from './metrics';
import { RateLimitedError, RateLimiter, type RateRule } from './rate-limit';
import * as schemas from './schemas';
import { DEFAULT_STORE_DEADLINE_MS, StoreUnavailableError, guardedStore } from './store/guarded';
import type {
  AuditAction,
  AuditEntry,
  DeliveryRecord,
  DeviceSummary,
  PurgeCounts,
  SubscriberRecord,
  VerifierStore,
} from './store/types';
import { type SubscriberConfig, toSubscriber } from './subscribers';
import { type CertificateOptions, CertificateIssuer } from './certificates';
import type { MosquittoOptions } from '../brokers/mosquitto';
import { type BrokerSink, mosquittoSink } from './broker-sink';
import { type KeyRotationOptions, MAX_CLOCK_SKEW_S, TokenService, keyRotationOptions } from './tokens';
import type { Decision, DeviceRecord, DeviceStatus, OutboxEvent, SessionRecord, WorkflowStep } from './types';
import { DEFAULT_WORKFLOW, runWorkflow } from './workflow';

export { MAX_CLOCK_SKEW_S };

export const NONCE_TTL_MS = 60_000;
/** The revocation list is rebuilt from the store at most this often (other processes' changes show within it). */
const REVOCATIONS_MAX_AGE_MS = 1000;
/** How long an admin's re-key lets the device's next registration bring another key. */
export const REKEY_WINDOW_MS = 24 * 3_600_000;
/** How often one attestation is decided again when its device changed while it was decided. */
const MAX_DECISION_ATTEMPTS = 4;
const PUBLIC_KEY_CACHE = 10_000;

/**
 * What a caller without credentials may make the verifier do. Challenges write a row each; a
 * bad signature on a known device's id writes a declined session (worth keeping for the
 * operator, up to a rate); an unknown device writes nothing.
 */
export interface VerifierLimits {
  challengesPerDevice: RateRule;
  challengesPerAddress: RateRule;
  /** Declined sessions recorded for attestations with a bad signature, per device id. */
  badSignaturesRecordedPerDevice: RateRule;
  /**
   * Wrong admin keys and enrollment tokens, per client address: past it, the address is answered
   * 429 before its credential is even compared, so guessing runs at this rate at most.
   */
  credentialFailuresPerAddress: RateRule;
}

export const DEFAULT_LIMITS: VerifierLimits = {
  challengesPerDevice: { burst: 10, perSecond: 1 },
  challengesPerAddress: { burst: 200, perSecond: 100 },
  badSignaturesRecordedPerDevice: { burst: 5, perSecond: 0.1 },
  credentialFailuresPerAddress: { burst: 10, perSecond: 0.2 },
};

/** Admin keys and enrollment tokens shorter than this are refused at start: they can be guessed. */
export const MIN_SECRET_LENGTH = 16;

/** The refusal of a configured secret that is too short to hold against guessing, or undefined. */
export function weakSecret(name: string, value: string | undefined): M2MError | undefined {
  if (value === undefined || value.length >= MIN_SECRET_LENGTH) return undefined;
  return new M2MError(
    'weak_secret',
    `the ${name} has ${value.length} characters; use at least ${MIN_SECRET_LENGTH}, e.g. 32 random ones (openssl rand -base64 24)`,
    500,
  );
}

/** How long rows are kept: expired nonces long enough to answer nonce_expired, sessions for audit. */
export interface Retention {
  expiredNoncesMs: number;
  sessionsMs: number;
  deliveredEventsMs: number;
  /** Deliveries that ran out of attempts stay listable and replayable this long. */
  deadDeliveriesMs: number;
  /** How often the purge runs. */
  purgeEveryMs: number;
}

export const DEFAULT_RETENTION: Retention = {
  expiredNoncesMs: 10 * 60_000,
  sessionsMs: 30 * 86_400_000,
  deliveredEventsMs: 7 * 86_400_000,
  deadDeliveriesMs: 30 * 86_400_000,
  purgeEveryMs: 60_000,
};

/** How long an approval with a certificate waits for the brokers to know the device. */
const BROKER_READY_WAIT_MS = 2000;

export interface VerifierOptions {
  store: VerifierStore;
  /** The URL `/v1` hangs off: the attestations' `aud`, the tokens' `iss`. */
  publicUrl: string;
  /** Audience of issued tokens; the public URL by default. */
  tokenAudience?: string;
  adminKey?: string;
  enrollmentToken?: string;
  /** Registrations wait in `pending` until an admin approves them. */
  manualApproval?: boolean;
  /**
   * With no enrollment token configured, accept registrations from loopback addresses only: the
   * single-box set-up where gateway and verifier share one Node-RED. Off by default.
   */
  loopbackEnrollment?: boolean;
  tokenTtlSeconds?: number;
  /** Token-signing key rotation (every 30 days, published an hour ahead, by default). */
  keyRotation?: Partial<KeyRotationOptions>;
  workflow?: WorkflowStep[];
  limits?: Partial<VerifierLimits>;
  retention?: Partial<Retention>;
  /** Where events are delivered as signed webhooks (DESIGN.md §4). */
  webhooks?: WebhookOptions;
  /** Issue short-lived client certificates in the answer to approved attestations that ask for one. */
  certificates?: CertificateOptions;
  /** Mosquitto brokers kept in step with the registry through their dynamic-security plugin. */
  mosquitto?: MosquittoOptions[];
  /** A webhook receiver or broker started failing (with why) or answers again. */
  onReceiverHealth?: DeliveryOptions['onReceiverHealth'];
  /**
   * The metrics of every process serving this API (`--workers N`: the primary gathers them);
   * this process's own by default.
   */
  metricsOfAllProcesses?: () => Promise<MetricsSnapshot[]>;
  /**
   * Where the rate limits' buckets live when several processes serve one port (`--workers N`: the
   * primary's); this process's own by default.
   */
  sharedRateLimits?: SharedRateLimits;
  /** A store call that has not answered after this fails with 503 store_unavailable (5 s by default). */
  storeDeadlineMs?: number;
  /** Told when the store stops answering (with the first error) and when it answers again. */
  onStoreAvailability?: (available: boolean, err?: unknown) => void;
  now?: () => number;
}

export interface WebhookOptions {
  subscribers: SubscriberConfig[];
  /** The longest wait before each retry (full jitter below it); its length is the number of retries. */
  retryCapsMs?: number[];
  timeoutMs?: number;
  pollMs?: number;
  onError?: (err: unknown) => void;
}

/** Takes one call from a bucket kept elsewhere (or, with `peek`, only looks); true when allowed. */
export type SharedRateLimits = (
  rule: keyof VerifierLimits,
  key: string,
  nowMs: number,
  peek?: boolean,
) => Promise<boolean>;

/** An event as in-process listeners get it: the webhook body and the id its deliveries carry. */
export interface VerifierEvent {
  id: string;
  type: string;
  timestamp: string;
  data: Record<string, unknown>;
}

export interface AttestationResult {
  decision: Decision;
  reasons: string[];
  token?: string;
  expiresAt?: string;
  /** PEM, when the attestation asked for one and was approved. */
  certificate?: string;
  certificateExpiresAt?: string;
  sessionId: string;
}

/** An attestation as the admin API shows it. */
export interface PublicSession {
  sessionId: string;
  at: string;
  decision: Decision;
  reasons: string[];
  /** The TinyML score the device sent, when it sent one. */
  score?: number;
  /** When the token an approval issued runs out. */
  tokenExpiresAt?: string;
}

export interface PublicAudit {
  at: string;
  action: AuditAction;
  actor: string;
  reason?: string;
}

export interface FleetDevice extends PublicDevice {
  lastAttestation?: PublicSession;
}

export interface PublicDevice {
  deviceId: string;
  status: DeviceStatus;
  jwk: DeviceRecord['jwk'];
  thumbprint: string;
  fingerprint: { salt: string; components: string[] };
  metadata: unknown;
  createdAt: string;
  updatedAt: string;
}

function sameSecret(presented: string, expected: string): boolean {
  // Hash first so the comparison is constant-time whatever the lengths.
  const digest = (value: string) => crypto.createHash('sha256').update(value).digest();
  return crypto.timingSafeEqual(digest(presented), digest(expected));
}

function isLoopback(address: string | undefined): boolean {
  return !!address && (/^127\./.test(address) || address === '::1' || /^::ffff:127\./.test(address));
}

export class Verifier {
  readonly publicUrl: string;
  private readonly store: VerifierStore;
  private readonly tokens: TokenService;
  private readonly options: VerifierOptions;
  private readonly now: () => number;
  /** Device keys parsed once: building a key object costs about as much as a verification. */
  private readonly publicKeys = new Map<string, PublicKey>();
  private readonly limiters: Record<keyof VerifierLimits, RateLimiter>;
  private readonly retention: Retention;
  private readonly purgeTimer: NodeJS.Timeout;
  private readonly keyTimer: NodeJS.Timeout;
  private purging?: Promise<unknown>;
  private refreshing?: Promise<unknown>;
  private readonly listeners = new Set<(event: VerifierEvent) => void>();
  private delivery?: DeliveryWorker;
  private certificates?: CertificateIssuer;
  private brokers: BrokerSink[] = [];
  private crlTimer?: NodeJS.Timeout;
  private readonly metrics: Metrics;
  private revocationList?: { jws: string; etag: string; at: number };
  private buildingRevocations?: Promise<{ jws: string; etag: string; at: number }>;

  private constructor(options: VerifierOptions, publicUrl: string, tokens: TokenService, metrics: Metrics) {
    this.options = options;
    this.store = options.store;
    this.metrics = metrics;
    this.publicUrl = publicUrl;
    this.tokens = tokens;
    this.now = options.now ?? Date.now;
    const limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.limiters = limiters(limits);
    this.retention = { ...DEFAULT_RETENTION, ...options.retention };
    this.purgeTimer = setInterval(() => {
      this.purge().catch(() => undefined);
    }, this.retention.purgeEveryMs).unref();
    this.keyTimer = setInterval(() => {
      this.refreshKeys().catch(() => undefined);
    }, tokens.rotation.refreshMs).unref();
  }

  /** Picks up keys other processes made and rotates when due; runs on a timer. */
  async refreshKeys(): Promise<void> {
    const run = this.tokens.refresh(this.now());
    this.refreshing = run.catch(() => undefined);
    return run;
  }

  static async create(given: VerifierOptions): Promise<Verifier> {
    const weak = weakSecret('admin key', given.adminKey) ?? weakSecret('enrollment token', given.enrollmentToken);
    if (weak) throw weak;
    const metrics = new Metrics();
    const store = guardedStore(given.store, {
      deadlineMs: given.storeDeadlineMs ?? DEFAULT_STORE_DEADLINE_MS,
      onFailure: () => metrics.count('m2m_store_errors_total'),
      onAvailability: given.onStoreAvailability,
    });
    const options = { ...given, store };
    const publicUrl = normaliseUrl(options.publicUrl);
    if (!publicUrl)
      throw new M2MError(
        'bad_config',
        `the public URL must be an http or https URL, not ${JSON.stringify(options.publicUrl)}`,
        500,
      );
    const tokens = await TokenService.open(
      options.store,
      publicUrl,
      options.tokenAudience ?? publicUrl,
      options.tokenTtlSeconds ?? 15 * 60,
      keyRotationOptions(options.keyRotation),
      (options.now ?? Date.now)(),
    );
    const verifier = new Verifier(options, publicUrl, tokens, metrics);
    if (options.certificates)
      verifier.certificates = await CertificateIssuer.open(
        options.store,
        options.certificates,
        tokens.ttlSeconds,
        new URL(publicUrl).host,
        (options.now ?? Date.now)(),
      );
    const crl = verifier.certificates ? () => verifier.certificateRevocations() : undefined;
    const sinks = (options.mosquitto ?? []).map(broker => mosquittoSink(broker, options.store, crl));
    verifier.brokers = sinks;
    const { subscribers = [], ...delivery } = options.webhooks ?? {};
    try {
      if (subscribers.length || sinks.length) {
        verifier.delivery = new DeliveryWorker({
          ...delivery,
          store: options.store,
          subscribers: subscribers.map(toSubscriber),
          sinks,
          now: options.now,
          onReceiverHealth: options.onReceiverHealth,
        });
        await verifier.delivery.start();
      }
      // A broker reading the CRL from a file refuses every client of a CA whose CRL ran out: it
      // gets a fresh one at start and twice a day.
      const crlBrokers = sinks.filter(sink => sink.dynsec.options.crlFile);
      if (crl && crlBrokers.length) {
        const publish = async () => {
          const text = await crl();
          for (const sink of crlBrokers) await sink.dynsec.publishCrl(text);
        };
        await publish();
        verifier.crlTimer = setInterval(() => publish().catch(() => undefined), 12 * 3600_000).unref();
      }
    } catch (err) {
      // The store is the caller's: everything else this verifier started stops.
      clearInterval(verifier.purgeTimer);
      clearInterval(verifier.keyTimer);
      clearInterval(verifier.crlTimer);
      await verifier.delivery?.close().catch(() => undefined);
      verifier.certificates?.close();
      throw err;
    }
    return verifier;
  }

  /** Calls `listener` with every event this verifier writes; the function returned stops that. */
  onEvent(listener: (event: VerifierEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** After an event is committed: wake the sender, tell in-process listeners. */
  private published(event: OutboxEvent): void {
    this.delivery?.notify();
    if (!this.listeners.size) return;
    const { type, timestamp, data } = event.payload as Omit<VerifierEvent, 'id'>;
    for (const listener of this.listeners) listener({ id: event.eventId, type, timestamp, data });
  }

  /** Deletes expired nonces, old sessions and delivered events (DEFAULT_RETENTION); runs on a timer. */
  async purge(): Promise<PurgeCounts> {
    const now = this.now();
    const run = this.store.purge({
      noncesExpired: now - this.retention.expiredNoncesMs,
      certificatesExpired: now,
      sessions: now - this.retention.sessionsMs,
      deliveredEvents: now - this.retention.deliveredEventsMs,
      deadDeliveries: now - this.retention.deadDeliveriesMs,
    });
    this.purging = run.catch(() => undefined);
    return run;
  }

  async checkAdmin(apiKey: string | undefined, remoteAddress = ''): Promise<void> {
    await this.checkCredential('admin', apiKey, remoteAddress);
  }

  /**
   * 401 when the credential is missing, 403 when it is wrong (DESIGN.md §3), 429 for an address
   * that was wrong too often lately, before anything is compared.
   */
  private async checkCredential(
    credential: 'admin' | 'enrollment',
    presented: string | undefined,
    remoteAddress: string,
  ): Promise<void> {
    const [expected, what] =
      credential === 'admin'
        ? [this.options.adminKey, 'admin API key (x-api-key)']
        : [this.options.enrollmentToken, 'enrollment token (Authorization: Bearer)'];
    if (!expected) throw new M2MError('forbidden', `${what} is not configured on this verifier`, 403);
    if (!presented) throw new M2MError('unauthorized', `${what} required`, 401);
    const now = this.now();
    if (!(await this.take('credentialFailuresPerAddress', remoteAddress, now, true))) {
      this.metrics.count('m2m_credential_refusals_total', { credential, outcome: 'throttled' });
      throw new RateLimitedError(
        `wrong credentials from ${remoteAddress || 'this client'}`,
        this.limiters.credentialFailuresPerAddress.retryAfterSeconds(),
      );
    }
    if (sameSecret(presented, expected)) return;
    this.metrics.count('m2m_credential_refusals_total', { credential, outcome: 'wrong' });
    await this.take('credentialFailuresPerAddress', remoteAddress, now);
    throw new M2MError('forbidden', `wrong ${what}`, 403);
  }

  async register(
    enrollmentToken: string | undefined,
    body: unknown,
    remoteAddress?: string,
  ): Promise<{ created: boolean; deviceId: string; status: DeviceStatus }> {
    const loopbackAllowed =
      !this.options.enrollmentToken && this.options.loopbackEnrollment && isLoopback(remoteAddress);
    if (!loopbackAllowed) await this.checkCredential('enrollment', enrollmentToken, remoteAddress ?? '');
    const { registration } = schemas.registrationBody.parse(body);
    const decoded = decodeJws(registration, JWS_TYPES.registration);
    const payload = schemas.registrationPayload.parse(decoded.payload, 'registration');
    // Proof of possession: the key in the payload must be the key that signed it, in its own algorithm.
    const publicKey = this.registrableKey(payload.jwk, decoded);
    const now = this.now();
    if (Math.abs(now / 1000 - payload.iat) > MAX_CLOCK_SKEW_S)
      throw new M2MError('stale_iat', 'registration iat is more than 5 minutes off', 400);

    const device: DeviceRecord = {
      deviceId: payload.deviceId,
      jwk: publicKey.toJwk(),
      thumbprint: publicKey.thumbprint(),
      fingerprint: payload.fingerprint,
      metadata: payload.metadata ?? {},
      status: this.options.manualApproval ? 'pending' : 'active',
      createdAt: now,
      updatedAt: now,
      generation: 0,
    };
    const registered = deviceEvent('device.registered', device, now);
    if (await this.store.insertDevice(device, registered)) {
      this.published(registered);
      return { created: true, deviceId: device.deviceId, status: device.status };
    }
    const known = await this.store.getDevice(device.deviceId);
    if (!known) throw new M2MError('internal', 'device vanished during registration', 500);
    if (known.status === 'revoked')
      throw new M2MError('device_revoked', `device ${known.deviceId} is revoked; an admin must reinstate it`, 403);
    if (known.thumbprint === device.thumbprint)
      return { created: false, deviceId: known.deviceId, status: known.status };
    // Another key: the device lost its keystore (a re-imaged gateway). Only an admin's re-key
    // window lets it in; the device's word alone never does.
    if ((known.rekeyUntil ?? 0) >= now) {
      const rekeyed = deviceEvent('device.rekeyed', { ...known, metadata: device.metadata }, now, {
        actor: 'device',
        reason: 're-registered in a re-key window an admin opened',
      });
      const replaced = await this.store.replaceDeviceKey(
        known.deviceId,
        known.thumbprint,
        device,
        { inWindow: true },
        rekeyed,
        now,
        { action: 'rekeyed', actor: 'device', reason: `new key ${device.thumbprint}` },
      );
      if (replaced) {
        this.revocationsChanged();
        this.published(rekeyed);
        return { created: true, deviceId: known.deviceId, status: known.status };
      }
    }
    throw new M2MError(
      'key_conflict',
      `another key is registered for ${known.deviceId}; if its keystore was lost, an admin can allow a re-key ` +
        '(fleet sidebar, or POST /v1/devices/{id}/rekey) and the device registers again',
      409,
    );
  }

  /**
   * Moves a device to another key on the word of both keys (DESIGN.md §2: no admin needed): the
   * new key signs the change, and inside it the registered key signs its consent to that very
   * key. A file key moves into a TPM or an HSM this way without re-enrolment. Audited.
   */
  async changeKey(deviceId: string, body: unknown): Promise<{ deviceId: string; status: DeviceStatus }> {
    const id = schemas.deviceIdSchema.parse(deviceId, 'deviceId');
    const { keyChange } = schemas.keyChangeBody.parse(body);
    const decoded = decodeJws(keyChange, JWS_TYPES.keyChange);
    const payload = schemas.keyChangePayload.parse(decoded.payload, 'key change');
    const next = this.registrableKey(payload.jwk, decoded);
    const now = this.now();
    if (payload.deviceId !== id) throw new M2MError('invalid_request', 'the key change is for another device', 400);
    if (Math.abs(now / 1000 - payload.iat) > MAX_CLOCK_SKEW_S)
      throw new M2MError('stale_iat', 'key change iat is more than 5 minutes off', 400);
    const device = await this.store.getDevice(id);
    if (!device) throw new M2MError('device_unknown', `no device ${id}`, 404);
    if (device.status === 'revoked')
      throw new M2MError('device_revoked', `device ${id} is revoked; an admin must reinstate it`, 403);
    const previous = decodeJws(payload.previous, JWS_TYPES.keyChange);
    const current = this.publicKey(device);
    if (!current || !verifyDecoded(previous, current))
      throw new SignatureError('bad_signature', 'the key change is not signed by the registered key');
    const consent = schemas.keyChangeConsent.parse(previous.payload, 'previous');
    if (consent.deviceId !== id || consent.newKey !== next.thumbprint())
      throw new SignatureError('bad_signature', 'the registered key consented to another key');
    if (Math.abs(now / 1000 - consent.iat) > MAX_CLOCK_SKEW_S)
      throw new M2MError('stale_iat', 'the consent iat is more than 5 minutes off', 400);
    const key = {
      jwk: next.toJwk(),
      thumbprint: next.thumbprint(),
      fingerprint: payload.fingerprint,
      metadata: payload.metadata ?? {},
    };
    const event = deviceEvent('device.key_changed', { ...device, metadata: key.metadata }, now, {
      actor: 'device',
      reason: `from ${device.thumbprint} to ${key.thumbprint}, signed by both`,
    });
    const changed = await this.store.replaceDeviceKey(id, device.thumbprint, key, { inWindow: false }, event, now, {
      action: 'key_changed',
      actor: 'device',
      reason: `new key ${key.thumbprint}`,
    });
    if (!changed) throw new M2MError('wrong_status', `the key of ${id} changed meanwhile; try again`, 409);
    this.revocationsChanged();
    this.published(event);
    return { deviceId: id, status: device.status };
  }

  /**
   * A key that may be registered, from a JWK and the JWS that must be signed by it in its own
   * algorithm: canonical, no small-order Ed25519 point, P-256 on the curve.
   */
  private registrableKey(jwk: unknown, signed: DecodedJws): PublicKey {
    const publicKey = publicKeyFromJwk(jwk);
    if (publicKey instanceof Ed25519PublicKey && !publicKey.isPrimeOrder())
      throw new SignatureError('bad_key', 'the key has a small-order component');
    if (signed.header.alg !== publicKey.alg)
      throw new SignatureError(
        'unsupported_alg',
        `a ${publicKey.alg} key signs with ${publicKey.alg}, not ${signed.header.alg}`,
      );
    if (!verifyDecoded(signed, publicKey))
      throw new SignatureError('bad_signature', 'not signed by the key it carries');
    return publicKey;
  }

  /**
   * Lets a device that lost its key register a new one: its next registration with another key
   * replaces the key (its tokens die with the old one) within `REKEY_WINDOW_MS`. Audited.
   */
  async allowRekey(deviceId: string, audit: AuditEntry): Promise<{ deviceId: string; rekeyUntil: string }> {
    const id = schemas.deviceIdSchema.parse(deviceId, 'deviceId');
    const device = await this.store.getDevice(id);
    if (!device) throw new M2MError('device_unknown', `no device ${id}`, 404);
    const now = this.now();
    const until = now + REKEY_WINDOW_MS;
    const event = deviceEvent('device.rekey_allowed', device, now, audit);
    if (!(await this.store.allowRekey(id, until, event, now, audit)))
      throw new M2MError('wrong_status', `cannot allow a re-key of a device that is ${device.status}`, 409);
    this.published(event);
    return { deviceId: id, rekeyUntil: new Date(until).toISOString() };
  }

  async challenge(body: unknown, remoteAddress = ''): Promise<{ nonce: string; expiresAt: string }> {
    const { deviceId } = schemas.challengeBody.parse(body);
    const now = this.now();
    await this.limit('challengesPerAddress', remoteAddress, now, `challenges from ${remoteAddress || 'this client'}`);
    const device = await this.store.getDevice(deviceId);
    if (!device) throw new M2MError('device_unknown', `no device ${deviceId}`, 404);
    // Per device and caller: anyone may ask for a device's challenges, and a bucket shared by all
    // callers would let one of them keep the device itself from attesting.
    await this.limit(
      'challengesPerDevice',
      `${deviceId} ${remoteAddress}`,
      now,
      `challenges for ${deviceId} from ${remoteAddress || 'this client'}`,
    );
    if (device.status === 'revoked') {
      // Refused (404, DESIGN.md §3) and recorded as a declined attempt, within the challenge rate:
      // the operator sees a revoked gateway still trying, and its flow the true reason.
      await this.recordDeclined(uuidv7(now), deviceId, 'device_revoked', now);
      this.countDecision('declined', ['device_revoked']);
      throw new M2MError('device_revoked', `device ${deviceId} is revoked`, 404);
    }
    const nonce = orderedNonce(now);
    const expiresAt = now + NONCE_TTL_MS;
    await this.store.insertNonce({ nonce, deviceId, expiresAt });
    return { nonce, expiresAt: new Date(expiresAt).toISOString() };
  }

  async attest(body: unknown): Promise<AttestationResult> {
    const started = performance.now();
    const result = await this.decide(body);
    this.metrics.observe('m2m_attestation_duration_seconds', (performance.now() - started) / 1000);
    this.countDecision(result.decision, result.reasons);
    return result;
  }

  private countDecision(decision: Decision, reasons: string[]): void {
    this.metrics.count('m2m_attestations_total', { decision });
    for (const reason of reasons) this.metrics.count('m2m_decision_reasons_total', { decision, reason });
  }

  private async decide(body: unknown): Promise<AttestationResult> {
    const { attestation } = schemas.attestationBody.parse(body);
    const decoded = decodeJws(attestation, JWS_TYPES.attestation);
    const payload = schemas.attestationPayload.parse(decoded.payload, 'attestation');
    // A certificate request is checked before anything is decided or written: a bad one is the
    // caller's mistake (400), not the device's decision.
    const certificateAsk = payload.certificate
      ? await this.issuer(400).check(payload.certificate, payload.iss)
      : undefined;
    const now = this.now();
    const sessionId = uuidv7(now);
    const declined = (reason: string): AttestationResult => ({ decision: 'declined', reasons: [reason], sessionId });

    // The device is read again whenever it changed between this read and the nonce's consumption
    // (a revocation, a reinstatement, a new key): the decision is always about the device as it
    // is when the nonce is spent.
    for (let attempt = 0; attempt < MAX_DECISION_ATTEMPTS; attempt++) {
      const device = await this.store.getDevice(payload.iss);
      // Neither an unknown device, a bad signature nor a spent nonce writes anything (each can
      // be sent by anyone, as often as they like), except that a bad signature on a known id is
      // recorded for the operator up to a rate.
      if (!device) return declined('device_unknown');
      const key = this.publicKey(device);
      // A key registered before keys were checked, and refused by today's rules, proves nothing.
      if (!key) return declined('bad_key');
      if (!verifyDecoded(decoded, key)) {
        // An algorithm that is not the key's is refused whatever the signature: wrong_alg says so.
        const reason = decoded.header.alg === key.alg ? 'bad_signature' : 'wrong_alg';
        if (await this.take('badSignaturesRecordedPerDevice', device.deviceId, now))
          await this.recordDeclined(sessionId, device.deviceId, reason, now);
        return declined(reason);
      }

      const workflow = device.workflow ?? this.options.workflow ?? DEFAULT_WORKFLOW;
      const checks = this.checkClaims(payload, device, now);
      const result = runWorkflow(workflow, {
        signatureValid: true,
        registeredFingerprint: device.fingerprint,
        fingerprint: payload.evidence?.fingerprint,
        tinyml: payload.evidence?.tinyml,
        keyStorage: (device.metadata as { keyStorage?: unknown } | null)?.keyStorage,
      });
      // A salt mismatch and a failed k-of-n match both say fingerprint_mismatch: report it once.
      const reasons = [...new Set([...checks, ...result.reasons])];
      const session: SessionRecord = {
        sessionId,
        deviceId: device.deviceId,
        decision: checks.length > 0 ? 'declined' : result.decision,
        reasons,
        score: result.score,
        createdAt: now,
      };
      const event = decisionEvent(session, device.workflow ? `device:${device.deviceId}` : 'default', now);
      const { outcome } = await this.store.consumeNonceAndRecord(payload.nonce, device, now, () => ({
        session,
        event,
      }));
      if (outcome === 'device_changed') continue;
      if (outcome !== 'consumed') return declined(outcome);
      this.published(event);
      const answer: AttestationResult = { decision: session.decision, reasons: session.reasons, sessionId };
      if (session.decision === 'approved') {
        const certificate = certificateAsk
          ? await this.issuer().issue(device.deviceId, sessionId, certificateAsk, now)
          : undefined;
        if (certificate) await this.brokersReady(device.deviceId);
        const issued = this.tokens.issue(
          {
            sub: device.deviceId,
            jkt: device.thumbprint,
            amr: result.passed,
            workflow: workflow.map(step => step.step),
            score: result.score,
            sessionId,
            generation: device.generation,
            certificateThumbprint: certificate?.thumbprint,
          },
          now,
        );
        answer.token = issued.token;
        answer.expiresAt = new Date(issued.expiresAt).toISOString();
        if (certificate) {
          answer.certificate = certificate.pem;
          answer.certificateExpiresAt = new Date(certificate.notAfter).toISOString();
        }
      }
      return answer;
    }
    // The device changed under every attempt: an operator flipping it faster than it attests.
    throw new M2MError('device_busy', `device ${payload.iss} changed during every attempt; try again`, 503, {
      retryAfter: 1,
    });
  }

  private take(rule: keyof VerifierLimits, key: string, now: number, peek = false): Promise<boolean> {
    return (
      this.options.sharedRateLimits?.(rule, key, now, peek) ??
      Promise.resolve(peek ? this.limiters[rule].peek(key, now) : this.limiters[rule].take(key, now))
    );
  }

  /** Takes one call, or refuses it: 429 with the wait. */
  private async limit(rule: keyof VerifierLimits, key: string, now: number, what: string): Promise<void> {
    if (!(await this.take(rule, key, now))) throw new RateLimitedError(what, this.limiters[rule].retryAfterSeconds());
  }

  /** Records an attempt declined before any nonce could be consumed, and publishes its event. */
  private async recordDeclined(sessionId: string, deviceId: string, reason: string, now: number): Promise<void> {
    const session: SessionRecord = { sessionId, deviceId, decision: 'declined', reasons: [reason], createdAt: now };
    const event = decisionEvent(session, 'default', now);
    await this.store.recordSession(session, event);
    this.published(event);
  }

  private publicKey(device: DeviceRecord): PublicKey | undefined {
    let key = this.publicKeys.get(device.thumbprint);
    if (!key) {
      try {
        key = publicKeyFromJwk(device.jwk);
      } catch {
        return undefined;
      }
      if (this.publicKeys.size >= PUBLIC_KEY_CACHE) this.publicKeys.delete(this.publicKeys.keys().next().value!);
      this.publicKeys.set(device.thumbprint, key);
    }
    return key;
  }

  /** Checks that decline whatever the workflow says. */
  private checkClaims(payload: Infer<typeof schemas.attestationPayload>, device: DeviceRecord, now: number): string[] {
    const reasons: string[] = [];
    if (device.status === 'revoked') reasons.push('device_revoked');
    if (device.status === 'pending') reasons.push('device_pending');
    if (normaliseUrl(payload.aud) !== this.publicUrl) reasons.push('wrong_aud');
    if (Math.abs(now / 1000 - payload.iat) > MAX_CLOCK_SKEW_S) reasons.push('stale_iat');
    const salt = payload.evidence?.fingerprint?.salt;
    if (salt !== undefined && salt !== device.fingerprint.salt) reasons.push('fingerprint_mismatch');
    return reasons;
  }

  /** `audit`: who asked and why, kept in the device's history and sent with the event. */
  async setStatus(
    deviceId: string,
    action: 'revoke' | 'approve' | 'reinstate',
    audit?: AuditEntry,
  ): Promise<{ deviceId: string; status: DeviceStatus }> {
    const id = schemas.deviceIdSchema.parse(deviceId, 'deviceId');
    const transitions = {
      revoke: { to: 'revoked', from: ['active', 'pending', 'revoked'], event: 'device.revoked' },
      approve: { to: 'active', from: ['pending', 'active'], event: 'device.approved' },
      reinstate: { to: 'active', from: ['revoked', 'active'], event: 'device.reinstated' },
    } as const;
    const { to, from, event } = transitions[action];
    const device = await this.store.getDevice(id);
    if (!device) throw new M2MError('device_unknown', `no device ${id}`, 404);
    const now = this.now();
    const written = deviceEvent(event, { ...device, status: to }, now, audit);
    if (!(await this.store.setDeviceStatus(id, to, [...from], written, now, audit)))
      throw new M2MError('wrong_status', `cannot ${action} a device that is ${device.status}`, 409);
    this.revocationsChanged();
    this.published(written);
    return { deviceId: id, status: to };
  }

  /** A page of the fleet, each device with its latest attestation. */
  async listDevices(
    query: Record<string, string | undefined> = {},
  ): Promise<{ total: number; devices: FleetDevice[] }> {
    const { offset, limit, status, q } = schemas.deviceQuery.parse(query, 'query');
    const page = await this.store.listDevices({
      offset: offset ? Number(offset) : 0,
      limit: limit ? Number(limit) : 1000,
      status,
      search: q,
    });
    return { total: page.total, devices: page.devices.map(device => this.fleetView(device)) };
  }

  /** What a device did lately: its attestations and who changed its status, newest first. */
  async deviceHistory(deviceId: string): Promise<{ sessions: PublicSession[]; audit: PublicAudit[] }> {
    const id = schemas.deviceIdSchema.parse(deviceId, 'deviceId');
    if (!(await this.store.getDevice(id))) throw new M2MError('device_unknown', `no device ${id}`, 404);
    const { sessions, audit } = await this.store.deviceHistory(id, 50);
    return {
      sessions: sessions.map(session => this.sessionView(session)),
      audit: audit.map(({ deviceId: _device, at, ...entry }) => ({ ...entry, at: new Date(at).toISOString() })),
    };
  }

  private sessionView(session: SessionRecord): PublicSession {
    const expires = session.decision === 'approved' ? session.createdAt + this.tokens.ttlSeconds * 1000 : undefined;
    return {
      sessionId: session.sessionId,
      at: new Date(session.createdAt).toISOString(),
      decision: session.decision,
      reasons: session.reasons,
      ...(session.score === undefined ? {} : { score: session.score }),
      ...(expires ? { tokenExpiresAt: new Date(expires).toISOString() } : {}),
    };
  }

  private fleetView(device: DeviceSummary): FleetDevice {
    return {
      ...publicView(device),
      ...(device.lastSession ? { lastAttestation: this.sessionView(device.lastSession) } : {}),
    };
  }

  async getDevice(deviceId: string): Promise<PublicDevice> {
    const device = await this.store.getDevice(schemas.deviceIdSchema.parse(deviceId, 'deviceId'));
    if (!device) throw new M2MError('device_unknown', `no device ${deviceId}`, 404);
    return publicView(device);
  }

  /**
   * RFC 7662: `{active: false}` for anything but a current token of an active device issued since
   * its last revocation.
   */
  async introspect(body: unknown): Promise<Record<string, unknown>> {
    const { token } = schemas.introspectionBody.parse(body);
    const claims = await this.tokens.verify(token, this.now());
    if (!claims?.sub) return { active: false };
    const device = await this.store.getDevice(claims.sub);
    const generation = (claims.m2m as { generation?: unknown } | undefined)?.generation ?? 0;
    if (device?.status !== 'active' || generation !== device.generation) return { active: false };
    return { active: true, token_type: 'Bearer', ...claims };
  }

  jwks(): { keys: Array<Record<string, string>> } {
    return this.tokens.jwks();
  }

  /**
   * The signed revocation list (lib/revocations), rebuilt from the store at most once a
   * second (sooner after a status change here), and its ETag: receivers poll it every few seconds
   * and mostly hear 304.
   */
  /**
   * Before a certificate goes out, the brokers kept in step know the device: else its first
   * publishes would meet a broker that has never heard of it. Bounded: a broker that does not
   * answer gets the change from the outbox, and the attestation is not held up for it.
   */
  private async brokersReady(deviceId: string): Promise<void> {
    if (!this.brokers.length) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(this.brokers.map(broker => broker.ready(deviceId))),
      new Promise(resolve => {
        timer = setTimeout(resolve, BROKER_READY_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
  }

  /** A device was revoked, reinstated or moved to another key: the lists built from that are built again. */
  private revocationsChanged(): void {
    this.revocationList = undefined;
    this.certificates?.forgetCrl();
  }

  /** The CA certificate devices' certificates chain to (PEM), for brokers to trust. */
  certificateAuthority(): string {
    return this.issuer().authority.pem;
  }

  /** The CRL of valid certificates whose device is revoked (PEM), for brokers that read one. */
  async certificateRevocations(): Promise<string> {
    return (await this.issuer().crl(this.now())).pem;
  }

  /** The certificate issuer; certificates_off (404 for its routes, 400 for an attestation asking) without one. */
  private issuer(status = 404): CertificateIssuer {
    if (!this.certificates)
      throw new M2MError(
        'certificates_off',
        'this verifier issues no certificates (start it with certificates on)',
        status,
      );
    return this.certificates;
  }

  async revocations(): Promise<{ jws: string; etag: string }> {
    const now = this.now();
    if (this.revocationList && now - this.revocationList.at < REVOCATIONS_MAX_AGE_MS) return this.revocationList;
    this.buildingRevocations ??= this.store
      .listRevocations()
      .then(records => {
        const devices = revocationEntries(records);
        const etag = `"${crypto.createHash('sha256').update(JSON.stringify(devices)).digest('base64url').slice(0, 27)}"`;
        const jws =
          this.revocationList?.etag === etag
            ? this.revocationList.jws
            : this.tokens.signDocument({ devices }, REVOCATIONS_TYP, now);
        this.revocationList = { jws, etag, at: now };
        return this.revocationList;
      })
      .finally(() => {
        this.buildingRevocations = undefined;
      });
    return this.buildingRevocations;
  }

  /** Liveness and the store's; anyone may ask, so a failure says nothing of where the store is or why. */
  async health(): Promise<{ status: 'ok'; store: 'ok' }> {
    try {
      await this.store.ping();
    } catch (err) {
      throw new StoreUnavailableError('the store is not reachable or not ready', err);
    }
    return { status: 'ok', store: 'ok' };
  }

  /** This process's counters, for whoever sums those of several. */
  metricsSnapshot(): MetricsSnapshot {
    return this.metrics.snapshot();
  }

  /** Prometheus text: counters of every process serving this API, outbox gauges from the store. */
  async metricsText(): Promise<string> {
    const snapshots = (await this.options.metricsOfAllProcesses?.()) ?? [this.metricsSnapshot()];
    // With the database down the counters still matter most (m2m_store_errors_total among them).
    const outbox = await this.store.outboxStats().catch(() => undefined);
    return renderPrometheus(mergeSnapshots(snapshots), {
      ...(outbox && {
        m2m_outbox_events_waiting: outbox.unfanned,
        m2m_webhook_deliveries_pending: outbox.pending,
        m2m_webhook_deliveries_dead: outbox.dead,
      }),
      m2m_verifier_processes: snapshots.length,
    });
  }

  async listSubscribers(): Promise<SubscriberRecord[]> {
    return this.store.listSubscribers();
  }

  /** Delivers to a subscriber again after it answered 410 Gone. */
  async enableSubscriber(id: string): Promise<SubscriberRecord> {
    const subscriberId = schemas.subscriberIdSchema.parse(id, 'subscriber id');
    if (!(await this.store.setSubscriberStatus(subscriberId, 'active', null, this.now())))
      throw new M2MError('subscriber_unknown', `no subscriber ${subscriberId}`, 404);
    this.delivery?.notify();
    return (await this.store.listSubscribers()).find(subscriber => subscriber.id === subscriberId)!;
  }

  async listDeliveries(query: { status?: string; limit?: string }): Promise<DeliveryRecord[]> {
    const { status, limit } = schemas.deliveryQuery.parse(query, 'query');
    return this.store.listDeliveries({ status, limit: limit ? Number(limit) : 100 });
  }

  /** Sends a dead (or delivered) event to its subscriber again, attempts counted afresh. */
  async replayDelivery(id: string): Promise<{ id: number; status: 'pending' }> {
    const deliveryId = Number(schemas.deliveryIdSchema.parse(id, 'delivery id'));
    if (!(await this.store.replayDelivery(deliveryId, this.now())))
      throw new M2MError('wrong_status', `no dead or delivered delivery ${deliveryId}`, 409);
    this.delivery?.notify();
    return { id: deliveryId, status: 'pending' };
  }

  async close(): Promise<void> {
    clearInterval(this.purgeTimer);
    clearInterval(this.keyTimer);
    clearInterval(this.crlTimer);
    await this.delivery?.close();
    this.certificates?.close();
    await this.purging;
    await this.refreshing;
    await this.store.close();
  }
}

/** One bucket set per rule, for a verifier or the primary of several. */
export function limiters(limits: VerifierLimits): Record<keyof VerifierLimits, RateLimiter> {
  return Object.fromEntries(Object.entries(limits).map(([rule, limit]) => [rule, new RateLimiter(limit)])) as Record<
    keyof VerifierLimits,
    RateLimiter
  >;
}

function publicView(device: DeviceRecord): PublicDevice {
  return {
    deviceId: device.deviceId,
    status: device.status,
    jwk: device.jwk,
    thumbprint: device.thumbprint,
    fingerprint: { salt: device.fingerprint.salt, components: Object.keys(device.fingerprint.components) },
    metadata: device.metadata,
    createdAt: new Date(device.createdAt).toISOString(),
    updatedAt: new Date(device.updatedAt).toISOString(),
  };
}
