/**
 * Short-lived client certificates for device TLS keys (issue #23), issued only in the answer to an
 * approved attestation: the request travels inside the attestation, so the device key's signature
 * binds the TLS key to that fresh approval, also when the device key sits in a TPM or an HSM that
 * TLS cannot use. The CA key is made on first start and kept in the store (every verifier process
 * issues with it), read from PEM files, or held in an HSM through PKCS#11.
 */
import * as fs from 'node:fs';
import { type Alg, newStoredKey, type Signer, signerFromPrivateKey, storedKey } from '../crypto/keys';
import { type Pkcs11KeyOptions, type TokenKey, openPkcs11Key } from '../edge/pkcs11-key';
import { M2MError } from '../errors';
import { CertificateAuthority, createAuthorityCertificate, type IssuedCertificate } from '../x509/authority';
import { CertificateRequestError, type CheckedRequest, checkCertificateRequest } from '../x509/request';
import type { VerifierStore } from './store/types';

export const MAX_CERTIFICATE_LIFETIME_S = 24 * 3600;
/** A CRL stays valid this long: brokers refuse every client of a CA whose CRL has expired. */
const CRL_VALIDITY_MS = 7 * 86_400_000;
const CRL_CACHE_MS = 1000;

export type AuthoritySource =
  /** Made on first start and kept in the store (the default). */
  | { kind: 'generated'; alg?: Alg }
  /** A CA key and its certificate in PEM files. */
  | { kind: 'files'; keyFile: string; certificateFile: string }
  /** A CA key in an HSM; its certificate from a file, else made on first start and kept in the store. */
  | ({ kind: 'pkcs11'; certificateFile?: string } & Omit<Pkcs11KeyOptions, 'create' | 'storage'>);

export interface CertificateOptions {
  /** How long a certificate is valid: twice the token lifetime by default, at most 24 h. */
  lifetimeSeconds?: number;
  authority?: AuthoritySource;
}

/** What an attestation asks for: a PKCS#10 request (base64url DER) and, if it likes, a shorter lifetime. */
export interface CertificateAsk {
  csr: string;
  lifetime?: number;
}

export interface CheckedAsk extends CheckedRequest {
  lifetimeMs: number;
}

function readFile(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new M2MError('bad_config', `cannot read the ${what} ${file}: ${(err as Error).message}`, 500);
  }
}

/** DER from a PEM certificate file (or DER as it is). */
function certificateDer(file: string): Uint8Array {
  const content = readFile(file, 'CA certificate');
  const text = content.toString('latin1');
  const match = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(text);
  return new Uint8Array(match ? Buffer.from(match[1].replace(/\s+/g, ''), 'base64') : content);
}

export class CertificateIssuer {
  private crlCache?: { at: number; pem: string; der: Uint8Array };

  private constructor(
    readonly authority: CertificateAuthority,
    readonly lifetimeMs: number,
    private readonly store: VerifierStore,
    private readonly tokenKey?: TokenKey,
  ) {}

  static async open(
    store: VerifierStore,
    options: CertificateOptions,
    tokenTtlSeconds: number,
    issuerName: string,
    now: number,
  ): Promise<CertificateIssuer> {
    const lifetime = options.lifetimeSeconds ?? 2 * tokenTtlSeconds;
    if (!Number.isInteger(lifetime) || lifetime < 60 || lifetime > MAX_CERTIFICATE_LIFETIME_S)
      throw new M2MError(
        'bad_config',
        `certificates live from 60 s to 24 h (${MAX_CERTIFICATE_LIFETIME_S} s), not ${lifetime} s`,
        500,
      );
    const source = options.authority ?? { kind: 'generated' };
    const name = `CN=m2m identity device CA, O=${issuerName}`;
    let signer: Signer;
    let certificate: Uint8Array;
    let tokenKey: TokenKey | undefined;
    if (source.kind === 'files') {
      try {
        signer = signerFromPrivateKey(readFile(source.keyFile, 'CA key'));
      } catch (err) {
        throw new M2MError('bad_config', `the CA key ${source.keyFile}: ${(err as Error).message}`, 500);
      }
      certificate = certificateDer(source.certificateFile);
    } else if (source.kind === 'pkcs11') {
      const { kind: _kind, certificateFile, ...token } = source;
      tokenKey = openPkcs11Key({ ...token, create: true, storage: 'pkcs11' });
      signer = tokenKey;
      certificate = certificateFile
        ? certificateDer(certificateFile)
        : await storedCertificate(store, `pkcs11:${signer.publicKey.thumbprint()}`, signer, name, now);
    } else {
      const alg = source.alg ?? 'ES256';
      const made = newStoredKey(alg);
      const stored = await store.ensureAuthority({
        id: 'generated',
        alg,
        secret: Buffer.from(made.secret).toString('hex'),
        certificate: Buffer.from(await createAuthorityCertificate(made.key, name, now)).toString('base64'),
        createdAt: now,
      });
      // Another process may have stored its CA first: that one is the CA.
      signer = storedKey(stored.alg, new Uint8Array(Buffer.from(stored.secret ?? '', 'hex')));
      certificate = new Uint8Array(Buffer.from(stored.certificate, 'base64'));
    }
    let authority: CertificateAuthority;
    try {
      authority = new CertificateAuthority(certificate, signer);
    } catch (err) {
      tokenKey?.close();
      throw new M2MError('bad_config', `the CA certificate does not parse: ${(err as Error).message}`, 500);
    }
    if (!(await authority.matchesKey())) {
      tokenKey?.close();
      throw new M2MError('bad_config', 'the CA certificate is not for the CA key', 500);
    }
    return new CertificateIssuer(authority, lifetime * 1000, store, tokenKey);
  }

  /**
   * Checks what an attestation asks for, before anything is decided or written: a request for
   * `deviceId` signed by its own key, a lifetime no longer than the template's.
   */
  async check(ask: CertificateAsk, deviceId: string): Promise<CheckedAsk> {
    if (ask.lifetime !== undefined && ask.lifetime * 1000 > this.lifetimeMs)
      throw new CertificateRequestError(
        'csr_asks_too_much',
        `the request asks for ${ask.lifetime} s; certificates here live at most ${this.lifetimeMs / 1000} s`,
      );
    const checked = await checkCertificateRequest(Buffer.from(ask.csr, 'base64url'), deviceId);
    return { ...checked, lifetimeMs: ask.lifetime ? ask.lifetime * 1000 : this.lifetimeMs };
  }

  /** Issues and records the certificate of an approved attestation. */
  async issue(deviceId: string, sessionId: string, checked: CheckedAsk, now: number): Promise<IssuedCertificate> {
    const issued = await this.authority.issue(deviceId, checked.spki, checked.lifetimeMs, now);
    await this.store.recordCertificate({
      serial: issued.serial,
      deviceId,
      sessionId,
      issuedAt: now,
      notAfter: issued.notAfter,
    });
    return issued;
  }

  /** The CRL: valid certificates of revoked devices, rebuilt at most once a second. */
  async crl(now: number): Promise<{ pem: string; der: Uint8Array }> {
    if (this.crlCache && now - this.crlCache.at < CRL_CACHE_MS) return this.crlCache;
    const revoked = await this.store.revokedCertificates(now);
    const crl = await this.authority.crl(revoked, now, now + CRL_VALIDITY_MS);
    this.crlCache = { at: now, ...crl };
    return crl;
  }

  /** A revocation or reinstatement: the next CRL is built afresh. */
  forgetCrl(): void {
    this.crlCache = undefined;
  }

  close(): void {
    this.tokenKey?.close();
  }
}

/** The certificate stored for an externally held CA key, made now with that key if there is none. */
async function storedCertificate(
  store: VerifierStore,
  id: string,
  signer: Signer,
  name: string,
  now: number,
): Promise<Uint8Array> {
  const stored = await store.ensureAuthority({
    id,
    alg: signer.alg,
    secret: null,
    certificate: Buffer.from(await createAuthorityCertificate(signer, name, now)).toString('base64'),
    createdAt: now,
  });
  return new Uint8Array(Buffer.from(stored.certificate, 'base64'));
}
