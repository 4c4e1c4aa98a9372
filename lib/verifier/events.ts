/**
 * The verifier's events (DESIGN.md §4), in the payload shape Standard Webhooks recommends:
 * `{type, timestamp, data}`. The event id travels in the `webhook-id` header, stable across
 * retries; in-process listeners (the m2m-verifier node's output) get it on the event.
 */
import { uuidv7 } from './ids';
import type { DeviceRecord, OutboxEvent, SessionRecord } from './types';

export type DeviceEventType =
  | 'device.registered'
  | 'device.revoked'
  | 'device.approved'
  | 'device.reinstated'
  | 'device.rekey_allowed'
  | 'device.rekeyed'
  | 'device.key_changed';
export type EventType = DeviceEventType | 'attestation.decided';

function event(type: EventType, nowMs: number, data: Record<string, unknown>): OutboxEvent {
  return {
    eventId: `evt_${uuidv7(nowMs).replace(/-/g, '')}`,
    webhookType: type,
    createdAt: nowMs,
    payload: { type, timestamp: new Date(nowMs).toISOString(), data },
  };
}

export function decisionEvent(session: SessionRecord, workflowId: string, nowMs: number): OutboxEvent {
  return event('attestation.decided', nowMs, {
    deviceId: session.deviceId,
    decision: session.decision,
    reasons: session.reasons,
    sessionId: session.sessionId,
    score: session.score ?? null,
    workflow: workflowId,
  });
}

export function deviceEvent(
  type: DeviceEventType,
  device: Pick<DeviceRecord, 'deviceId' | 'status' | 'metadata'>,
  nowMs: number,
  audit?: { actor: string; reason?: string },
): OutboxEvent {
  return event(type, nowMs, {
    deviceId: device.deviceId,
    status: device.status,
    metadata: device.metadata ?? {},
    ...(audit ? { actor: audit.actor, ...(audit.reason ? { reason: audit.reason } : {}) } : {}),
  });
}

/** Sets the device's event sequence number on an event about to be written (see VerifierStore). */
export function stampDeviceSeq(event: OutboxEvent, deviceSeq: number): OutboxEvent {
  (event.payload.data as Record<string, unknown>).deviceSeq = deviceSeq;
  return event;
}
