import type { AxiosError, AxiosResponse } from 'axios';
import { M2MError } from '../errors';
import { redactUrl } from '../url';

export interface TransportNames {
  /** Who did not answer, for the message: "identity API", "Didit". */
  service: string;
  /** Its URL without credentials. */
  url: string;
  codes: { timeout: string; unreachable: string; badResponse: string };
}

/** A request that got no usable HTTP answer (timeout, refused, reset, oversized) as a coded error. */
export function transportError(err: unknown, names: TransportNames): M2MError {
  const axiosError = err as AxiosError;
  if (axiosError.code === 'ECONNABORTED' || axiosError.code === 'ETIMEDOUT')
    return new M2MError(names.codes.timeout, `${names.service} at ${names.url} did not answer in time`, 0);
  if (axiosError.code === 'ERR_BAD_RESPONSE' || axiosError.code === 'ERR_FR_MAX_CONTENT_LENGTH_EXCEEDED')
    return new M2MError(names.codes.badResponse, `${names.service} at ${names.url} sent an unusable answer`, 0);
  return new M2MError(
    names.codes.unreachable,
    `${names.service} at ${names.url} is unreachable (${axiosError.code ?? 'network error'})`,
    0,
  );
}

/**
 * What a 3xx answer says. Clients that send a key do not follow redirects: axios drops only
 * Authorization and cookies on the way to another host, so an `x-api-key` would go wherever a
 * server (or whoever answers in its place) points.
 */
export function redirectNote(response: AxiosResponse): string | undefined {
  const location = response.headers.location;
  if (response.status < 300 || response.status >= 400 || typeof location !== 'string') return undefined;
  return `redirected to ${redactUrl(location)}; redirects are not followed, so credentials stay with the configured host: set the URL to where it points if you trust it`;
}
