/**
 * The device keystore: one file per device identity, holding the Ed25519 private key encrypted
 * at rest with AES-256-GCM under a key derived (scrypt) from a secret the keystore does not
 * store. The file is written with mode 0600 and replaced atomically. A file that cannot be read
 * or decrypted is reported, never overwritten: losing a registered key would brick the device.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KeystoreError } from '../errors';
import { Ed25519PrivateKey } from '../crypto/ed25519';
import type { Signer } from '../crypto/keys';
import type { KeyStorage } from './pkcs11-key';
import * as s from '../schema';

export interface DeviceIdentity {
  deviceId: string;
  /** What signs for the device: a file key (Ed25519), or a key in a TPM or an HSM that never leaves it. */
  privateKey: Signer;
  /** Per-device random salt of the hardware fingerprint digests, chosen at provisioning. */
  fingerprintSalt: Uint8Array;
  createdAt: string;
  /** Where the key lives: a keystore file, a PKCS#11 token (HSM, secure element), or a TPM. */
  storage: KeyStorage;
}

/** An identity from a keystore file: its key is an Ed25519 key in memory. */
export type FileIdentity = DeviceIdentity & { privateKey: Ed25519PrivateKey };

// scrypt N=2^14 keeps unlocking under ~50 ms on a gateway-class CPU while costing 16 MiB per guess.
const SCRYPT = { N: 16384, r: 8, p: 1 } as const;
const FORMAT = 'm2m-keystore-v1';

const keystoreFileSchema = s.object({
  format: s.literal(FORMAT),
  deviceId: s.string({ pattern: s.patterns.deviceId, format: 'device id' }),
  publicKey: s.string({ pattern: /^[A-Za-z0-9_-]{43}$/, format: 'base64url Ed25519 key' }),
  fingerprintSalt: s.string({ pattern: /^[0-9a-f]{32,128}$/, format: 'hex salt' }),
  createdAt: s.string({ maxLength: 64 }),
  kdf: s.object({
    name: s.literal('scrypt'),
    salt: s.string({ pattern: s.patterns.base64url, maxLength: 64 }),
    N: s.number({ integer: true, min: 1024, max: 1 << 20 }),
    r: s.number({ integer: true, min: 1, max: 32 }),
    p: s.number({ integer: true, min: 1, max: 16 }),
  }),
  cipher: s.object({
    name: s.literal('aes-256-gcm'),
    iv: s.string({ pattern: s.patterns.base64url, maxLength: 32 }),
    tag: s.string({ pattern: s.patterns.base64url, maxLength: 32 }),
    ciphertext: s.string({ pattern: s.patterns.base64url, maxLength: 128 }),
  }),
});
type KeystoreFile = s.Infer<typeof keystoreFileSchema>;

/** Everything but the ciphertext is bound to it as associated data, so no field can be swapped. */
function associatedData(file: Omit<KeystoreFile, 'cipher'>): Buffer {
  return Buffer.from(
    JSON.stringify([file.format, file.deviceId, file.publicKey, file.fingerprintSalt, file.createdAt, file.kdf]),
  );
}

function deriveKey(secret: string, kdf: KeystoreFile['kdf']): Buffer {
  return crypto.scryptSync(secret, Buffer.from(kdf.salt, 'base64url'), 32, {
    N: kdf.N,
    r: kdf.r,
    p: kdf.p,
    maxmem: 64 * 1024 * 1024,
  });
}

export class Keystore {
  private readonly dir: string;
  private readonly secret: string;

  /** @param dir a folder under the Node-RED user dir; @param secret the keystore secret (never stored here). */
  constructor(dir: string, secret: string) {
    if (!secret) throw new KeystoreError('keystore_no_secret', 'the keystore needs a secret to encrypt keys at rest');
    this.dir = dir;
    this.secret = secret;
  }

  fileFor(deviceId: string): string {
    s.string({ pattern: s.patterns.deviceId, format: 'device id' }).parse(deviceId, 'deviceId');
    return path.join(this.dir, `${deviceId}.keystore.json`);
  }

  /** The identity of a device, or undefined when it has none yet. */
  load(deviceId: string): FileIdentity | undefined {
    const file = this.fileFor(deviceId);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new KeystoreError('keystore_unreadable', `cannot read keystore ${file}: ${(err as Error).message}`);
    }
    let stored: KeystoreFile;
    try {
      stored = keystoreFileSchema.parse(JSON.parse(text));
    } catch {
      throw new KeystoreError('keystore_corrupt', `keystore ${file} is corrupt; it was left untouched`);
    }
    if (stored.deviceId !== deviceId)
      throw new KeystoreError('keystore_corrupt', `keystore ${file} belongs to ${stored.deviceId}`);
    let seed: Buffer;
    try {
      const decipher = crypto.createDecipheriv(
        'aes-256-gcm',
        deriveKey(this.secret, stored.kdf),
        Buffer.from(stored.cipher.iv, 'base64url'),
      );
      decipher.setAAD(associatedData(stored));
      decipher.setAuthTag(Buffer.from(stored.cipher.tag, 'base64url'));
      seed = Buffer.concat([decipher.update(Buffer.from(stored.cipher.ciphertext, 'base64url')), decipher.final()]);
    } catch {
      throw new KeystoreError(
        'keystore_wrong_secret',
        `keystore ${file} does not open with this secret (wrong secret or tampered file); it was left untouched`,
      );
    }
    const privateKey = Ed25519PrivateKey.fromSeed(new Uint8Array(seed));
    seed.fill(0);
    if (privateKey.publicKey.toJwk().x !== stored.publicKey) {
      throw new KeystoreError('keystore_corrupt', `keystore ${file}: private and public key do not match`);
    }
    return {
      deviceId,
      privateKey,
      fingerprintSalt: new Uint8Array(Buffer.from(stored.fingerprintSalt, 'hex')),
      createdAt: stored.createdAt,
      storage: 'file',
    };
  }

  /** Creates a new identity; refuses to replace an existing file. */
  create(deviceId: string): FileIdentity {
    const file = this.fileFor(deviceId);
    const privateKey = Ed25519PrivateKey.generate();
    const identity: FileIdentity = {
      deviceId,
      privateKey,
      fingerprintSalt: new Uint8Array(crypto.randomBytes(16)),
      createdAt: new Date().toISOString(),
      storage: 'file',
    };
    const header = {
      format: FORMAT,
      deviceId,
      publicKey: privateKey.publicKey.toJwk().x,
      fingerprintSalt: Buffer.from(identity.fingerprintSalt).toString('hex'),
      createdAt: identity.createdAt,
      kdf: { name: 'scrypt', salt: crypto.randomBytes(16).toString('base64url'), ...SCRYPT },
    } as const;
    const iv = crypto.randomBytes(12);
    const cipher = crypto.createCipheriv('aes-256-gcm', deriveKey(this.secret, header.kdf), iv);
    cipher.setAAD(associatedData(header));
    const seed = Buffer.from(privateKey.exportSeed());
    const ciphertext = Buffer.concat([cipher.update(seed), cipher.final()]);
    seed.fill(0);
    const stored: KeystoreFile = {
      ...header,
      cipher: {
        name: 'aes-256-gcm',
        iv: iv.toString('base64url'),
        tag: cipher.getAuthTag().toString('base64url'),
        ciphertext: ciphertext.toString('base64url'),
      },
    };
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const temp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
    fs.writeFileSync(temp, JSON.stringify(stored, null, 2), { mode: 0o600, flag: 'wx' });
    try {
      // link() fails if the target exists, so two racing creators cannot overwrite each other's key.
      fs.linkSync(temp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new KeystoreError('keystore_exists', `keystore ${file} already exists; refusing to replace a key`);
      }
      throw new KeystoreError('keystore_unreadable', `cannot write keystore ${file}: ${(err as Error).message}`);
    } finally {
      fs.rmSync(temp, { force: true });
    }
    return identity;
  }

  /** Deletes the device's keystore file: its key was handed over to another (a TPM or an HSM). */
  retire(deviceId: string): void {
    fs.rmSync(this.fileFor(deviceId), { force: true });
  }

  /** The device's identity, creating it on first use; `created` tells which happened. */
  loadOrCreate(deviceId: string): { identity: FileIdentity; created: boolean } {
    const existing = this.load(deviceId);
    if (existing) return { identity: existing, created: false };
    try {
      return { identity: this.create(deviceId), created: true };
    } catch (err) {
      // Lost a race with another creator: theirs is the key now.
      const winner = this.load(deviceId);
      if (winner) return { identity: winner, created: false };
      throw err;
    }
  }
}

/** How often a held identity checks that its keystore file is still the one it was read from. */
const KEYSTORE_CHECK_MS = 2000;

/**
 * A device identity as a running flow holds it: read once, then, every couple of seconds,
 * checked against its file. A keystore deleted while running is reported (keystore_missing) and
 * nothing is signed with the key it held, rather than a new key being made behind the operator's
 * back (the verifier would refuse it anyway: key_conflict); one replaced by another file (a
 * restored backup) is read again.
 */
export class HeldIdentity {
  private held?: { identity: DeviceIdentity; file: fs.Stats; checkedAt: number };
  private lost = false;

  constructor(
    private readonly keystore: Keystore,
    private readonly deviceId: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** The identity, created on first use; `created` tells whether this call made it. */
  get(): { identity: DeviceIdentity; created: boolean } {
    const now = this.now();
    if (this.held && now - this.held.checkedAt < KEYSTORE_CHECK_MS)
      return { identity: this.held.identity, created: false };
    if (!this.held && !this.lost) {
      const loaded = this.keystore.loadOrCreate(this.deviceId);
      this.held = { identity: loaded.identity, file: this.stat()!, checkedAt: now };
      return loaded;
    }
    const file = this.stat();
    const unchanged = file && this.held && file.ino === this.held.file.ino && file.mtimeMs === this.held.file.mtimeMs;
    const identity = unchanged ? this.held!.identity : file && this.keystore.load(this.deviceId);
    if (!file || !identity) {
      this.held = undefined;
      this.lost = true;
      throw new KeystoreError(
        'keystore_missing',
        `the keystore of ${this.deviceId} (${this.keystore.fileFor(this.deviceId)}) disappeared while running: ` +
          'restore it, or redeploy to make a new key and have an admin allow a re-key',
      );
    }
    this.held = { identity, file, checkedAt: now };
    this.lost = false;
    return { identity, created: false };
  }

  private stat(): fs.Stats | undefined {
    try {
      return fs.statSync(this.keystore.fileFor(this.deviceId));
    } catch {
      return undefined;
    }
  }
}
