/**
 * Config node: one device identity. It owns the keystore (keys never leave it), reads the
 * hardware fingerprint, and hands both to the edge nodes through small methods.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NodeAPI, NodeDef } from 'node-red';
import { provisionDevice } from '../../lib/edge/attestation';
import { M2MError } from '../../lib/errors';
import { FINGERPRINT_SOURCES, collectComponents, type FingerprintSource } from '../../lib/edge/fingerprint';
import { HardwareIdentity } from '../../lib/edge/hardware-identity';
import { type DeviceIdentity, HeldIdentity, Keystore } from '../../lib/edge/keystore';
import type { KeyStorage, Pkcs11KeyType } from '../../lib/edge/pkcs11-key';
import { dataDir } from '../shared/node-kit';
import type { DeviceCredentials, DeviceNode, IdentityApiNode } from '../shared/config-nodes';

interface DeviceDef extends NodeDef {
  deviceId: string;
  api: string;
  sources: string;
  extra: string;
  metadata: string;
  /** Where the key lives: a keystore file (default), a PKCS#11 token (HSM, secure element), a TPM. */
  keyStore?: KeyStorage;
  pkcs11Module?: string;
  pkcs11Token?: string;
  pkcs11KeyLabel?: string;
  pkcs11KeyType?: Pkcs11KeyType;
}

/** Where tpm2-pkcs11 installs its module on Debian-based gateways, by architecture. */
const TPM2_PKCS11_MODULES = [
  '/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so',
  '/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so',
  '/usr/lib/arm-linux-gnueabihf/pkcs11/libtpm2_pkcs11.so',
];

function parseJsonObject(text: string, what: string): Record<string, unknown> {
  if (!text?.trim()) return {};
  try {
    const value = JSON.parse(text);
    if (value && typeof value === 'object' && !Array.isArray(value)) return value;
  } catch {
    /* reported below */
  }
  throw new M2MError('bad_config', `${what} must be a JSON object`, 400);
}

/** Extra fingerprint components: text, or a number or true/false written without quotes. */
function extraComponents(text: string): Record<string, string> {
  return Object.fromEntries(
    Object.entries(parseJsonObject(text, 'extra components')).map(([name, value]) => {
      if (typeof value === 'string') return [name, value];
      if (typeof value === 'number' || typeof value === 'boolean') return [name, String(value)];
      throw new M2MError('bad_config', `extra component ${JSON.stringify(name)} must be text or a number`, 400);
    }),
  );
}

/**
 * The secret the keystore encrypts with: the node's own credential if set, else Node-RED's
 * credentialSecret, else a random secret kept in a 0600 file beside the keystore. The last is
 * what Node-RED itself does for flows_cred.json when no credentialSecret is configured: it
 * protects against copies of the keystore alone, not against someone who can read the folder.
 */
function keystoreSecret(RED: NodeAPI, own: string | undefined): string {
  if (own) return own;
  const runtimeSecret = (RED.settings as { credentialSecret?: unknown }).credentialSecret;
  if (typeof runtimeSecret === 'string' && runtimeSecret) return runtimeSecret;
  const file = path.join(dataDir(RED), 'keystore.secret');
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    const secret = crypto.randomBytes(32).toString('base64url');
    try {
      fs.writeFileSync(file, secret, { mode: 0o600, flag: 'wx' });
      return secret;
    } catch {
      return fs.readFileSync(file, 'utf8').trim(); // another node created it first
    }
  }
}

export = (RED: NodeAPI) => {
  function Device(this: DeviceNode, config: DeviceDef) {
    RED.nodes.createNode(this, config);
    this.deviceId = config.deviceId;
    const sources = (config.sources ?? FINGERPRINT_SOURCES.join(','))
      .split(',')
      .map(source => source.trim())
      .filter((source): source is FingerprintSource => (FINGERPRINT_SOURCES as readonly string[]).includes(source));
    let held: { get(): { identity: DeviceIdentity; created: boolean }; close?(): void } | undefined;
    let components: Record<string, string> | undefined;
    const keyStore: KeyStorage = config.keyStore === 'pkcs11' || config.keyStore === 'tpm' ? config.keyStore : 'file';
    this.keyStorage = keyStore;
    const keystore = () => new Keystore(dataDir(RED, 'keys'), keystoreSecret(RED, this.credentials.keystoreSecret));
    /** The file key this device had before its key moved into hardware, while it is still there. */
    const fileKey = (): DeviceIdentity | undefined => {
      if (keyStore === 'file') return undefined;
      try {
        return keystore().load(this.deviceId);
      } catch {
        return undefined;
      }
    };

    this.identity = () => {
      held ??=
        keyStore === 'file'
          ? new HeldIdentity(keystore(), this.deviceId)
          : new HardwareIdentity({
              deviceId: this.deviceId,
              dir: dataDir(RED, 'keys'),
              module:
                config.pkcs11Module?.trim() ||
                (keyStore === 'tpm'
                  ? (TPM2_PKCS11_MODULES.find(file => fs.existsSync(file)) ?? TPM2_PKCS11_MODULES[0])
                  : ''),
              token: config.pkcs11Token?.trim() || undefined,
              keyLabel: config.pkcs11KeyLabel?.trim() || `m2m-${this.deviceId}`,
              keyType: keyStore === 'tpm' ? 'p256' : config.pkcs11KeyType === 'p256' ? 'p256' : 'ed25519',
              pin: this.credentials.pin ?? '',
              storage: keyStore,
              previousSalt: () => fileKey()?.fingerprintSalt,
            });
      return held.get();
    };
    this.keyMoving = () => fileKey() !== undefined;
    this.register = async () => {
      const { identity, created } = this.identity();
      const answer = await provisionDevice(
        this.api().client(),
        identity,
        this.components(),
        this.metadata(),
        fileKey(),
      );
      // The verifier has the new key: the old file key is worth nothing now, and goes.
      if (answer.keyChanged) keystore().retire(this.deviceId);
      return { ...answer, keyCreated: created, keyStorage: identity.storage };
    };
    this.on('close', (done: () => void) => {
      held?.close?.();
      held = undefined;
      done();
    });
    this.components = () => {
      components ??= collectComponents({
        sources,
        extra: extraComponents(config.extra),
      });
      return components;
    };
    this.metadata = () => parseJsonObject(config.metadata, 'metadata');
    this.api = () => {
      const api = RED.nodes.getNode(config.api) as IdentityApiNode | null;
      if (!api) throw new M2MError('no_api', 'the device has no identity API configured', 400);
      return api;
    };
  }

  RED.nodes.registerType<DeviceNode, DeviceDef, object, DeviceCredentials>('m2m-device', Device, {
    credentials: { keystoreSecret: { type: 'password' }, pin: { type: 'password' } },
  });
};
