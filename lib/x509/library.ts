/**
 * @peculiar/x509, loaded on first use: only a verifier that issues certificates and a gateway that
 * asks for one pay for it. Its dependency injection (tsyringe) needs reflect-metadata loaded
 * before it, and its default crypto provider is set to Node's WebCrypto.
 */
import { webcrypto } from 'node:crypto';
import type * as X509 from '@peculiar/x509';

export type X509Library = typeof X509;

let loaded: X509Library | undefined;

export function x509(): X509Library {
  if (!loaded) {
    require('reflect-metadata');
    loaded = require('@peculiar/x509') as X509Library;
    loaded.cryptoProvider.set(webcrypto as unknown as Crypto);
  }
  return loaded;
}

/** WebCrypto, as @peculiar/x509's verifying and hashing calls want it. */
export const nodeCrypto = webcrypto as unknown as Crypto;

export function pem(label: 'CERTIFICATE' | 'X509 CRL' | 'PRIVATE KEY', der: Uint8Array): string {
  const body = Buffer.from(der)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;
}
