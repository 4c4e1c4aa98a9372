/**
 * The gateway's side of short-lived client certificates: a fresh P-256 TLS key for each
 * attestation, its PKCS#10 request (which the attestation carries, so the device key vouches for
 * it), and the issued certificate with its key kept in a 0600 file, so a restart reconnects
 * without waiting for the next attestation. The TLS key is ephemeral on purpose: Node's TLS cannot
 * use a key in a TPM or an HSM, and a key that lives half an hour is worth little to a thief.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { P256PrivateKey } from '../crypto/p256';
import * as s from '../schema';
import { buildCertificateRequest } from '../x509/request';

export interface TlsIdentity {
  /** PKCS#8 PEM. */
  key: string;
  /** PEM, as issued. */
  certificate: string;
  notAfter: number;
}

export interface PendingRequest {
  csr: Uint8Array;
  key: string;
}

const saved = s.object({
  key: s.string({ maxLength: 4096 }),
  certificate: s.string({ maxLength: 16 * 1024 }),
  notAfter: s.number({ integer: true, min: 0 }),
});

/** A new TLS key and the request for it, naming the device. */
export async function newCertificateRequest(deviceId: string): Promise<PendingRequest> {
  const key = P256PrivateKey.generate();
  const jwk = { ...key.publicKey.toJwk(), d: Buffer.from(key.exportScalar()).toString('base64url') };
  const pem = crypto.createPrivateKey({ key: jwk, format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' });
  return { csr: await buildCertificateRequest(key, deviceId), key: pem.toString() };
}

/** The certificate an approval brought, checked to be for the requested key and not yet expired. */
export function issuedIdentity(request: PendingRequest, certificatePem: string): TlsIdentity {
  const certificate = new crypto.X509Certificate(certificatePem);
  const requested = crypto.createPublicKey(request.key).export({ type: 'spki', format: 'der' });
  if (!certificate.publicKey.export({ type: 'spki', format: 'der' }).equals(requested))
    throw new Error('the certificate is not for the key this gateway asked for');
  return { key: request.key, certificate: certificatePem, notAfter: Date.parse(certificate.validTo) };
}

export class CertificateFile {
  constructor(private readonly file: string) {}

  /** The saved identity while its certificate is still valid at `now`. */
  load(now = Date.now()): TlsIdentity | undefined {
    try {
      const identity = saved.parse(JSON.parse(fs.readFileSync(this.file, 'utf8')), 'certificate file');
      return identity.notAfter > now ? identity : undefined;
    } catch {
      return undefined;
    }
  }

  save(identity: TlsIdentity): void {
    const temporary = `${this.file}.tmp`;
    fs.writeFileSync(temporary, JSON.stringify(identity), { mode: 0o600 });
    fs.renameSync(temporary, this.file);
  }

  remove(): void {
    fs.rmSync(this.file, { force: true });
  }
}
