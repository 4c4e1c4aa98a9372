/**
 * The verifier's certificate authority: device client certificates from one fixed template, and a
 * CRL of those still valid whose device is revoked. The CA key is any Signer (a key the verifier
 * keeps, a PEM file, a key in an HSM), so nothing here exports it.
 */
import * as crypto from 'node:crypto';
import type { Signer } from '../crypto/keys';
import { pem, x509 } from './library';
import { deviceUri } from './request';
import { signerForX509 } from './signing';

/** Clock skew allowed for: a certificate is valid from a minute before it was issued. */
const BACKDATE_MS = 60_000;
const YEAR_MS = 365 * 86_400_000;
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

export interface IssuedCertificate {
  der: Uint8Array;
  pem: string;
  /** Hex, as CRLs and logs show it. */
  serial: string;
  notAfter: number;
  /** RFC 8705 `x5t#S256`: base64url SHA-256 of the DER, for tokens' `cnf`. */
  thumbprint: string;
}

export interface RevokedCertificate {
  serial: string;
  revokedAt: number;
}

function certificateThumbprint(der: Uint8Array): string {
  return crypto.createHash('sha256').update(der).digest('base64url');
}

/** A DER element's content bounds at `offset`: [start of content, end]. */
function derElement(der: Uint8Array, offset: number): [number, number] {
  let length = der[offset + 1];
  let start = offset + 2;
  if (length & 0x80) {
    const bytes = length & 0x7f;
    length = 0;
    for (let i = 0; i < bytes; i++) length = length * 256 + der[start + i];
    start += bytes;
  }
  return [start, start + length];
}

/**
 * RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits, hex. Read straight from the
 * SPKI's DER (SEQUENCE { AlgorithmIdentifier, BIT STRING }) rather than by importing the key
 * through WebCrypto, which would cost more than the rest of a certificate.
 */
function keyIdentifier(spki: Uint8Array): string {
  const [content] = derElement(spki, 0);
  const [, algorithmEnd] = derElement(spki, content);
  const [bits, end] = derElement(spki, algorithmEnd);
  // The BIT STRING's first content byte counts unused bits (always 0 for keys).
  return crypto
    .createHash('sha1')
    .update(spki.subarray(bits + 1, end))
    .digest('hex');
}

/** A new self-signed CA certificate for `signer`: CA, no intermediates below it, ten years. */
export async function createAuthorityCertificate(signer: Signer, name: string, now: number): Promise<Uint8Array> {
  const lib = x509();
  const { crypto: signing, keys, signingAlgorithm } = signerForX509(signer);
  const publicKey = new lib.PublicKey(await signing.subtle.exportKey('spki', keys.publicKey));
  const certificate = await lib.X509CertificateGenerator.create(
    {
      subject: name,
      issuer: name,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + 10 * YEAR_MS),
      publicKey,
      signingKey: keys.privateKey,
      signingAlgorithm,
      extensions: [
        new lib.BasicConstraintsExtension(true, 0, true),
        new lib.KeyUsagesExtension(lib.KeyUsageFlags.keyCertSign | lib.KeyUsageFlags.cRLSign, true),
        new lib.SubjectKeyIdentifierExtension(keyIdentifier(new Uint8Array(publicKey.rawData))),
      ],
    },
    signing,
  );
  return new Uint8Array(certificate.rawData);
}

export class CertificateAuthority {
  readonly der: Uint8Array;
  readonly pem: string;
  private readonly certificate: InstanceType<ReturnType<typeof x509>['X509Certificate']>;
  private readonly signing: ReturnType<typeof signerForX509>;
  /** The CA's own key identifier, every certificate's authority key identifier. */
  private readonly keyId: string;

  constructor(
    certificate: Uint8Array,
    private readonly signer: Signer,
  ) {
    const lib = x509();
    this.certificate = new lib.X509Certificate(Buffer.from(certificate));
    this.der = certificate;
    this.pem = pem('CERTIFICATE', certificate);
    this.signing = signerForX509(signer);
    this.keyId = keyIdentifier(new Uint8Array(this.certificate.publicKey.rawData));
  }

  /** Whether the CA certificate is for this signer's key: a key file and a certificate file that do not belong together are refused at start. */
  async matchesKey(): Promise<boolean> {
    const { crypto: signing, keys } = signerForX509(this.signer);
    const spki = Buffer.from(await signing.subtle.exportKey('spki', keys.publicKey));
    return spki.equals(Buffer.from(this.certificate.publicKey.rawData));
  }

  get subject(): string {
    return this.certificate.subject;
  }

  /** A client certificate for `deviceId`'s key from the template: nothing of the request but the key. */
  async issue(deviceId: string, spki: Uint8Array, lifetimeMs: number, now: number): Promise<IssuedCertificate> {
    const lib = x509();
    const { crypto: signing, keys, signingAlgorithm } = this.signing;
    const publicKey = new lib.PublicKey(Buffer.from(spki));
    // X.509 times have whole seconds: the answer says what the certificate says.
    const notAfter = Math.floor((now + lifetimeMs) / 1000) * 1000;
    const certificate = await lib.X509CertificateGenerator.create(
      {
        serialNumber: crypto.randomBytes(16).toString('hex'),
        subject: [{ CN: [deviceId] }],
        issuer: this.certificate.subjectName,
        notBefore: new Date(now - BACKDATE_MS),
        notAfter: new Date(notAfter),
        publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm,
        extensions: [
          new lib.BasicConstraintsExtension(false, undefined, true),
          new lib.KeyUsagesExtension(lib.KeyUsageFlags.digitalSignature, true),
          new lib.ExtendedKeyUsageExtension([CLIENT_AUTH]),
          new lib.SubjectAlternativeNameExtension([{ type: 'url', value: deviceUri(deviceId) }]),
          new lib.SubjectKeyIdentifierExtension(keyIdentifier(spki)),
          new lib.AuthorityKeyIdentifierExtension(this.keyId),
        ],
      },
      signing,
    );
    const der = new Uint8Array(certificate.rawData);
    return {
      der,
      pem: pem('CERTIFICATE', der),
      serial: certificate.serialNumber,
      notAfter,
      thumbprint: certificateThumbprint(der),
    };
  }

  /** A CRL listing `revoked`, valid until `nextUpdate`. */
  async crl(revoked: RevokedCertificate[], now: number, nextUpdate: number): Promise<{ der: Uint8Array; pem: string }> {
    const lib = x509();
    const { crypto: signing, keys, signingAlgorithm } = this.signing;
    const crl = await lib.X509CrlGenerator.create(
      {
        issuer: this.certificate.subjectName,
        thisUpdate: new Date(now - BACKDATE_MS),
        nextUpdate: new Date(nextUpdate),
        signingKey: keys.privateKey,
        signingAlgorithm,
        entries: revoked.map(({ serial, revokedAt }) => ({
          serialNumber: serial,
          revocationDate: new Date(revokedAt),
          reason: lib.X509CrlReason.privilegeWithdrawn,
        })),
        extensions: [new lib.AuthorityKeyIdentifierExtension(this.keyId)],
      },
      signing,
    );
    const der = new Uint8Array(crl.rawData);
    return { der, pem: pem('X509 CRL', der) };
  }
}
