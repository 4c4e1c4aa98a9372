/**
 * The one URL rule both ends of an attestation share (DESIGN.md §3): the verifier's public base
 * URL is the attestation's `aud`, so the device that writes it and the verifier that checks it
 * must turn the same URL into the same string. Credentials, query and fragment never take part
 * (and never reach a message or a log through here).
 */

/**
 * `scheme://host[:port]/path` with the host lower-cased, the scheme's default port dropped and no
 * trailing slash; undefined for anything that is not an http(s) URL.
 */
export function normaliseUrl(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url.trim());
  } catch {
    return undefined;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return undefined;
  // URL already lower-cases the host and drops a default port; the path keeps its case.
  return `${parsed.protocol}//${parsed.host}${parsed.pathname.replace(/\/+$/, '')}`;
}

/** The URL without its user name and password, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (!parsed.username && !parsed.password) return url;
    parsed.username = '';
    parsed.password = '';
    return parsed.href;
  } catch {
    return url.replace(/\/\/[^/@]*@/, '//');
  }
}

/**
 * The path of an HTTP request target, without its query: origin-form (`/v1/x`) as is, so `//x`
 * stays a path and never becomes a URL with a host; absolute-form (`http://host/v1/x`, RFC 9112
 * §3.2.2, which servers must accept) without its scheme and authority.
 */
export function requestPath(target: string | undefined): string {
  const path = (target ?? '/').replace(/^https?:\/\/[^/?#]*/i, '') || '/';
  const query = path.search(/[?#]/);
  return query === -1 ? path : path.slice(0, query);
}
