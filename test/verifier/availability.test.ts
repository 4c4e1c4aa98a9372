/**
 * The verifier stays available to real clients whatever the others do (issue #20): slow and
 * half-open clients, connection floods under several workers, a database that is down or frozen,
 * bodies built to burn CPU, credential guessing. Each case failed before its fix.
 */
import * as assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { M2MError } from '../../lib/errors';
import { SqliteStore } from '../../lib/verifier';
import type { VerifierStore } from '../../lib/verifier/store/types';
import { rawRequest } from '../helpers/raw-http';
import { startCli } from '../helpers/verifier-cli';
import { ADMIN_KEY, type Harness, admin, enrol, startHarness } from './harness';

/**
 * A client that, as an attacker's would, keeps its side open when the server ends its own (unless
 * `allowHalfOpen` is false: then a server that closes is seen closing at once).
 */
function connect(url: string, allowHalfOpen = true): Promise<net.Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port: Number(port), host: hostname, allowHalfOpen }, () => resolve(socket));
    socket.once('error', reject);
  });
}

function closedWithin(socket: net.Socket, ms: number): Promise<boolean> {
  return new Promise(resolve => {
    if (socket.destroyed || socket.readyState === 'closed') return resolve(true);
    const timer = setTimeout(() => resolve(false), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Writes one byte every `everyMs` until the socket closes; what the server sent is collected. */
function trickle(socket: net.Socket, head: string, everyMs: number): { received: () => string; stop: () => void } {
  let received = '';
  socket.on('data', chunk => {
    received += chunk;
  });
  socket.on('error', () => undefined);
  socket.write(head);
  const timer = setInterval(() => {
    if (!socket.destroyed) socket.write('x');
  }, everyMs);
  socket.once('close', () => clearInterval(timer));
  return { received: () => received, stop: () => clearInterval(timer) };
}

/** A store whose calls fail like an unreachable database, or never answer, while `mode` says so. */
function flakyStore(inner: VerifierStore): { store: VerifierStore; mode: { now: 'up' | 'down' | 'frozen' } } {
  const mode = { now: 'up' as 'up' | 'down' | 'frozen' };
  const store = new Proxy(inner, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof value !== 'function' || property === 'close') return value;
      return (...args: unknown[]) => {
        if (mode.now === 'down')
          return Promise.reject(
            Object.assign(new Error('connect ECONNREFUSED 10.0.0.9:5432'), { code: 'ECONNREFUSED' }),
          );
        if (mode.now === 'frozen') return new Promise(() => undefined);
        return value.apply(target, args);
      };
    },
  });
  return { store, mode };
}

describe('verifier: availability under hostile clients and a failing database', () => {
  let v: Harness | undefined;
  afterEach(async () => {
    await v?.stop();
    v = undefined;
  });

  describe('slow clients', () => {
    it('closes a socket that trickles its headers once the 408 is sent, whatever the client keeps sending', async () => {
      v = await startHarness({ connections: { headersTimeoutMs: 300, idleTimeoutMs: 60_000 } });
      const socket = await connect(v.url);
      const client = trickle(socket, 'GET /v1/health HTTP/1.1\r\nHost: v\r\nX-Slow: ', 100);
      const closed = await closedWithin(socket, 3000);
      client.stop();
      socket.destroy();
      assert.match(client.received(), /^HTTP\/1\.1 408 /, 'answered 408');
      assert.ok(closed, 'closed although the client kept trickling');
    });

    it('closes a socket that trickles its body by the request timeout', async () => {
      v = await startHarness({ connections: { headersTimeoutMs: 300, requestTimeoutMs: 600, idleTimeoutMs: 60_000 } });
      const socket = await connect(v.url);
      const client = trickle(
        socket,
        'POST /v1/challenges HTTP/1.1\r\nHost: v\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n',
        100,
      );
      const closed = await closedWithin(socket, 4000);
      client.stop();
      socket.destroy();
      assert.ok(closed, 'closed although the body kept coming');
    });

    it('lets a real client in while trickling clients hold every other slot', async () => {
      v = await startHarness({
        connections: { headersTimeoutMs: 300, maxConnections: 20, maxConnectionsPerAddress: 20, idleTimeoutMs: 60_000 },
      });
      const sockets = await Promise.all(Array.from({ length: 20 }, () => connect(v!.url)));
      const clients = sockets.map(socket => trickle(socket, 'GET /v1/health HTTP/1.1\r\nHost: v\r\nX-Slow: ', 100));
      try {
        await Promise.all(sockets.map(socket => closedWithin(socket, 3000)));
        assert.equal((await v.get('/v1/health')).status, 200);
      } finally {
        for (const client of clients) client.stop();
        for (const socket of sockets) socket.destroy();
      }
    });
  });

  describe('requests built to cost', () => {
    it('answers an HTTP/1.1 request without Host with problem+json', async () => {
      v = await startHarness();
      const answer = await rawRequest(v.url, 'GET /v1/health HTTP/1.1\r\nConnection: close\r\n\r\n');
      assert.equal(answer.status, 400);
      assert.match(answer.headers, /content-type: application\/problem\+json/i);
      assert.equal(JSON.parse(answer.body).code, 'missing_host');
    });

    it('refuses a deeply nested body before parsing it', async () => {
      v = await startHarness();
      const body = `{"deviceId":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
      const answer = await v.post('/v1/challenges', body);
      assert.deepEqual([answer.status, answer.body.code], [400, 'nested_too_deep']);
      assert.equal(
        (await v.post('/v1/challenges', `{"deviceId":${'['.repeat(20)}${']'.repeat(20)}}`)).body.code,
        'invalid_request',
      );
    });

    it('does not report an upload the client abandoned as an internal error', async () => {
      const errors: unknown[] = [];
      v = await startHarness({ onError: err => errors.push(err) });
      const socket = await connect(v.url);
      socket.write(
        'POST /v1/challenges HTTP/1.1\r\nHost: v\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"devi',
      );
      await new Promise(resolve => setTimeout(resolve, 100));
      socket.destroy();
      await new Promise(resolve => setTimeout(resolve, 200));
      assert.deepEqual(errors, []);
      assert.equal((await v.get('/v1/health')).status, 200);
    });
  });

  describe('credentials', () => {
    it('answers 429 to an address after ten wrong admin keys, before comparing even the right one', async () => {
      v = await startHarness();
      for (let i = 0; i < 10; i++)
        assert.equal((await v.get('/v1/devices', { 'x-api-key': `guess-${i}` })).status, 403);
      const throttled = await v.get('/v1/devices', admin);
      assert.deepEqual([throttled.status, throttled.body.code], [429, 'rate_limited']);
      const metrics = await fetch(`${v.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
      assert.equal(metrics.status, 429, 'the bearer spelling is the same credential');
      v.clock.now += 5_000;
      assert.equal((await v.get('/v1/devices', admin)).status, 200, 'one more try after the wait');
      const text = await (await fetch(`${v.url}/metrics`, { headers: admin })).text();
      assert.match(text, /^m2m_credential_refusals_total\{credential="admin",outcome="wrong"\} 10$/m);
      assert.match(text, /^m2m_credential_refusals_total\{credential="admin",outcome="throttled"\} 2$/m);
    });

    it('throttles wrong enrollment tokens the same way', async () => {
      v = await startHarness();
      for (let i = 0; i < 10; i++)
        assert.equal((await v.post('/v1/devices', {}, { authorization: `Bearer wrong-${i}` })).status, 403);
      assert.equal((await v.post('/v1/devices', {}, enrol)).status, 429);
    });

    it('refuses to start with an admin key or enrollment token anyone could guess', async () => {
      await assert.rejects(startHarness({ adminKey: 'abc' }), (err: M2MError) => err.code === 'weak_secret');
      await assert.rejects(
        startHarness({ enrollmentToken: 'short-token' }),
        (err: M2MError) => err.code === 'weak_secret',
      );
    });
  });

  describe('a database that is down or frozen', () => {
    let dir: string;
    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-avail-'));
    });

    it('answers 503 store_unavailable while it is down, logs no stack, and serves again when it is back', async () => {
      const { store, mode } = flakyStore(new SqliteStore(path.join(dir, 'verifier.db')));
      const errors: unknown[] = [];
      const availability: boolean[] = [];
      v = await startHarness(
        { store, onError: err => errors.push(err), onStoreAvailability: up => availability.push(up) },
        dir,
      );
      mode.now = 'down';
      for (const answer of [await v.post('/v1/challenges', { deviceId: 'line-1' }), await v.get('/readyz')]) {
        assert.deepEqual([answer.status, answer.body.code], [503, 'store_unavailable']);
        assert.doesNotMatch(
          JSON.stringify(answer.body),
          /10\.0\.0\.9|5432|ECONNREFUSED/,
          'nothing of where the store is',
        );
      }
      mode.now = 'up';
      assert.equal((await v.get('/readyz')).status, 200);
      assert.deepEqual(errors, [], 'an outage is not an internal error');
      assert.deepEqual(availability, [false, true], 'told once when it went, once when it came back');
    });

    it('answers within the deadline while it is frozen, /readyz too', async () => {
      const { store, mode } = flakyStore(new SqliteStore(path.join(dir, 'verifier.db')));
      v = await startHarness({ store, storeDeadlineMs: 300 }, dir);
      mode.now = 'frozen';
      const started = Date.now();
      const [challenge, ready] = await Promise.all([
        v.post('/v1/challenges', { deviceId: 'line-1' }),
        v.get('/readyz'),
      ]);
      assert.deepEqual([challenge.status, ready.status], [503, 503]);
      assert.ok(Date.now() - started < 3000, `answered after ${Date.now() - started} ms`);
      mode.now = 'up';
    });
  });

  describe('the command line', () => {
    let dir: string;
    let child: ChildProcess | undefined;
    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-avail-cli-'));
    });
    afterEach(async () => {
      if (child && child.exitCode === null) {
        const exited = new Promise(resolve => child!.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      child = undefined;
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const env = { M2M_ADMIN_KEY: ADMIN_KEY, M2M_ENROLLMENT_TOKEN: 'enrollment-token-for-tests' };

    it('with two workers, closes connections over the cap at once and holds the cap for both together', async function () {
      this.timeout(30_000);
      const started = await startCli(
        ['--port', '0', '--workers', '2', '--max-connections', '4', '--store', `sqlite:${path.join(dir, 'v.db')}`],
        env,
      );
      child = started.child;
      const sockets = await Promise.all(Array.from({ length: 10 }, () => connect(started.url, false)));
      for (const socket of sockets) socket.on('error', () => undefined);
      const closed = await Promise.all(sockets.map(socket => closedWithin(socket, 1500)));
      for (const socket of sockets) socket.destroy();
      assert.equal(closed.filter(c => !c).length, 4, 'four open, as --max-connections says, the rest closed at once');
    });

    it('refuses a key rotation faster than an hour, and secrets that are too short', async () => {
      await assert.rejects(
        startCli(['--port', '0', '--store', `sqlite:${path.join(dir, 'v.db')}`, '--key-rotation', '1s'], env),
        /--key-rotation must be at least 1h/,
      );
      await assert.rejects(
        startCli(['--port', '0', '--store', `sqlite:${path.join(dir, 'v.db')}`], { ...env, M2M_ADMIN_KEY: 'abc' }),
        /M2M_ADMIN_KEY has 3 characters/,
      );
    });
  });
});
