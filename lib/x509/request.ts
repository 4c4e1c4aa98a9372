/**
 * PKCS#10 certificate requests (RFC 2986) for device TLS keys: built on the gateway, checked by
 * the verifier. The verifier takes nothing from a request but its key: the certificate comes from
 * its template. A request that asks for more (to be a CA, other names) is refused rather than
 * quietly trimmed, so the device learns it will not get it.
 */
import type { Signer } from '../crypto/keys';
import { M2MError } from '../errors';
import { nodeCrypto, x509 } from './library';
import { signerForX509 } from './signing';

export type RequestCode = 'bad_csr' | 'csr_other_device' | 'csr_asks_too_much';

export class CertificateRequestError extends M2MError {
  constructor(code: RequestCode, message: string) {
    super(code, message, 400);
  }
}

/** The URI SAN every device certificate carries: the device id as a name a broker or a proxy can match. */
export function deviceUri(deviceId: string): string {
  return `urn:m2m:device:${deviceId}`;
}

const OID = {
  basicConstraints: '2.5.29.19',
  subjectAltName: '2.5.29.17',
  commonName: '2.5.4.3',
  ed25519: '1.3.101.112',
  ecPublicKey: '1.2.840.10045.2.1',
  prime256v1: '1.2.840.10045.3.1.7',
};

/** A request for `signer`'s public key naming the device: DER. */
export async function buildCertificateRequest(signer: Signer, deviceId: string): Promise<Uint8Array> {
  const { crypto, keys, signingAlgorithm } = signerForX509(signer);
  const request = await x509().Pkcs10CertificateRequestGenerator.create(
    { name: [{ [OID.commonName]: [deviceId] }], keys, signingAlgorithm },
    crypto,
  );
  return new Uint8Array(request.rawData);
}

/** What the verifier takes from a checked request: the key, as DER SubjectPublicKeyInfo. */
export interface CheckedRequest {
  spki: Uint8Array;
  keyType: 'Ed25519' | 'P-256';
}

/**
 * Parses and checks a request for `deviceId`: well-formed DER, signed by the key it carries (so
 * the device holds that key), an Ed25519 or P-256 key, no other device's name, no CA, no names
 * beyond the device's own.
 */
export async function checkCertificateRequest(der: Uint8Array, deviceId: string): Promise<CheckedRequest> {
  const lib = x509();
  let request: InstanceType<typeof lib.Pkcs10CertificateRequest>;
  try {
    request = new lib.Pkcs10CertificateRequest(Buffer.from(der));
  } catch (err) {
    throw new CertificateRequestError('bad_csr', `not a PKCS#10 request in DER: ${(err as Error).message}`);
  }
  const { algorithm } = request.publicKey;
  const keyType =
    algorithm.name === 'Ed25519'
      ? 'Ed25519'
      : algorithm.name === 'ECDSA' && (algorithm as EcKeyAlgorithm).namedCurve === 'P-256'
        ? 'P-256'
        : undefined;
  if (!keyType) throw new CertificateRequestError('bad_csr', `the key must be Ed25519 or P-256, not ${algorithm.name}`);
  let signed: boolean;
  try {
    signed = await request.verify(nodeCrypto);
  } catch {
    signed = false;
  }
  if (!signed) throw new CertificateRequestError('bad_csr', 'the request is not signed by the key it carries');

  const names = request.subjectName.toJSON();
  for (const entry of names)
    for (const [type, values] of Object.entries(entry)) {
      if (type !== 'CN' && type !== OID.commonName)
        throw new CertificateRequestError(
          'csr_asks_too_much',
          `the request names ${type}; only CN=${deviceId} may be asked`,
        );
      if (values.some(value => value !== deviceId))
        throw new CertificateRequestError(
          'csr_other_device',
          `the request is for ${values.join(', ')}, not ${deviceId}`,
        );
    }
  for (const extension of request.extensions) {
    if (extension.type === OID.basicConstraints) {
      const constraints = new lib.BasicConstraintsExtension(extension.rawData);
      if (constraints.ca) throw new CertificateRequestError('csr_asks_too_much', 'the request asks to be a CA');
    }
    if (extension.type === OID.subjectAltName) {
      const names = new lib.SubjectAlternativeNameExtension(extension.rawData).names.toJSON();
      const others = names.filter(name => !(name.type === 'url' && name.value === deviceUri(deviceId)));
      if (others.length)
        throw new CertificateRequestError(
          'csr_asks_too_much',
          `the request asks for other names: ${others.map(name => `${name.type}:${name.value}`).join(', ')}`,
        );
    }
  }
  return { spki: new Uint8Array(request.publicKey.rawData), keyType };
}
