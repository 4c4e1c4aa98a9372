/**
 * Outbox events, shaped like Didit's webhooks (DESIGN.md §4) with `device_id` added and
 * `vendor_data` = device id, so one receiver handles both.
 */
import * as crypto from 'node:crypto';
import type { Decision, DeviceRecord, OutboxEvent, SessionRecord } from './types';

const DIDIT_STATUS: Record<Decision, string> = { approved: 'Approved', declined: 'Declined', in_review: 'In Review' };

function event(webhookType: string, nowMs: number, fields: Record<string, unknown>): OutboxEvent {
  const eventId = crypto.randomUUID();
  const timestamp = Math.floor(nowMs / 1000);
  return {
    eventId,
    webhookType,
    createdAt: nowMs,
    payload: { event_id: eventId, webhook_type: webhookType, timestamp, created_at: timestamp, ...fields },
  };
}

export function decisionEvent(session: SessionRecord, workflowId: string, nowMs: number): OutboxEvent {
  return event('status.updated', nowMs, {
    session_id: session.sessionId,
    status: DIDIT_STATUS[session.decision],
    workflow_id: workflowId,
    vendor_data: session.deviceId,
    device_id: session.deviceId,
    metadata: {},
    decision: { decision: session.decision, reasons: session.reasons, score: session.score ?? null },
  });
}

export function deviceEvent(
  webhookType: 'device.registered' | 'device.revoked' | 'device.approved' | 'device.reinstated',
  device: Pick<DeviceRecord, 'deviceId' | 'status' | 'metadata'>,
  nowMs: number,
): OutboxEvent {
  return event(webhookType, nowMs, {
    session_id: null,
    status: device.status,
    workflow_id: null,
    vendor_data: device.deviceId,
    device_id: device.deviceId,
    metadata: device.metadata ?? {},
    decision: null,
  });
}
