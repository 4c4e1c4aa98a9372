/** What the edge nodes may ask of the config nodes (types only: node files export their constructor). */
import type { Node } from 'node-red';
import type { DiditClient } from '../../lib/didit/client';
import type { IdentityApiClient } from '../../lib/edge/api-client';
import type { DeviceIdentity } from '../../lib/edge/keystore';

export interface IdentityApiCredentials {
  apiKey?: string;
  enrollmentToken?: string;
  webhookSecret?: string;
}

export type IdentityProvider = 'm2m' | 'didit';

export interface IdentityApiNode extends Node<IdentityApiCredentials> {
  /** `m2m`: this package's identity API; `didit`: Didit's verification API (people, not devices). */
  provider: IdentityProvider;
  /** The shared m2m client; throws bad_url when the URL is unusable, wrong_provider for Didit. */
  client(): IdentityApiClient;
  /** The shared Didit client; throws wrong_provider for an m2m configuration, didit_no_api_key without a key. */
  didit(): DiditClient;
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
