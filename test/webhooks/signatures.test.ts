import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as fc from 'fast-check';
import { Webhook } from 'standardwebhooks';
import { diditCanonicalV2, parseLossless, pythonDumps, pythonFloatRepr } from '../../lib/webhooks/python-json';
import { WebhookReceiver } from '../../lib/webhooks/receiver';
import { SeenEvents } from '../../lib/webhooks/seen-events';
import { generateSecret, secretKey, signedHeaders } from '../../lib/webhooks/standard';

/** Computed by test/fixtures/didit-webhooks.py with the algorithm Didit documents. */
const didit: {
  secret: string;
  timestamp: number;
  vectors: Array<{
    name: string;
    body: string;
    reencoded: string;
    canonicalV2: string;
    signature: string;
    signatureV2: string;
    signatureSimple: string;
  }>;
} = JSON.parse(
  fs.readFileSync(path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'didit-webhooks.json'), 'utf8'),
);

const nowSeconds = () => Math.floor(Date.now() / 1000);

describe('webhooks: Python-compatible JSON (Didit X-Signature-V2)', () => {
  for (const vector of didit.vectors) {
    it(`${vector.name}: reproduces the body as sent and the V2 canonical form, also from a re-encoded body`, () => {
      assert.equal(pythonDumps(parseLossless(vector.body), { ensureAscii: true }), vector.body);
      assert.equal(diditCanonicalV2(vector.body), vector.canonicalV2);
      assert.equal(diditCanonicalV2(vector.reencoded), vector.canonicalV2);
    });
  }

  it('is needed: JSON.stringify of the sorted parse differs from Python on integer-like keys and small floats', () => {
    const naive = (text: string) => {
      const sort = (value: any): any =>
        Array.isArray(value)
          ? value.map(sort)
          : value && typeof value === 'object'
            ? Object.fromEntries(
                Object.keys(value)
                  .sort()
                  .map(key => [key, sort(value[key])]),
              )
            : value;
      return JSON.stringify(sort(JSON.parse(text)));
    };
    const differing = didit.vectors.filter(vector => naive(vector.body) !== vector.canonicalV2).map(v => v.name);
    assert.deepEqual(differing, ['small_and_large_floats', 'integer_like_keys']);
  });

  it('writes floats as Python repr() does', () => {
    const cases: Array<[number, string]> = [
      [1e-7, '1e-07'],
      [1.5e-5, '1.5e-05'],
      [0.0001, '0.0001'],
      [0.1, '0.1'],
      [-2.5e-10, '-2.5e-10'],
      [123456789.125, '123456789.125'],
      [1e16, '1e+16'],
      [Number('1.2345678901234567e29'), '1.2345678901234568e+29'],
      [5, '5.0'],
      [-0, '-0.0'],
      [1e-320, '1e-320'],
    ];
    for (const [value, repr] of cases) assert.equal(pythonFloatRepr(value), repr, String(value));
  });

  it('refuses what json.loads refuses, and bodies nested past the limit', () => {
    for (const text of ['{', '{"a":1,}', '[1 2]', '{"a":01}', "{'a':1}", '{"a":1} x', '"\\x"', 'NaN', '']) {
      assert.throws(() => parseLossless(text), /not valid JSON/, text);
    }
    assert.throws(() => parseLossless(`${'['.repeat(100)}${']'.repeat(100)}`), /nests deeper/);
  });

  it('round-trips any JSON value JSON.stringify writes with integers and ASCII keys', () => {
    fc.assert(
      fc.property(fc.jsonValue(), value => {
        const text = JSON.stringify(value);
        // ensure_ascii output parses back to the same value.
        assert.deepEqual(JSON.parse(pythonDumps(parseLossless(text), { ensureAscii: true })), JSON.parse(text));
      }),
      { numRuns: 300 },
    );
  });
});

describe('webhooks: Standard Webhooks signatures, checked against the standardwebhooks package', () => {
  it('signs the published test vector', () => {
    const headers = signedHeaders(
      [secretKey('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')!],
      'msg_p5jXN8AQM9LWM0D4loKWxJek',
      1614265330,
      '{"test": 2432232314}',
    );
    assert.equal(headers['webhook-signature'], 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  });

  it('what we sign, the package verifies; what the package signs, we verify', () => {
    const secret = generateSecret();
    const body = JSON.stringify({
      type: 'attestation.decided',
      timestamp: new Date().toISOString(),
      data: { z: 'Zoë 🎉' },
    });
    const ours = signedHeaders([secretKey(secret)!], 'evt_1', nowSeconds(), body);
    assert.deepEqual(new Webhook(secret).verify(body, ours), JSON.parse(body));

    const date = new Date();
    const theirs = {
      'webhook-id': 'msg_2',
      'webhook-timestamp': String(Math.floor(date.getTime() / 1000)),
      'webhook-signature': new Webhook(secret).sign('msg_2', date, body),
    };
    const received = new WebhookReceiver({ secrets: [secret] }).receive(Buffer.from(body), theirs);
    assert.equal(received.facts.eventId, 'msg_2');
    assert.equal(received.facts.scheme, 'standard');
  });

  it('accepts any of several secrets and any of several signatures (rotation)', () => {
    const [old, current] = [generateSecret(), generateSecret()];
    const body = Buffer.from('{"type":"device.revoked","timestamp":"x","data":{"deviceId":"d","status":"revoked"}}');
    const headers = signedHeaders([secretKey(old)!, secretKey(current)!], 'evt_2', nowSeconds(), body);
    for (const secrets of [[current], [old], ['whsec_unrelated', current]]) {
      const { facts } = new WebhookReceiver({ secrets }).receive(body, headers);
      assert.deepEqual(
        [facts.type, facts.deviceId, facts.status, facts.decision],
        ['device.revoked', 'd', 'revoked', undefined],
      );
    }
  });

  it('refuses a tampered body, a wrong secret, missing headers and timestamps 5 minutes off: 401 each', () => {
    const secret = generateSecret();
    const receiver = new WebhookReceiver({ secrets: [secret] });
    const body = Buffer.from('{"type":"attestation.decided","timestamp":"x","data":{"decision":"approved"}}');
    const at = (seconds: number) => signedHeaders([secretKey(secret)!], 'evt_3', seconds, body);
    const refusals: Array<[Buffer, Record<string, string>]> = [
      [Buffer.from(body.toString().replace('approved', 'declined')), at(nowSeconds())],
      [body, signedHeaders([secretKey(generateSecret())!], 'evt_3', nowSeconds(), body)],
      [body, { ...at(nowSeconds()), 'webhook-signature': '' }],
      [body, { ...at(nowSeconds()), 'webhook-id': 'evt_other' }],
      [body, at(nowSeconds() - 301)],
      [body, at(nowSeconds() + 301)],
      [body, { ...at(nowSeconds()), 'webhook-timestamp': `${nowSeconds()}abc` }],
      [body, {}],
    ];
    for (const [payload, headers] of refusals) {
      assert.throws(
        () => receiver.receive(payload, headers),
        (err: any) => err.status === 401,
        JSON.stringify(headers),
      );
    }
    assert.doesNotThrow(() => receiver.receive(body, at(nowSeconds() - 299)));
  });

  it('answers 400 to a correctly signed body that is not a JSON object', () => {
    const secret = generateSecret();
    for (const text of ['not json', '[1,2]']) {
      const headers = signedHeaders([secretKey(secret)!], 'evt_4', nowSeconds(), text);
      assert.throws(
        () => new WebhookReceiver({ secrets: [secret] }).receive(Buffer.from(text), headers),
        (err: any) => err.status === 400 && err.code === 'malformed_body',
      );
    }
  });
});

describe("webhooks: Didit's scheme", () => {
  const receiver = new WebhookReceiver({ secrets: [didit.secret], now: () => didit.timestamp * 1000 + 10_000 });

  for (const vector of didit.vectors) {
    it(`${vector.name}: X-Signature on the raw bytes, else V2 on a re-encoded body, else Simple (fields marked untrusted)`, () => {
      const raw = receiver.receive(Buffer.from(vector.body), {
        'x-signature': vector.signature,
        'x-signature-v2': 'f'.repeat(64),
      });
      assert.deepEqual([raw.facts.scheme, raw.facts.trusted], ['didit', true]);

      const v2 = receiver.receive(Buffer.from(vector.reencoded), {
        'x-signature': vector.signature,
        'x-signature-v2': vector.signatureV2,
      });
      assert.deepEqual([v2.facts.scheme, v2.facts.trusted, v2.dedupeKey], ['didit-v2', true, raw.dedupeKey]);

      const tampered = Buffer.from(vector.body.replace('"vendor_data":"', '"vendor_data":"other-'));
      const simple = receiver.receive(tampered, {
        'x-signature': vector.signature,
        'x-signature-v2': vector.signatureV2,
        'x-signature-simple': vector.signatureSimple,
      });
      assert.equal(simple.facts.scheme, 'didit-simple');
      assert.equal(simple.facts.trusted, false);
      for (const field of ['vendor_data', 'event_id', 'metadata', 'decision'].filter(f => f in JSON.parse(vector.body)))
        assert.ok(simple.facts.untrusted!.includes(field), field);
      assert.ok(!simple.facts.untrusted!.includes('status'));
    });
  }

  it('maps Didit statuses to decisions and the vendor_data to the device', () => {
    const declined = didit.vectors.find(vector => vector.name === 'declined_with_nesting')!;
    const { facts } = receiver.receive(Buffer.from(declined.body), { 'x-signature': declined.signature });
    assert.deepEqual(
      [facts.decision, facts.status, facts.deviceId, facts.type, facts.eventId],
      ['declined', 'Declined', 'press-7', 'status.updated', '9c0c8b8a-1111-4222-9333-444444444444'],
    );
    const review = didit.vectors.find(vector => vector.name === 'in_review_data_type')!;
    assert.equal(
      receiver.receive(Buffer.from(review.body), { 'x-signature': review.signature }).facts.decision,
      'in_review',
    );
  });

  it("verifies Didit's own published fixture (its WordPress plugin's unicode_names case)", () => {
    const body =
      '{"application_id":"11111111-2222-3333-4444-555555555555","created_at":1774969994,"decision":{"id_verifications":[{"first_name":"Jos\\u00e9","last_name":"M\\u00fcller-\\u00dcnl\\u00fc","node_id":"id_verification_1","place_of_birth":"\\u5317\\u4eac","status":"Approved"}],"session_id":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee","status":"Approved"},"environment":"live","event_id":"9c0c8b8a-1111-4222-9333-444444444444","session_id":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee","status":"Approved","timestamp":1774970000,"vendor_data":"wp-42","webhook_type":"status.updated","workflow_id":"22222222-3333-4444-5555-666666666666","workflow_version":4}';
    const hmac = (text: string) => crypto.createHmac('sha256', didit.secret).update(text).digest('hex');
    assert.equal(hmac(body), 'b7b49a28ae4118438ef4d0f0fd603c4387cc39adf3ed451da18dc521c1d3e7eb');
    assert.equal(hmac(diditCanonicalV2(body)), '7e416d66763a1f7e228ab0d94677f87152ad58560f0c71e8db7eb6b16faf7009');
  });

  it('judges freshness on the signed body timestamp, not on a header a replayer can move', () => {
    const vector = didit.vectors[0];
    const later = new WebhookReceiver({ secrets: [didit.secret], now: () => (didit.timestamp + 301) * 1000 });
    assert.throws(
      () =>
        later.receive(Buffer.from(vector.body), {
          'x-signature': vector.signature,
          'x-timestamp': String(didit.timestamp + 300),
        }),
      (err: any) => err.code === 'stale_timestamp' && err.status === 401,
    );
  });

  const hmac = (secret: string, text: string) => crypto.createHmac('sha256', secret).update(text).digest('hex');

  it("refuses our verifier's delivery replayed on its X-Signature alone, with the Standard headers stripped", () => {
    // What m2m-verifier sends: Standard headers, plus X-Signature keyed with the same whsec_ secret.
    const secret = generateSecret();
    const body = JSON.stringify({
      type: 'device.revoked',
      timestamp: new Date(Date.now() - 600_000).toISOString(),
      data: { deviceId: 'press-1', status: 'revoked' },
    });
    const sent = nowSeconds() - 600;
    const delivery = {
      ...signedHeaders([secretKey(secret)!], 'evt_replayed', sent, body),
      'x-signature': hmac(secret, body),
      'x-timestamp': String(sent),
    };
    const receiver = new WebhookReceiver({ secrets: [secret] });
    assert.throws(
      () => receiver.receive(Buffer.from(body), delivery),
      (err: any) => err.code === 'stale_timestamp',
    );
    const stripped = { 'x-signature': delivery['x-signature'], 'x-timestamp': String(nowSeconds()) };
    assert.throws(
      () => receiver.receive(Buffer.from(body), stripped),
      (err: any) => err.code === 'bad_signature' && err.status === 401 && /no Didit secret/.test(err.message),
    );
  });

  it('judges a Simple signature on the body timestamp also when it is a string, and refuses a body without one', () => {
    const old = nowSeconds() - 30 * 86_400;
    const receiver = new WebhookReceiver({ secrets: [didit.secret] });
    const simple = (timestamp: number | string) => ({
      body: JSON.stringify({ session_id: 's-1', status: 'Approved', webhook_type: 'status.updated', timestamp }),
      headers: {
        'x-signature-simple': hmac(didit.secret, `${timestamp}:s-1:Approved:status.updated`),
        'x-timestamp': String(nowSeconds()),
      },
    });
    for (const timestamp of [old, String(old)]) {
      const { body, headers } = simple(timestamp);
      assert.throws(
        () => receiver.receive(Buffer.from(body), headers),
        (err: any) => err.code === 'stale_timestamp',
        JSON.stringify(timestamp),
      );
    }
    const fresh = simple(String(nowSeconds()));
    assert.equal(receiver.receive(Buffer.from(fresh.body), fresh.headers).facts.scheme, 'didit-simple');

    const undated = JSON.stringify({ session_id: 's-1', status: 'Approved', webhook_type: 'status.updated' });
    assert.throws(
      () =>
        receiver.receive(Buffer.from(undated), {
          'x-signature': hmac(didit.secret, undated),
          'x-timestamp': String(nowSeconds()),
        }),
      (err: any) => err.code === 'stale_timestamp',
    );
  });

  it('keeps two events without an event_id apart, and a re-encoded copy of one together', () => {
    const receiver = new WebhookReceiver({ secrets: [didit.secret] });
    const timestamp = nowSeconds();
    const event = (webhookType: string) =>
      `{"session_id":"s-2","status":"Approved","webhook_type":"${webhookType}","timestamp":${timestamp},"vendor_data":"press-2"}`;
    const key = (body: string, header = 'x-signature', signed = body) =>
      receiver.receive(Buffer.from(body), { [header]: hmac(didit.secret, signed) }).dedupeKey;
    const status = event('status.updated');
    assert.notEqual(key(status), key(event('data.updated')));
    const reencoded = status.replace(/,/g, ', ').replace(/":/g, '": ');
    assert.equal(key(reencoded, 'x-signature-v2', diditCanonicalV2(status)), key(status));
  });

  it('refuses a wrong secret and a signature over another body', () => {
    const vector = didit.vectors[0];
    const wrong = new WebhookReceiver({ secrets: ['another'], now: () => didit.timestamp * 1000 });
    assert.throws(() => wrong.receive(Buffer.from(vector.body), { 'x-signature': vector.signature }), /no X-Signature/);
    assert.throws(
      () => receiver.receive(Buffer.from(vector.body), { 'x-signature': didit.vectors[1].signature }),
      (err: any) => err.status === 401,
    );
  });
});

describe('webhooks: the seen-event memory', () => {
  it('drops a second delivery of an id, also after a restart, and stays bounded', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-seen-'));
    const file = path.join(dir, 'seen.db');
    let now = 1_000_000;
    let seen = new SeenEvents({ file, maxEntries: 1500, retentionMs: 10_000, now: () => now });
    assert.equal(seen.firstTime('evt_a'), true);
    assert.equal(seen.firstTime('evt_a'), false);
    seen.close();
    seen = new SeenEvents({ file, maxEntries: 1500, retentionMs: 10_000, now: () => now });
    assert.equal(seen.firstTime('evt_a'), false);
    for (let i = 0; i < 3000; i++) seen.firstTime(`evt_${i}`);
    now += 20_000;
    for (let i = 3000; i < 4000; i++) seen.firstTime(`evt_${i}`);
    // The trim after 1000 fresh ids dropped the expired ones: evt_a is forgotten, the newest kept.
    assert.equal(seen.firstTime('evt_a'), true);
    assert.equal(seen.firstTime('evt_3999'), false);
    seen.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
