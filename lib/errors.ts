/**
 * Errors with a stable `code`: nodes map codes to i18n keys (`m2m.errors.<code>`), the verifier
 * maps them to RFC 9457 problem types. Callers branch on `code` or the class, never on messages.
 */
export class M2MError extends Error {
  readonly code: string;
  /** HTTP status when the error crosses the verifier's HTTP edge. */
  readonly status: number;
  readonly detail?: Record<string, unknown>;

  constructor(code: string, message: string, status = 500, detail?: Record<string, unknown>) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.detail = detail;
  }
}

/** Untrusted input did not match its schema. */
export class ValidationError extends M2MError {
  constructor(message: string, detail?: Record<string, unknown>) {
    super('invalid_request', message, 400, detail);
  }
}

/** A signature, JWS or key did not check out. */
export class SignatureError extends M2MError {
  constructor(code: 'bad_signature' | 'unsupported_alg' | 'wrong_typ' | 'malformed_jws' | 'bad_key', message: string) {
    super(code, message, 400);
  }
}

/** The keystore file is missing its secret, unreadable, corrupt or was encrypted with another secret. */
export class KeystoreError extends M2MError {
  constructor(
    code:
      | 'keystore_corrupt'
      | 'keystore_unreadable'
      | 'keystore_wrong_secret'
      | 'keystore_no_secret'
      | 'keystore_exists'
      | 'keystore_missing',
    message: string,
  ) {
    super(code, message, 500);
  }
}
