/**
 * A device key that never leaves its token: an HSM, a secure element, or a TPM through
 * tpm2-pkcs11, reached over PKCS#11 with `pkcs11js` (an optional peer, loaded only when a device
 * is configured so). The key pair is generated inside the token as sensitive and not
 * extractable, or an existing one is used by its label; the node signs through the token.
 *
 * Ed25519 uses the PKCS#11 3.0 mechanisms pkcs11js has no names for (CKK_EC_EDWARDS,
 * CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA, one-shot C_Sign); P-256 signs a SHA-256 digest with
 * CKM_ECDSA (r‖s, as ES256 wants). TPMs hold P-256 only. Calls are synchronous: a software token
 * signs in ~0.2 ms, a TPM in ~3 ms.
 */
import * as crypto from 'node:crypto';
import type * as pkcs11js from 'pkcs11js';
import { Ed25519PublicKey } from '../crypto/ed25519';
import type { PublicKey, Signer } from '../crypto/keys';
import { P256PublicKey } from '../crypto/p256';
import { M2MError } from '../errors';

/** PKCS#11 3.0 values pkcs11js does not define. */
const CKK_EC_EDWARDS = 0x40;
const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
const CKM_EDDSA = 0x1057;
/** DER object identifiers for CKA_EC_PARAMS: Ed25519 (RFC 8410) and prime256v1. */
const ED25519_OID = Buffer.from('06032b6570', 'hex');
const P256_OID = Buffer.from('06082a8648ce3d030107', 'hex');

export type Pkcs11KeyType = 'ed25519' | 'p256';
export type KeyStorage = 'file' | 'pkcs11' | 'tpm';

export interface Pkcs11KeyOptions {
  /** Path of the PKCS#11 module (.so). */
  module: string;
  /** The token's label; or `slot`, its index in the slot list. */
  token?: string;
  slot?: number;
  /** CKA_LABEL of the key pair. */
  keyLabel: string;
  keyType: Pkcs11KeyType;
  pin: string;
  /** Generate the pair inside the token when there is none with the label. */
  create: boolean;
  /** What the registration says of where the key lives. */
  storage: 'pkcs11' | 'tpm';
}

export type Pkcs11Code =
  | 'pkcs11_unavailable'
  | 'pkcs11_module'
  | 'pkcs11_token_not_found'
  | 'pkcs11_pin_incorrect'
  | 'pkcs11_pin_locked'
  | 'pkcs11_key_not_found'
  | 'pkcs11_unsupported_key'
  | 'pkcs11_token_removed'
  | 'pkcs11_failed';

export class Pkcs11KeyError extends M2MError {
  constructor(code: Pkcs11Code, message: string) {
    super(code, message, 500);
  }
}

/** A key in a token: signs there, and says where it lives. */
export interface TokenKey extends Signer {
  readonly storage: 'pkcs11' | 'tpm';
  /** The pair was generated in the token when this key was opened. */
  readonly created: boolean;
  close(): void;
}

type Pkcs11Module = typeof import('pkcs11js');

function loadPkcs11js(): Pkcs11Module {
  try {
    return require('pkcs11js');
  } catch (err) {
    throw new Pkcs11KeyError(
      'pkcs11_unavailable',
      `keys in a TPM or an HSM need pkcs11js: run \`npm install pkcs11js\` in the Node-RED user directory (${(err as Error).message.split('\n')[0]})`,
    );
  }
}

/** PKCS#11 result codes as reasons an operator can act on. */
function reasonOf(p11: Pkcs11Module, err: unknown): Pkcs11Code {
  const code = (err as { code?: unknown }).code;
  switch (code) {
    case p11.CKR_PIN_INCORRECT:
    case p11.CKR_PIN_INVALID:
    case p11.CKR_PIN_LEN_RANGE:
      return 'pkcs11_pin_incorrect';
    case p11.CKR_PIN_LOCKED:
      return 'pkcs11_pin_locked';
    case p11.CKR_DEVICE_REMOVED:
    case p11.CKR_TOKEN_NOT_PRESENT:
    case p11.CKR_SESSION_HANDLE_INVALID:
    case p11.CKR_SESSION_CLOSED:
    case p11.CKR_DEVICE_ERROR:
    case p11.CKR_CRYPTOKI_NOT_INITIALIZED:
    case p11.CKR_USER_NOT_LOGGED_IN:
      return 'pkcs11_token_removed';
    default:
      return 'pkcs11_failed';
  }
}

/**
 * One initialised module per path in a process: PKCS#11 allows C_Initialize once, and every key
 * of the module shares it. `generation` counts restarts, after which every key opens its session
 * again.
 */
interface LoadedModule {
  lib: pkcs11js.PKCS11;
  users: number;
  generation: number;
  /** False after a restart whose C_Initialize failed: the next key to open tries again. */
  initialized: boolean;
}
const modules = new Map<string, LoadedModule>();

function initialize(p11: Pkcs11Module, lib: pkcs11js.PKCS11, path: string): void {
  try {
    lib.C_Initialize({ flags: p11.CKF_OS_LOCKING_OK });
  } catch (err) {
    if ((err as { code?: unknown }).code !== p11.CKR_CRYPTOKI_ALREADY_INITIALIZED)
      throw new Pkcs11KeyError('pkcs11_module', `the PKCS#11 module ${path} does not start: ${(err as Error).message}`);
  }
}

function openModule(p11: Pkcs11Module, path: string): LoadedModule {
  let entry = modules.get(path);
  if (!entry) {
    const lib = new p11.PKCS11();
    try {
      lib.load(path);
    } catch (err) {
      throw new Pkcs11KeyError('pkcs11_module', `cannot load the PKCS#11 module ${path}: ${(err as Error).message}`);
    }
    initialize(p11, lib, path);
    entry = { lib, users: 0, generation: 0, initialized: true };
    modules.set(path, entry);
  }
  entry.users++;
  return entry;
}

/**
 * Finalises and initialises the module again: after its token went away (a TPM restarted, an
 * HSM unplugged) some modules keep a broken connection until then.
 */
function restartModule(p11: Pkcs11Module, path: string, entry: LoadedModule): void {
  try {
    entry.lib.C_Finalize();
  } catch {
    // finalising a module whose device is gone may fail; initialising is what matters
  }
  entry.generation++;
  entry.initialized = false;
  try {
    initialize(p11, entry.lib, path);
  } catch (err) {
    throw new Pkcs11KeyError('pkcs11_token_removed', `the token still does not answer: ${(err as Error).message}`);
  }
  entry.initialized = true;
}

function releaseModule(path: string): void {
  const entry = modules.get(path);
  if (!entry || --entry.users > 0) return;
  modules.delete(path);
  try {
    entry.lib.C_Finalize();
  } catch {
    // already gone with its token
  }
}

function trimmed(text: string): string {
  return text.replace(/\0/g, '').trim();
}

function findSlot(lib: pkcs11js.PKCS11, options: Pkcs11KeyOptions): Buffer {
  const slots = lib.C_GetSlotList(true);
  if (options.token) {
    const found = slots.find(slot => trimmed(lib.C_GetTokenInfo(slot).label) === options.token);
    if (!found)
      throw new Pkcs11KeyError(
        'pkcs11_token_not_found',
        `no token labelled ${JSON.stringify(options.token)} in ${options.module} (tokens: ${slots.map(slot => JSON.stringify(trimmed(lib.C_GetTokenInfo(slot).label))).join(', ') || 'none'})`,
      );
    return found;
  }
  const slot = slots[options.slot ?? 0];
  if (!slot)
    throw new Pkcs11KeyError('pkcs11_token_not_found', `no token in slot ${options.slot ?? 0} of ${options.module}`);
  return slot;
}

/** The value inside a DER OCTET STRING (how CKA_EC_POINT comes back). */
function octetString(der: Buffer): Buffer {
  if (der[0] !== 0x04) return der;
  let length = der[1];
  let offset = 2;
  if (length & 0x80) {
    const bytes = length & 0x7f;
    length = der.subarray(2, 2 + bytes).reduce((sum, byte) => sum * 256 + byte, 0);
    offset = 2 + bytes;
  }
  return der.subarray(offset, offset + length);
}

function findObject(lib: pkcs11js.PKCS11, session: Buffer, template: pkcs11js.Template): Buffer | undefined {
  lib.C_FindObjectsInit(session, template);
  try {
    return lib.C_FindObjects(session) ?? undefined;
  } finally {
    lib.C_FindObjectsFinal(session);
  }
}

export function openPkcs11Key(options: Pkcs11KeyOptions): TokenKey {
  const p11 = loadPkcs11js();
  if (options.storage === 'tpm' && options.keyType !== 'p256')
    throw new Pkcs11KeyError('pkcs11_unsupported_key', 'a TPM holds P-256 keys, not Ed25519: choose P-256');
  const loaded = openModule(p11, options.module);
  const { lib } = loaded;
  let session: Buffer | undefined;
  let handles: { privateKey: Buffer; publicKey: PublicKey } | undefined;
  /** The module's generation the session was opened in; and whether the next open restarts it. */
  let generation = loaded.generation;
  let restartFirst = false;
  let created = false;

  const fail = (err: unknown, what: string, code = reasonOf(p11, err)): never => {
    if (err instanceof Pkcs11KeyError) throw err;
    if (code === 'pkcs11_token_removed') {
      session = undefined;
      handles = undefined;
    }
    throw new Pkcs11KeyError(code, `${what}: ${(err as Error).message}`);
  };

  /** The session (logged in) and the key's handles, opened again after the token went away. */
  const open = (): { session: Buffer; privateKey: Buffer; publicKey: PublicKey } => {
    if (session && handles && generation === loaded.generation) return { session, ...handles };
    try {
      if (!loaded.initialized || (restartFirst && generation === loaded.generation))
        restartModule(p11, options.module, loaded);
      restartFirst = false;
      generation = loaded.generation;
      const slot = findSlot(lib, options);
      session = lib.C_OpenSession(slot, p11.CKF_SERIAL_SESSION | p11.CKF_RW_SESSION);
      try {
        lib.C_Login(session, p11.CKU_USER, options.pin);
      } catch (err) {
        if ((err as { code?: unknown }).code !== p11.CKR_USER_ALREADY_LOGGED_IN) throw err;
      }
      handles = keyPair(session);
      return { session, ...handles };
    } catch (err) {
      session = undefined;
      return fail(err, `opening the key ${options.keyLabel}`);
    }
  };

  const keyPair = (opened: Buffer): { privateKey: Buffer; publicKey: PublicKey } => {
    const label = { type: p11.CKA_LABEL, value: options.keyLabel };
    let privateKey = findObject(lib, opened, [{ type: p11.CKA_CLASS, value: p11.CKO_PRIVATE_KEY }, label]);
    let publicHandle = findObject(lib, opened, [{ type: p11.CKA_CLASS, value: p11.CKO_PUBLIC_KEY }, label]);
    if (!privateKey || !publicHandle) {
      if (!options.create)
        throw new Pkcs11KeyError(
          'pkcs11_key_not_found',
          `no key pair labelled ${JSON.stringify(options.keyLabel)} in the token`,
        );
      ({ privateKey, publicKey: publicHandle } = generate(opened));
      created = true;
    }
    const [{ value: keyType }, { value: point }] = lib.C_GetAttributeValue(opened, publicHandle, [
      { type: p11.CKA_KEY_TYPE },
      { type: p11.CKA_EC_POINT },
    ]);
    // CK_ULONG in the platform's byte order: 8 bytes on 64-bit gateways, 4 on 32-bit ARM.
    const ulong = keyType as Buffer;
    const kind = ulong.length === 4 ? ulong.readUInt32LE(0) : Number(ulong.readBigUInt64LE(0));
    const raw = octetString(point as Buffer);
    if (kind === CKK_EC_EDWARDS && options.keyType === 'ed25519' && raw.length === 32)
      return { privateKey, publicKey: Ed25519PublicKey.fromRaw(new Uint8Array(raw)) };
    if (kind === p11.CKK_EC && options.keyType === 'p256' && raw.length === 65)
      return { privateKey, publicKey: P256PublicKey.fromUncompressed(new Uint8Array(raw)) };
    throw new Pkcs11KeyError(
      'pkcs11_unsupported_key',
      `the key labelled ${JSON.stringify(options.keyLabel)} is not an ${options.keyType === 'p256' ? 'EC P-256' : 'Ed25519'} key`,
    );
  };

  const generate = (opened: Buffer): { privateKey: Buffer; publicKey: Buffer } => {
    const ed25519 = options.keyType === 'ed25519';
    const id = crypto.createHash('sha256').update(options.keyLabel).digest().subarray(0, 16);
    const common = [
      { type: p11.CKA_TOKEN, value: true },
      { type: p11.CKA_LABEL, value: options.keyLabel },
      { type: p11.CKA_ID, value: id },
      { type: p11.CKA_KEY_TYPE, value: ed25519 ? CKK_EC_EDWARDS : p11.CKK_EC },
    ];
    const keys = lib.C_GenerateKeyPair(
      opened,
      { mechanism: ed25519 ? CKM_EC_EDWARDS_KEY_PAIR_GEN : p11.CKM_EC_KEY_PAIR_GEN },
      [
        ...common,
        { type: p11.CKA_CLASS, value: p11.CKO_PUBLIC_KEY },
        { type: p11.CKA_VERIFY, value: true },
        { type: p11.CKA_EC_PARAMS, value: ed25519 ? ED25519_OID : P256_OID },
      ],
      [
        ...common,
        { type: p11.CKA_CLASS, value: p11.CKO_PRIVATE_KEY },
        { type: p11.CKA_SIGN, value: true },
        { type: p11.CKA_PRIVATE, value: true },
        // Never leaves the token, in plain or wrapped.
        { type: p11.CKA_SENSITIVE, value: true },
        { type: p11.CKA_EXTRACTABLE, value: false },
      ],
    );
    return keys;
  };

  let publicKey: PublicKey;
  try {
    publicKey = open().publicKey;
  } catch (err) {
    releaseModule(options.module);
    throw err;
  }
  const alg = publicKey.alg;
  let closed = false;
  return {
    alg,
    publicKey,
    storage: options.storage,
    created,
    sign(message: Uint8Array): Uint8Array {
      if (closed) throw new Pkcs11KeyError('pkcs11_failed', 'the key was closed');
      const opened = open();
      try {
        if (alg === 'EdDSA') {
          lib.C_SignInit(opened.session, { mechanism: CKM_EDDSA }, opened.privateKey);
          return new Uint8Array(lib.C_Sign(opened.session, Buffer.from(message), Buffer.alloc(64)));
        }
        const digest = crypto.createHash('sha256').update(message).digest();
        lib.C_SignInit(opened.session, { mechanism: p11.CKM_ECDSA }, opened.privateKey);
        return new Uint8Array(lib.C_Sign(opened.session, digest, Buffer.alloc(64)));
      } catch (err) {
        // The key signed before, so a failure now is the token or the way to it (a TPM
        // restarted, an HSM unplugged): the next signature opens everything again.
        restartFirst = true;
        const reason = reasonOf(p11, err);
        return fail(
          err,
          `the token stopped answering while signing with ${options.keyLabel}`,
          reason === 'pkcs11_failed' ? 'pkcs11_token_removed' : reason,
        );
      }
    },
    close() {
      if (closed) return;
      closed = true;
      if (session)
        try {
          lib.C_CloseSession(session);
        } catch {
          // the token may be gone already
        }
      releaseModule(options.module);
    },
  };
}
