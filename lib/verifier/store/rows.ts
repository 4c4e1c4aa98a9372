/** Rows as both stores' SQL returns them (same column names), and the records they make. */
import type { Decision, DeviceRecord, DeviceState, DeviceStatus, NonceOutcome, SessionRecord } from '../types';
import type { AuditRecord, DeliveryRecord, DeliveryStatus, SubscriberRecord, SubscriberStatus } from './types';

export interface DeviceRow {
  device_id: string;
  jwk: string;
  thumbprint: string;
  fingerprint: string;
  metadata: string;
  status: DeviceStatus;
  workflow: string | null;
  created_at: number;
  updated_at: number;
  generation: number;
  rekey_until: number | null;
}

export interface SubscriberRow {
  id: string;
  url: string;
  status: SubscriberStatus;
  disabled_reason: string | null;
  /** 0/1 in SQLite, a boolean in PostgreSQL. */
  configured: number | boolean;
  created_at: number;
  updated_at: number;
}

export function toSubscriber(row: SubscriberRow): SubscriberRecord {
  return {
    id: row.id,
    url: row.url,
    status: row.status,
    ...(row.disabled_reason ? { disabledReason: row.disabled_reason } : {}),
    configured: Boolean(row.configured),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export interface DeliveryRow {
  id: number;
  event_id: string;
  webhook_type: string;
  subscriber_id: string;
  status: DeliveryStatus;
  attempts: number;
  next_attempt_at: number;
  last_error: string | null;
  last_status: number | null;
  created_at: number;
  delivered_at: number | null;
}

export function toDelivery(row: DeliveryRow): DeliveryRecord {
  return {
    id: row.id,
    eventId: row.event_id,
    type: row.webhook_type,
    subscriberId: row.subscriber_id,
    status: row.status,
    attempts: row.attempts,
    nextAttemptAt: row.next_attempt_at,
    ...(row.last_error ? { lastError: row.last_error } : {}),
    ...(row.last_status ? { lastStatus: row.last_status } : {}),
    createdAt: row.created_at,
    ...(row.delivered_at ? { deliveredAt: row.delivered_at } : {}),
  };
}

export const DELIVERY_COLUMNS = `d.id, d.event_id, o.webhook_type, d.subscriber_id, d.status, d.attempts, d.next_attempt_at,
  d.last_error, d.last_status, d.created_at, d.delivered_at`;

export function toDevice(row: DeviceRow): DeviceRecord {
  return {
    deviceId: row.device_id,
    jwk: JSON.parse(row.jwk),
    thumbprint: row.thumbprint,
    fingerprint: JSON.parse(row.fingerprint),
    metadata: JSON.parse(row.metadata),
    status: row.status,
    workflow: row.workflow ? JSON.parse(row.workflow) : undefined,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    generation: row.generation,
    ...(row.rekey_until ? { rekeyUntil: row.rekey_until } : {}),
  };
}

export interface NonceRow {
  device_id: string;
  expires_at: number;
  consumed_at: number | null;
}

/**
 * Why a consuming update changed nothing: the device moved on since the decision read it, or the
 * nonce is not this device's, used, expired or unknown.
 */
export function whyNotConsumed(
  row: NonceRow | undefined,
  device: DeviceState,
  current: Pick<DeviceRow, 'status' | 'generation'> | undefined,
  now: number,
): NonceOutcome | 'device_changed' {
  if (!current || current.status !== device.status || current.generation !== device.generation) return 'device_changed';
  if (!row) return 'nonce_unknown';
  if (row.device_id !== device.deviceId) return 'nonce_other_device';
  if (row.consumed_at !== null) return 'nonce_reused';
  return row.expires_at <= now ? 'nonce_expired' : 'nonce_unknown';
}

export interface SessionRow {
  session_id: string;
  device_id: string;
  decision: Decision;
  reasons: string;
  score: number | null;
  created_at: number;
}

export function toSession(row: SessionRow): SessionRecord {
  return {
    sessionId: row.session_id,
    deviceId: row.device_id,
    decision: row.decision,
    reasons: JSON.parse(row.reasons),
    ...(row.score === null ? {} : { score: row.score }),
    createdAt: row.created_at,
  };
}

export interface AuditRow {
  device_id: string;
  at: number;
  action: DeviceStatus;
  actor: string;
  reason: string | null;
}

export function toAudit(row: AuditRow): AuditRecord {
  return {
    deviceId: row.device_id,
    at: row.at,
    action: row.action,
    actor: row.actor,
    ...(row.reason ? { reason: row.reason } : {}),
  };
}
