/** What the edge nodes may ask of the config nodes (types only: node files export their constructor). */
import type { Node } from 'node-red';
import type { IdentityApiClient } from '../../lib/edge/api-client';
import type { DeviceIdentity } from '../../lib/edge/keystore';

export interface IdentityApiCredentials {
  apiKey?: string;
  enrollmentToken?: string;
  webhookSecret?: string;
}

export interface IdentityApiNode extends Node<IdentityApiCredentials> {
  /** The shared client; throws an ApiError with code bad_url when the URL is unusable. */
  client(): IdentityApiClient;
}

export interface DeviceCredentials {
  keystoreSecret?: string;
}

export interface DeviceNode extends Node<DeviceCredentials> {
  deviceId: string;
  /** The device's key and fingerprint salt, created on first use. */
  identity(): { identity: DeviceIdentity; created: boolean };
  /** Raw fingerprint components: they stay on the device, only salted digests are sent. */
  components(): Record<string, string>;
  metadata(): Record<string, unknown>;
  api(): IdentityApiNode;
}
