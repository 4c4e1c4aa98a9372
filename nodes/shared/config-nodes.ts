/** What the edge nodes may ask of the config nodes (types only: node files export their constructor). */
import type { Node } from 'node-red';
import type { DiditClient } from '../../lib/didit/client';
import type { IdentityApiClient, RegisterAnswer } from '../../lib/edge/api-client';
import type { DeviceIdentity } from '../../lib/edge/keystore';
import type { KeyStorage } from '../../lib/edge/pkcs11-key';

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
  /** The user PIN of the PKCS#11 token holding the key. */
  pin?: string;
}

export interface Registered extends RegisterAnswer {
  /** The key was made by this registration's call (in the keystore, or in the token). */
  keyCreated: boolean;
  keyStorage: KeyStorage;
  /** The registration moved from the device's file key to its key in a TPM or an HSM. */
  keyChanged?: boolean;
}

export interface DeviceNode extends Node<DeviceCredentials> {
  deviceId: string;
  /** Where its key lives (the dialog's key store). */
  keyStorage: KeyStorage;
  /** The device's key and fingerprint salt, created on first use (in the token, for a hardware key). */
  identity(): { identity: DeviceIdentity; created: boolean };
  /**
   * Registers the device (idempotent). A device whose key moved into a TPM or an HSM hands its
   * registration over with both keys signing, then deletes the file key it no longer needs.
   */
  register(): Promise<Registered>;
  /** A hardware-key device whose file key is still on disk: the verifier may know only that one. */
  keyMoving(): boolean;
  /** Raw fingerprint components: they stay on the device, only salted digests are sent. */
  components(): Record<string, string>;
  metadata(): Record<string, unknown>;
  api(): IdentityApiNode;
}
