/**
 * A Signer of this package (a file key, or a key that never leaves a TPM or an HSM) in the shape
 * @peculiar/x509 signs with: a WebCrypto key and a provider whose `subtle.sign` calls the Signer.
 * So a CA key in PKCS#11 issues certificates like a key in memory, and nothing exports a key.
 */
import { webcrypto } from 'node:crypto';
import { type Signer, spkiOf } from '../crypto/keys';

export interface SignerForX509 {
  crypto: Crypto;
  keys: CryptoKeyPair;
  signingAlgorithm: Algorithm | EcdsaParams;
}

export function signerForX509(signer: Signer): SignerForX509 {
  const algorithm = signer.alg === 'ES256' ? { name: 'ECDSA', namedCurve: 'P-256' } : { name: 'Ed25519' };
  const key = (type: KeyType) =>
    ({ algorithm, type, extractable: false, usages: type === 'private' ? ['sign'] : ['verify'] }) as CryptoKey;
  const subtle = {
    async sign(_algorithm: unknown, _key: CryptoKey, data: BufferSource): Promise<ArrayBuffer> {
      const bytes = ArrayBuffer.isView(data)
        ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        : new Uint8Array(data);
      return Uint8Array.from(signer.sign(bytes)).buffer;
    },
    async exportKey(format: string): Promise<ArrayBuffer> {
      if (format !== 'spki') throw new Error(`only the public key can be exported, as spki, not ${format}`);
      return Uint8Array.from(spkiOf(signer.publicKey)).buffer;
    },
    digest: webcrypto.subtle.digest.bind(webcrypto.subtle),
  };
  return {
    crypto: {
      subtle,
      getRandomValues: webcrypto.getRandomValues.bind(webcrypto),
      randomUUID: webcrypto.randomUUID.bind(webcrypto),
    } as unknown as Crypto,
    keys: { privateKey: key('private'), publicKey: key('public') },
    signingAlgorithm: signer.alg === 'ES256' ? { name: 'ECDSA', hash: 'SHA-256' } : { name: 'Ed25519' },
  };
}
