/**
 * A device identity whose key lives in a TPM or an HSM (./pkcs11-key): the key is opened, or
 * generated inside the token, on first use; the fingerprint salt, which is no secret, is kept in
 * a small file beside the keystores. A device moving from a file key keeps that key's salt, so
 * its registered fingerprint still matches after the key change.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as s from '../schema';
import type { DeviceIdentity } from './keystore';
import { Pkcs11KeyError, type Pkcs11KeyOptions, type TokenKey, openPkcs11Key } from './pkcs11-key';

const saltFileSchema = s.object({
  deviceId: s.string({ pattern: s.patterns.deviceId }),
  fingerprintSalt: s.string({ pattern: /^[0-9a-f]{32,128}$/ }),
  createdAt: s.string({ maxLength: 64 }),
});

export interface HardwareIdentityOptions extends Omit<Pkcs11KeyOptions, 'create'> {
  deviceId: string;
  /** The folder of the keystores, where the salt file goes. */
  dir: string;
  /** The salt of the file key this device moves from, when there is one. */
  previousSalt?: () => Uint8Array | undefined;
}

export class HardwareIdentity {
  private opened?: { identity: DeviceIdentity; key: TokenKey };
  /** A refused PIN, kept: trying it again would count towards the token's lockout. */
  private refused?: Pkcs11KeyError;

  constructor(private readonly options: HardwareIdentityOptions) {}

  /** The identity, the key generated in the token on first use; `created` tells whether this call made it. */
  get(): { identity: DeviceIdentity; created: boolean } {
    if (this.opened) return { identity: this.opened.identity, created: false };
    if (this.refused) throw this.refused;
    const { deviceId, dir, previousSalt, ...token } = this.options;
    let key: TokenKey;
    try {
      key = openPkcs11Key({ ...token, create: true });
    } catch (err) {
      if (err instanceof Pkcs11KeyError && (err.code === 'pkcs11_pin_incorrect' || err.code === 'pkcs11_pin_locked'))
        this.refused = new Pkcs11KeyError(
          err.code,
          `${err.message}; not tried again until the flow is deployed again, since tokens lock after a few wrong PINs`,
        );
      throw this.refused ?? err;
    }
    const salt = this.salt(previousSalt);
    const identity: DeviceIdentity = {
      deviceId,
      privateKey: key,
      fingerprintSalt: salt.bytes,
      createdAt: salt.createdAt,
      storage: key.storage,
    };
    this.opened = { identity, key };
    return { identity, created: key.created };
  }

  close(): void {
    this.opened?.key.close();
    this.opened = undefined;
  }

  private salt(previous: (() => Uint8Array | undefined) | undefined): { bytes: Uint8Array; createdAt: string } {
    const file = path.join(this.options.dir, `${this.options.deviceId}.hardware.json`);
    try {
      const stored = saltFileSchema.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
      return { bytes: new Uint8Array(Buffer.from(stored.fingerprintSalt, 'hex')), createdAt: stored.createdAt };
    } catch {
      // none yet (or unreadable): take the file key's, or a new one, and keep it
    }
    const bytes = previous?.() ?? new Uint8Array(crypto.randomBytes(16));
    const createdAt = new Date().toISOString();
    fs.mkdirSync(this.options.dir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(
      file,
      JSON.stringify({
        deviceId: this.options.deviceId,
        fingerprintSalt: Buffer.from(bytes).toString('hex'),
        createdAt,
      }),
      { mode: 0o600 },
    );
    return { bytes, createdAt };
  }
}
