/**
 * Config node: one device identity. It owns the keystore (keys never leave it), reads the
 * hardware fingerprint, and hands both to the edge nodes through small methods.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NodeAPI, NodeDef } from 'node-red';
import { M2MError } from '../../lib/errors';
import { FINGERPRINT_SOURCES, collectComponents, type FingerprintSource } from '../../lib/edge/fingerprint';
import { HeldIdentity, Keystore } from '../../lib/edge/keystore';
import { dataDir } from '../shared/node-kit';
import type { DeviceCredentials, DeviceNode, IdentityApiNode } from '../shared/config-nodes';

interface DeviceDef extends NodeDef {
  deviceId: string;
  api: string;
  sources: string;
  extra: string;
  metadata: string;
}

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
    let held: HeldIdentity | undefined;
    let components: Record<string, string> | undefined;

    this.identity = () => {
      held ??= new HeldIdentity(
        new Keystore(dataDir(RED, 'keys'), keystoreSecret(RED, this.credentials.keystoreSecret)),
        this.deviceId,
      );
      return held.get();
    };
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
    credentials: { keystoreSecret: { type: 'password' } },
  });
};
