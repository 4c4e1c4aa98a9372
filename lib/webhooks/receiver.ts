/**
 * What m2m-webhook-in does with one request, without Node-RED: check the signature on the exact
 * bytes (Standard Webhooks, then Didit's scheme), and describe the event the same way whoever sent
 * it: `{deviceId, decision, status, reasons, sessionId, eventId, scheme, trusted}`.
 */
import * as crypto from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { type DiditScheme, SIMPLE_SIGNED_FIELDS, hasDiditHeaders, verifyDidit } from './didit';
import { diditCanonicalV2 } from './python-json';
import { SECRET_PREFIX, WebhookError, secretKey, verifyStandard } from './standard';

/** How the event was vouched for: a signature scheme, or handed over inside one process. */
export type Scheme = 'standard' | DiditScheme | 'in-process';
export type Decision = 'approved' | 'declined' | 'in_review';

export interface WebhookFacts {
  /** The event type: ours (`attestation.decided`, `device.revoked`, ...) or Didit's `webhook_type`. */
  type?: string;
  deviceId?: string;
  decision?: Decision;
  /** The sender's own status word: our decision or device status, or Didit's `Approved`, `In Review`, ... */
  status?: string;
  reasons: string[];
  sessionId?: string;
  score?: number | null;
  eventId: string;
  scheme: Scheme;
  /** Every field of the event is covered by the signature. */
  trusted: boolean;
  /** Fields present but not covered by the signature (X-Signature-Simple covers the envelope only). */
  untrusted?: string[];
}

export interface ReceivedWebhook {
  /** The key to drop duplicates by: the event id, or for an envelope-only signature the signed envelope. */
  dedupeKey: string;
  /**
   * Keys this delivery also stands for, remembered with it: a fully signed Didit event's envelope,
   * so the envelope-only signature Didit sends beside it cannot bring it back under another id.
   */
  alsoSeen?: string[];
  facts: WebhookFacts;
  event: unknown;
}

const DIDIT_DECISIONS: Record<string, Decision> = {
  Approved: 'approved',
  Declined: 'declined',
  'In Review': 'in_review',
};
const DECISIONS = new Set<string>(['approved', 'declined', 'in_review']);

const text = (value: unknown) => (typeof value === 'string' ? value : undefined);

function parseEvent(body: Buffer): Record<string, unknown> {
  let event: unknown;
  try {
    event = JSON.parse(body.toString('utf8'));
  } catch {
    throw new WebhookError('malformed_body', 'body is not valid JSON');
  }
  if (!event || typeof event !== 'object' || Array.isArray(event))
    throw new WebhookError('malformed_body', 'body is not a JSON object');
  return event as Record<string, unknown>;
}

/** Our verifier's events (DESIGN.md §4: `{type, timestamp, data}`), or any Standard Webhooks event. */
export function eventFacts(event: Record<string, unknown>, eventId: string, scheme: Scheme): WebhookFacts {
  const data = (event.data && typeof event.data === 'object' ? event.data : {}) as Record<string, unknown>;
  const decision = text(data.decision);
  return {
    type: text(event.type),
    deviceId: text(data.deviceId),
    decision: decision && DECISIONS.has(decision) ? (decision as Decision) : undefined,
    status: text(data.status) ?? decision,
    reasons: Array.isArray(data.reasons) ? data.reasons.filter(reason => typeof reason === 'string') : [],
    sessionId: text(data.sessionId),
    score: typeof data.score === 'number' || data.score === null ? data.score : undefined,
    eventId,
    scheme,
    trusted: true,
  };
}

/**
 * The id of a Didit event without an `event_id`: a digest of what was signed, so two different
 * events never share one (session, status and timestamp do: a status and a data update in the
 * same second) and a re-encoded copy of one event keeps it.
 */
function contentId(body: Buffer): string {
  let signed: string;
  try {
    signed = diditCanonicalV2(body.toString('utf8'));
  } catch {
    signed = body.toString('utf8');
  }
  return `sha256:${crypto.createHash('sha256').update(signed).digest('base64url')}`;
}

/** Didit's events: the device is the session's `vendor_data`, the decision its `status`. */
function diditFacts(event: Record<string, unknown>, scheme: DiditScheme, body: Buffer): WebhookFacts {
  const status = text(event.status);
  const signed = new Set<string>(SIMPLE_SIGNED_FIELDS);
  const untrusted = scheme === 'didit-simple' ? Object.keys(event).filter(field => !signed.has(field)) : [];
  return {
    type: text(event.webhook_type),
    deviceId: text(event.vendor_data),
    decision: status ? DIDIT_DECISIONS[status] : undefined,
    status,
    reasons: [],
    sessionId: text(event.session_id),
    eventId: text(event.event_id) ?? contentId(body),
    scheme,
    trusted: untrusted.length === 0,
    ...(untrusted.length ? { untrusted } : {}),
  };
}

export interface ReceiverOptions {
  /** `whsec_` secrets for Standard Webhooks and plain secrets for Didit's scheme; several during a rotation. */
  secrets: string[];
  now?: () => number;
}

export class WebhookReceiver {
  private readonly standardKeys: Buffer[];
  /**
   * The secrets tried on Didit's headers: not the `whsec_` ones. Our verifier also puts an
   * X-Signature keyed with its whsec_ secret on each delivery, for receivers built for Didit's
   * scheme; accepting it here would let anyone strip the Standard headers from a captured
   * delivery and replay it under a fresh id, past the Standard timestamp and the dedupe.
   */
  private readonly diditSecrets: string[];
  private readonly now: () => number;

  constructor(options: ReceiverOptions) {
    const secrets = options.secrets.filter(Boolean);
    this.standardKeys = secrets.map(secretKey).filter((key): key is Buffer => !!key);
    this.diditSecrets = secrets.filter(secret => !secret.startsWith(SECRET_PREFIX));
    this.now = options.now ?? Date.now;
  }

  private signedForDidit(header: (name: string) => string | undefined): boolean {
    return this.diditSecrets.length > 0 && hasDiditHeaders(header);
  }

  /** Throws WebhookError (401 signature/timestamp, 400 body) for anything it cannot vouch for. */
  receive(body: Buffer, headers: IncomingHttpHeaders): ReceivedWebhook {
    const header = (name: string) => {
      const value = headers[name];
      return Array.isArray(value) ? value[0] : value;
    };
    const now = this.now();
    let failure: WebhookError | undefined;
    if (header('webhook-signature')) {
      try {
        const { id } = verifyStandard(this.standardKeys, body, header, now);
        const event = parseEvent(body);
        return { dedupeKey: id, facts: eventFacts(event, id, 'standard'), event };
      } catch (err) {
        // Didit's headers may come with a plain secret of this node's: give them a chance before refusing.
        if (!(err instanceof WebhookError) || err.code === 'malformed_body' || !this.signedForDidit(header)) throw err;
        failure = err;
      }
    }
    if (this.signedForDidit(header)) {
      const { scheme } = verifyDidit(this.diditSecrets, body, header, now);
      const event = parseEvent(body);
      const facts = diditFacts(event, scheme, body);
      // An envelope-only signature does not cover event_id: dedupe on what it does cover.
      const envelope = `simple:${SIMPLE_SIGNED_FIELDS.map(field => String(event[field])).join(':')}`;
      return scheme === 'didit-simple'
        ? { dedupeKey: envelope, facts, event }
        : { dedupeKey: facts.eventId, alsoSeen: [envelope], facts, event };
    }
    if (failure) throw failure;
    if (hasDiditHeaders(header))
      throw new WebhookError(
        'bad_signature',
        "Didit's X-Signature headers, but no Didit secret here (whsec_ secrets check webhook-signature only)",
      );
    throw new WebhookError('missing_headers', 'no webhook signature headers (webhook-signature or X-Signature)');
  }
}
