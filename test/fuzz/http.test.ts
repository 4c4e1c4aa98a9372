/**
 * Fuzzes every route of the verifier's HTTP edge, standalone and mounted in Node-RED behind the
 * editor's body parser: random methods, request targets (`//`, bad percent-encoding, unknown
 * routes), headers, bodies and JWS segments mutated from valid registrations and attestations.
 * The rules: the process stays up, nothing answers 5xx, every error is problem+json with a code.
 *
 * Seeded and bounded in `npm test` (M2M_FUZZ_RUNS, default 600 a target); `npm run fuzz` runs
 * longer with a fresh seed and prints the figures.
 */
import * as assert from 'node:assert/strict';
import * as fc from 'fast-check';
import { attestation, makeDevice, registration } from '../fixtures/device';
import { rawRequest } from '../helpers/raw-http';
import { ADMIN_KEY, ENROLLMENT_TOKEN, startHarness, type Harness } from '../verifier/harness';
import {
  helper,
  identityFlow,
  m2mNodes,
  newUserDir,
  removeDir,
  startNodeRed,
  stopNodeRed,
  serveHttpNode,
  type NodeHttp,
} from '../nodes/harness';

const RUNS = Number(process.env.M2M_FUZZ_RUNS) || 600;
const SEED = process.env.M2M_FUZZ_SEED === 'random' ? Date.now() : Number(process.env.M2M_FUZZ_SEED) || 20261125;

interface Target {
  /** Where `/v1` hangs off. */
  base: string;
  /** Valid JWS to mutate. */
  samples: string[];
}

const ROUTES = [
  '/v1/devices',
  '/v1/challenges',
  '/v1/attestations',
  '/v1/devices/{id}',
  '/v1/devices/{id}/revoke',
  '/v1/devices/{id}/approve',
  '/v1/devices/{id}/reinstate',
  '/v1/tokens/introspect',
  '/v1/webhooks/subscribers',
  '/v1/webhooks/subscribers/{id}/enable',
  '/v1/webhooks/deliveries',
  '/v1/webhooks/deliveries?status={id}&limit={id}',
  '/v1/webhooks/deliveries/{id}/replay',
  '/.well-known/jwks.json',
  '/v1/health',
];

/** Printable ASCII without spaces: what survives in a request line or a header value. */
const token = fc.string({ unit: fc.constantFrom(..."abcXYZ019-_.~%/:@[]?#=&+!$'()*,;".split('')), maxLength: 40 });

const deviceId = fc.oneof(
  fc.constantFrom('press-7', '%ZZ', '%', '..', '.', 'a%2Fb', '%00', 'x'.repeat(200), ''),
  token,
);

const target = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.tuple(fc.constantFrom(...ROUTES), deviceId).map(([route, id]) => route.replace('{id}', id)),
  },
  {
    weight: 2,
    arbitrary: fc.tuple(fc.constantFrom('/', '//', '///'), token).map(([prefix, rest]) => `${prefix}${rest}`),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '//',
      '///',
      '//%zz',
      '//[',
      '//a:b@',
      '/v1/devices/%ZZ',
      '/v1//devices',
      '/v1/health?x=%zz',
      '/*',
    ),
  },
);

/** A valid JWS with one of its segments, or the whole of it, damaged. */
function mutatedJws(samples: string[]): fc.Arbitrary<string> {
  const damage = fc.oneof(
    fc
      .tuple(fc.nat(), fc.constantFrom('.', '=', '%', 'A', '-', '_', '/', '+', '\u0000', 'é'))
      .map(([at, char]) => (jws: string) => {
        const i = at % Math.max(1, jws.length);
        return jws.slice(0, i) + char + jws.slice(i + 1);
      }),
    fc.nat().map(at => (jws: string) => jws.slice(0, at % Math.max(1, jws.length))),
    fc.constantFrom(0, 1, 2).map(
      segment => (jws: string) =>
        jws
          .split('.')
          .map((part, i) => (i === segment ? part.slice(0, 1) : part))
          .join('.'),
    ),
    fc.jsonValue({ maxDepth: 3 }).map(value => (jws: string) => {
      const [header, , signature] = jws.split('.');
      return `${header}.${Buffer.from(JSON.stringify(value) ?? 'null').toString('base64url')}.${signature}`;
    }),
    fc
      .record({
        alg: fc.constantFrom('none', 'HS256', 'EdDSA', 'ES256', ''),
        typ: fc.constantFrom('m2m-attestation+jwt', 'm2m-registration+jwt', 'at+jwt', 'JWT'),
      })
      .map(header => (jws: string) => {
        const [, payload, signature] = jws.split('.');
        return `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${payload}.${signature}`;
      }),
    fc.constant((jws: string) => jws.split('.').reverse().join('.')),
  );
  return fc
    .tuple(fc.constantFrom(...samples), fc.array(damage, { minLength: 1, maxLength: 3 }))
    .map(([jws, steps]) => steps.reduce((acc, step) => step(acc), jws));
}

function body(samples: string[]): fc.Arbitrary<string | undefined> {
  const jws = mutatedJws(samples);
  return fc.oneof(
    fc.constant(undefined),
    fc.jsonValue({ maxDepth: 4 }).map(value => JSON.stringify(value)),
    fc.record({ attestation: jws }).map(value => JSON.stringify(value)),
    fc.record({ registration: jws }).map(value => JSON.stringify(value)),
    fc.record({ deviceId }).map(value => JSON.stringify(value)),
    fc.record({ token: jws }).map(value => JSON.stringify(value)),
    jws.map(value => `token=${value}`),
    fc.string({ maxLength: 200 }),
    fc.constantFrom('{', '{"attestation":', '[]', 'null', '"x"', '{"deviceId":{"$gt":""}}', `{"a":${'['.repeat(3000)}`),
  );
}

const headers = fc.record({
  contentType: fc.constantFrom(
    undefined,
    'application/json',
    'application/x-www-form-urlencoded',
    'text/plain',
    'application/json; charset=latin1',
    'multipart/form-data',
  ),
  apiKey: fc.constantFrom(undefined, ADMIN_KEY, 'guess', ''),
  authorization: fc.constantFrom(undefined, `Bearer ${ENROLLMENT_TOKEN}`, 'Bearer guess', 'Basic x', 'Bearer'),
});

interface FuzzFigures {
  requests: number;
  statuses: Record<number, number>;
  ms: number;
}

async function fuzz(t: Target, figures: FuzzFigures): Promise<void> {
  const started = Date.now();
  const method = fc.oneof(
    { weight: 6, arbitrary: fc.constant('POST') },
    { weight: 3, arbitrary: fc.constant('GET') },
    fc.constantFrom('PUT', 'DELETE', 'PATCH', 'OPTIONS'),
  );
  const request = fc.record({ method, target, headers, body: body(t.samples) });
  await fc.assert(
    fc.asyncProperty(request, async ({ method, target: path, headers: h, body: text }) => {
      const lines = [
        `${method} ${new URL(t.base).pathname.replace(/\/$/, '')}${path} HTTP/1.1`,
        'Host: verifier',
        'Connection: close',
      ];
      if (h.contentType) lines.push(`Content-Type: ${h.contentType}`);
      if (h.apiKey !== undefined) lines.push(`x-api-key: ${h.apiKey}`);
      if (h.authorization) lines.push(`Authorization: ${h.authorization}`);
      if (text !== undefined) lines.push(`Content-Length: ${Buffer.byteLength(text)}`);
      const answer = await rawRequest(t.base, `${lines.join('\r\n')}\r\n\r\n${text ?? ''}`, 5000);
      figures.requests++;
      figures.statuses[answer.status] = (figures.statuses[answer.status] ?? 0) + 1;
      assert.ok(answer.status >= 200 && answer.status < 500, `${method} ${path} → ${answer.status}\n${answer.body}`);
      if (answer.status >= 400) {
        assert.match(
          answer.headers,
          /content-type: application\/problem\+json/i,
          `${method} ${path} → ${answer.headers}`,
        );
        assert.equal(typeof JSON.parse(answer.body).code, 'string');
      }
    }),
    { numRuns: RUNS, seed: SEED, endOnFailure: true },
  );
  figures.ms += Date.now() - started;
  const health = await fetch(`${t.base}/v1/health`);
  assert.equal(health.status, 200, 'still up');
}

async function samplesFor(base: string, register: (jws: string) => Promise<void>): Promise<string[]> {
  const device = makeDevice('press-7');
  const jws = registration(device);
  await register(jws);
  const nonce = 'N'.repeat(43);
  return [jws, attestation(device, base, nonce), attestation(makeDevice(), base, nonce)];
}

const figures: Record<string, FuzzFigures> = {};

describe(`fuzz: the verifier's HTTP edge (${RUNS} requests a target, seed ${SEED})`, function () {
  this.timeout(Math.max(60_000, RUNS * 100));

  after(() => {
    if (process.env.M2M_FUZZ_REPORT) {
      for (const [name, f] of Object.entries(figures)) {
        console.log(
          `fuzz ${name}: ${f.requests} requests in ${(f.ms / 1000).toFixed(1)} s (${Math.round(f.requests / (f.ms / 1000))}/s), statuses ${JSON.stringify(f.statuses)}`,
        );
      }
      console.log(`fuzz seed ${SEED}, max RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MB`);
    }
  });

  describe('standalone', () => {
    let v: Harness;
    before(async () => {
      v = await startHarness({ adminKey: ADMIN_KEY, enrollmentToken: ENROLLMENT_TOKEN });
    });
    after(async () => {
      await v.stop();
    });

    it('stays up and answers every request below 500, errors as problem+json', async () => {
      const samples = await samplesFor(v.url, async jws => {
        await v.post('/v1/devices', { registration: jws }, { authorization: `Bearer ${ENROLLMENT_TOKEN}` });
      });
      figures.standalone = { requests: 0, statuses: {}, ms: 0 };
      await fuzz({ base: v.url, samples }, figures.standalone);
    });
  });

  describe('hostile patterns (issue #20)', () => {
    let v: Harness;
    beforeEach(async () => {
      v = await startHarness({
        adminKey: ADMIN_KEY,
        enrollmentToken: ENROLLMENT_TOKEN,
        connections: { headersTimeoutMs: 300, requestTimeoutMs: 600, idleTimeoutMs: 60_000 },
      });
    });
    afterEach(async () => {
      await v.stop();
    });

    it('refuses bodies nested past 32 levels, however deep and in whatever shape, before parsing them', async () => {
      const nested = fc
        .tuple(fc.integer({ min: 33, max: 200_000 }), fc.constantFrom('[', '{"a":', '[{"b":'))
        .map(([depth, opener]) => `{"attestation":${opener.repeat(depth)}`);
      await fc.assert(
        fc.asyncProperty(nested, async text => {
          const answer = await v.post('/v1/attestations', text);
          assert.ok(
            (answer.status === 400 && answer.body.code === 'nested_too_deep') ||
              (answer.status === 413 && answer.body.code === 'payload_too_large'),
            `${answer.status} ${answer.body?.code}`,
          );
        }),
        { numRuns: Math.min(RUNS, 60), seed: SEED },
      );
    });

    it('writes nothing for a replayed attestation (no session, so no event), however often it comes back', async () => {
      const device = makeDevice();
      await v.post(
        '/v1/devices',
        { registration: registration(device, v.clock.now) },
        {
          authorization: `Bearer ${ENROLLMENT_TOKEN}`,
        },
      );
      const nonce = (await v.post('/v1/challenges', { deviceId: device.deviceId })).body.nonce;
      const captured = attestation(device, v.url, nonce, { now: v.clock.now });
      assert.equal((await v.post('/v1/attestations', { attestation: captured })).body.decision, 'approved');
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 1, max: 20 }), async times => {
          for (let i = 0; i < times; i++) {
            const answer = await v.post('/v1/attestations', { attestation: captured });
            assert.deepEqual(answer.body.reasons, ['nonce_reused']);
          }
        }),
        { numRuns: Math.min(RUNS, 20), seed: SEED },
      );
      const history = (await v.get(`/v1/devices/${device.deviceId}/history`, { 'x-api-key': ADMIN_KEY })).body;
      assert.equal(history.sessions.length, 1, 'the replays wrote no session');
    });

    it('closes every slow client by the request timeout, whatever it trickles, and keeps serving', async () => {
      const trickle = fc.record({
        // Never a line end: the request never completes, the client only keeps the socket busy.
        bytes: fc.array(fc.constantFrom('G', 'E', 'T', ' ', '/', 'x', ':', '{', 'a'), {
          minLength: 1,
          maxLength: 40,
        }),
        everyMs: fc.integer({ min: 20, max: 150 }),
      });
      await fc.assert(
        fc.asyncProperty(trickle, async ({ bytes, everyMs }) => {
          const { hostname, port } = new URL(v.url);
          const socket = require('node:net').connect(Number(port), hostname);
          const closed = new Promise<number>(resolve => socket.once('close', () => resolve(Date.now())));
          socket.on('error', () => undefined);
          const opened = Date.now();
          let i = 0;
          const timer = setInterval(() => {
            if (socket.destroyed) return clearInterval(timer);
            socket.write(bytes[i++ % bytes.length]);
          }, everyMs);
          const at = await Promise.race([closed, new Promise<number>(resolve => setTimeout(() => resolve(0), 3000))]);
          clearInterval(timer);
          socket.destroy();
          assert.ok(at > 0 && at - opened < 2000, `closed after ${at ? at - opened : '> 3000'} ms`);
        }),
        { numRuns: Math.min(RUNS, 12), seed: SEED },
      );
      assert.equal((await fetch(`${v.url}/v1/health`)).status, 200);
    });
  });

  describe('mounted in Node-RED', () => {
    let http: NodeHttp;
    let userDir: string;
    before(async () => {
      await startNodeRed();
      http = await serveHttpNode();
      userDir = newUserDir();
      const { flow, credentials } = identityFlow(http.url);
      credentials.verifier = { enrollmentToken: ENROLLMENT_TOKEN, adminKey: ADMIN_KEY };
      await helper.load([http.capture, ...m2mNodes], flow, credentials);
    });
    after(async () => {
      await stopNodeRed();
      await http.close();
      removeDir(userDir);
    });

    it('stays up and answers every request below 500, errors as problem+json', async () => {
      const base = `${http.url}/m2m`;
      const samples = await samplesFor(base, async jws => {
        await fetch(`${base}/v1/devices`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${ENROLLMENT_TOKEN}` },
          body: JSON.stringify({ registration: jws }),
        });
      });
      figures.nodeRed = { requests: 0, statuses: {}, ms: 0 };
      await fuzz({ base, samples }, figures.nodeRed);
    });
  });
});
