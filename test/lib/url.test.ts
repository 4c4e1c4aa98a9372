import * as assert from 'node:assert/strict';
import { normaliseUrl, redactUrl, requestPath } from '../../lib/url';

describe('lib/url', () => {
  it('writes one URL one way: lower-case host, no default port, no trailing slash', () => {
    for (const url of [
      'http://Gateway.local:80/m2m',
      'http://gateway.local/m2m/',
      'HTTP://GATEWAY.LOCAL/m2m//',
      ' http://gateway.local:80/m2m?x=1#top ',
    ]) {
      assert.equal(normaliseUrl(url), 'http://gateway.local/m2m', url);
    }
    assert.equal(normaliseUrl('https://v.example:443/'), 'https://v.example');
    assert.equal(normaliseUrl('https://v.example:8443/M2M'), 'https://v.example:8443/M2M');
  });

  it('leaves credentials out of the normalised URL', () => {
    assert.equal(normaliseUrl('http://user:pass@verifier:8787/m2m'), 'http://verifier:8787/m2m');
  });

  it('answers undefined for what is not an http(s) URL', () => {
    for (const url of ['', 'not a url', 'ftp://x/y', '//host/path', 'javascript:alert(1)'])
      assert.equal(normaliseUrl(url), undefined, url);
  });

  it('redacts the user name and password of a URL for messages', () => {
    assert.equal(redactUrl('http://user:pass@verifier:8787/m2m'), 'http://verifier:8787/m2m');
    assert.equal(redactUrl('http://verifier/m2m'), 'http://verifier/m2m');
    assert.doesNotMatch(redactUrl('not a url but //user:pass@host'), /pass/);
  });

  it('takes the path of a request target: // stays a path, absolute-form loses scheme and host', () => {
    assert.equal(requestPath('//'), '//');
    assert.equal(requestPath('//a:b@x/v1'), '//a:b@x/v1');
    assert.equal(requestPath('/v1/health?x=%zz'), '/v1/health');
    assert.equal(requestPath('http://verifier:8787/v1/health?x'), '/v1/health');
    assert.equal(requestPath('HTTPS://verifier'), '/');
    assert.equal(requestPath(undefined), '/');
  });
});
