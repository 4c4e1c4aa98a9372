import * as assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { IdentityApiClient } from '../../lib/edge/api-client';

type Route = (
  req: http.IncomingMessage,
  body: string,
) => { status: number; body?: unknown; type?: string; delayMs?: number; headers?: Record<string, string> };

/** A scripted peer on a random loopback port, standing in for the verifier. */
async function fakeVerifier(route: Route): Promise<{
  url: string;
  seen: Array<{ url?: string; headers: http.IncomingHttpHeaders; body: string }>;
  close(): Promise<void>;
}> {
  const seen: Array<{ url?: string; headers: http.IncomingHttpHeaders; body: string }> = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', chunk => {
      body += chunk;
    });
    req.on('end', () => {
      seen.push({ url: req.url, headers: req.headers, body });
      const answer = route(req, body);
      setTimeout(() => {
        res.writeHead(answer.status, { 'content-type': answer.type ?? 'application/json', ...answer.headers });
        res.end(
          answer.body === undefined ? '' : typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body),
        );
      }, answer.delayMs ?? 0);
    });
  });
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/api/`,
    seen,
    close: () =>
      new Promise(resolve => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('lib/edge/api-client', () => {
  let peer: Awaited<ReturnType<typeof fakeVerifier>> | undefined;
  let client: IdentityApiClient | undefined;
  afterEach(async () => {
    client?.close();
    await peer?.close();
    peer = undefined;
  });

  it('attests for the normalised base URL and refuses what is not an http(s) URL', () => {
    assert.equal(
      new IdentityApiClient({ baseUrl: 'http://Verifier.LOCAL:80/m2m/' }).audience,
      'http://verifier.local/m2m',
    );
    assert.throws(() => new IdentityApiClient({ baseUrl: 'ftp://x' }), { code: 'bad_url' });
    assert.throws(() => new IdentityApiClient({ baseUrl: 'not a url' }), { code: 'bad_url' });
  });

  it('keeps credentials of the base URL out of its error messages and the audience', async () => {
    client = new IdentityApiClient({ baseUrl: 'http://operator:s3cret-pass@127.0.0.1:1/m2m', timeoutMs: 2000 });
    assert.equal(client.audience, 'http://127.0.0.1:1/m2m');
    await assert.rejects(client.challenge('press-7'), (err: Error & { code: string }) => {
      assert.equal(err.code, 'verifier_unreachable');
      assert.doesNotMatch(err.message, /s3cret-pass|operator/);
      return true;
    });
    assert.throws(
      () => new IdentityApiClient({ baseUrl: 'ftp://operator:s3cret-pass@x' }),
      (err: Error) => !/s3cret-pass/.test(err.message),
    );
  });

  it('does not follow a redirect to another host, so the admin key never goes there', async () => {
    const elsewhere = await fakeVerifier(() => ({ status: 200, body: { total: 0, devices: [] } }));
    try {
      peer = await fakeVerifier(() => ({ status: 307, headers: { location: `${elsewhere.url}v1/devices` } }));
      client = new IdentityApiClient({ baseUrl: peer.url, apiKey: 'admin-key-for-this-host-only' });
      await assert.rejects(client.listDevices({}), (err: Error & { code: string }) => {
        assert.equal(err.code, 'http_307');
        assert.match(err.message, /redirected to http:\/\/127\.0\.0\.1:\d+\/api\/v1\/devices/);
        return true;
      });
      assert.deepEqual(elsewhere.seen, []);
    } finally {
      await elsewhere.close();
    }
  });

  it('registers with the enrollment token as a bearer credential and tells created from known', async () => {
    peer = await fakeVerifier(req => ({
      status: req.headers.authorization === 'Bearer enrol-1' ? 201 : 401,
      body: { deviceId: 'press-7', status: 'active' },
    }));
    client = new IdentityApiClient({ baseUrl: peer.url, enrollmentToken: 'enrol-1' });
    assert.deepEqual(await client.register('a.b.c'), { deviceId: 'press-7', status: 'active', created: true });
    assert.equal(peer.seen[0].url, '/api/v1/devices');
    assert.deepEqual(JSON.parse(peer.seen[0].body), { registration: 'a.b.c' });
  });

  it('turns an RFC 9457 problem into an ApiError carrying the problem code and status', async () => {
    peer = await fakeVerifier(() => ({
      status: 409,
      type: 'application/problem+json',
      body: {
        type: 'about:blank',
        title: 'Conflict',
        status: 409,
        code: 'key_conflict',
        detail: 'another key is registered for press-7',
      },
    }));
    client = new IdentityApiClient({ baseUrl: peer.url });
    await assert.rejects(client.register('a.b.c'), {
      name: 'ApiError',
      code: 'key_conflict',
      status: 409,
      message: /another key is registered/,
    });
  });

  it('names a plain HTTP failure by its status', async () => {
    peer = await fakeVerifier(() => ({ status: 502, type: 'text/html', body: '<h1>Bad Gateway</h1>' }));
    client = new IdentityApiClient({ baseUrl: peer.url });
    await assert.rejects(client.challenge('press-7'), { code: 'http_502', status: 502 });
  });

  it('refuses an answer that does not match the schema', async () => {
    peer = await fakeVerifier(() => ({ status: 200, body: { decision: 'maybe', reasons: [] } }));
    client = new IdentityApiClient({ baseUrl: peer.url });
    await assert.rejects(client.attest('a.b.c'), { code: 'bad_response' });
  });

  it('reports a verifier that does not answer in time', async () => {
    peer = await fakeVerifier(() => ({
      status: 201,
      body: { nonce: 'x'.repeat(43), expiresAt: 'soon' },
      delayMs: 500,
    }));
    client = new IdentityApiClient({ baseUrl: peer.url, timeoutMs: 100 });
    await assert.rejects(client.challenge('press-7'), { code: 'verifier_timeout' });
  });

  it('reports a verifier that is not there', async () => {
    peer = await fakeVerifier(() => ({ status: 200 }));
    const url = peer.url;
    await peer.close();
    peer = undefined;
    client = new IdentityApiClient({ baseUrl: url });
    await assert.rejects(client.health(), { code: 'verifier_unreachable' });
  });
});
