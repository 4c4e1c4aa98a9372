import type { AxiosError } from 'axios';
import { M2MError } from '../errors';

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
