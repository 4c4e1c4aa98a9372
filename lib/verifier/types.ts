/** The verifier's data model, shared by its logic and its stores. */
import type { PublicJwk } from '../crypto/keys';
import type { Fingerprint } from '../edge/fingerprint';

export type DeviceStatus = 'active' | 'pending' | 'revoked';
export type Decision = 'approved' | 'declined' | 'in_review';

export type WorkflowStep =
  | { step: 'signature' }
  | { step: 'fingerprint'; minMatch?: number; required?: boolean }
  | { step: 'tinyml'; minScore?: number; review?: number; required?: boolean }
  | { step: 'hardwareKey' };

export interface DeviceRecord {
  deviceId: string;
  jwk: PublicJwk;
  /** RFC 7638 thumbprint of `jwk`: the `cnf.jkt` of the device's tokens. */
  thumbprint: string;
  fingerprint: Fingerprint;
  metadata: unknown;
  status: DeviceStatus;
  /** Per-device workflow; the verifier's default when absent. */
  workflow?: WorkflowStep[];
  /**
   * Counts the device's revocations. Tokens carry the generation they were issued in, so a token
   * issued before a revocation stays dead after the device is reinstated.
   */
  generation: number;
  /** Until when (epoch ms) a registration with another key replaces the key: an admin allowed a re-key. */
  rekeyUntil?: number;
  createdAt: number;
  updatedAt: number;
}

/** A device's new key, with what is registered beside it. */
export type DeviceKey = Pick<DeviceRecord, 'jwk' | 'thumbprint' | 'fingerprint' | 'metadata'>;

export interface NonceRecord {
  nonce: string;
  deviceId: string;
  expiresAt: number;
  consumedAt?: number;
}

/** Why a nonce could not be consumed; `consumed` when it was. */
export type NonceOutcome = 'consumed' | 'nonce_unknown' | 'nonce_reused' | 'nonce_expired' | 'nonce_other_device';

/** What a decision was based on: a nonce is consumed only while the device is still in this state. */
export type DeviceState = Pick<DeviceRecord, 'deviceId' | 'status' | 'generation'>;

export interface SessionRecord {
  sessionId: string;
  deviceId: string;
  decision: Decision;
  reasons: string[];
  score?: number;
  createdAt: number;
}

/** A webhook event waiting in the outbox (DESIGN.md §4 payload). */
export interface OutboxEvent {
  eventId: string;
  webhookType: string;
  payload: Record<string, unknown>;
  createdAt: number;
}
