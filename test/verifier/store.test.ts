/**
 * One suite, two back-ends: everything the verifier relies on its store for, held to the same
 * answers on SQLite and PostgreSQL, including what concurrent callers may and may not get.
 */
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import { Ed25519PrivateKey } from '../../lib/crypto/ed25519';
import { decisionEvent, deviceEvent } from '../../lib/verifier/events';
import { openStore } from '../../lib/verifier/store/open';
import type { SigningKeyRecord, VerifierStore } from '../../lib/verifier/store/types';
import type { DeviceRecord, SessionRecord } from '../../lib/verifier/types';
import { type StoreSpec, forEachBackend } from '../helpers/stores';

const T0 = 1_800_000_000_000;

function device(deviceId = `dev-${crypto.randomBytes(3).toString('hex')}`): DeviceRecord {
  const key = Ed25519PrivateKey.generate().publicKey;
  return {
    deviceId,
    jwk: key.toJwk(),
    thumbprint: key.thumbprint(),
    fingerprint: { salt: 'c2FsdA', components: { 'machine-id': 'abc' } },
    metadata: { line: 'press shop' },
    status: 'active',
    generation: 0,
    createdAt: T0,
    updatedAt: T0,
  };
}

/** An approval of `record` to record when its nonce is consumed, and what was recorded. */
function approval(record: DeviceRecord) {
  const session: SessionRecord = {
    sessionId: crypto.randomUUID(),
    deviceId: record.deviceId,
    decision: 'approved',
    reasons: [],
    createdAt: T0,
  };
  const event = decisionEvent(session, 'default', T0);
  return { session, event, decide: () => ({ session, event }) };
}

function key(kid: string, signsFrom: number): SigningKeyRecord {
  return { kid, alg: 'EdDSA', seed: crypto.randomBytes(32).toString('hex'), createdAt: signsFrom - 1, signsFrom };
}

forEachBackend('verifier store', backend => {
  let db: StoreSpec;
  let store: VerifierStore;

  beforeEach(async () => {
    db = await backend.fresh();
    store = await openStore(db.spec);
  });

  afterEach(async () => {
    await store?.close();
    await db?.drop();
  });

  it('registers a device once, with one event, and reads it back as written', async () => {
    const record = device();
    assert.equal(await store.insertDevice(record, deviceEvent('device.registered', record, T0)), true);
    assert.equal(
      await store.insertDevice({ ...record, thumbprint: 'other' }, deviceEvent('device.registered', record, T0)),
      false,
    );
    assert.deepEqual(await store.getDevice(record.deviceId), { ...record, workflow: undefined });
    assert.deepEqual(
      (await store.listDevices({ offset: 0, limit: 10 })).devices.map(d => d.deviceId),
      [record.deviceId],
    );
    assert.equal(await store.getDevice('nobody'), undefined);
    assert.equal((await store.outboxStats()).unfanned, 1);
  });

  it('changes a status only from the allowed ones, and a revocation bumps the generation', async () => {
    const record = device();
    await store.insertDevice(record, deviceEvent('device.registered', record, T0));
    const revoked = deviceEvent('device.revoked', record, T0);
    assert.equal(await store.setDeviceStatus(record.deviceId, 'active', ['pending'], revoked, T0 + 1), false);
    assert.equal(await store.setDeviceStatus(record.deviceId, 'revoked', ['active'], revoked, T0 + 1), true);
    assert.equal(await store.setDeviceStatus('nobody', 'revoked', ['active'], revoked, T0 + 1), false);
    const after = await store.getDevice(record.deviceId);
    assert.equal(after?.status, 'revoked');
    assert.equal(after?.generation, 1);
    assert.equal(after?.updatedAt, T0 + 1);
    const reinstated = deviceEvent('device.reinstated', record, T0);
    assert.equal(await store.setDeviceStatus(record.deviceId, 'active', ['revoked'], reinstated, T0 + 2), true);
    assert.equal((await store.getDevice(record.deviceId))?.generation, 1);
    assert.equal(
      (await store.outboxStats()).unfanned,
      3,
      'registered, revoked, reinstated: no event for a refused change',
    );
  });

  it('consumes a nonce once and tells every other attempt why not, writing nothing for them', async () => {
    const record = device();
    await store.insertDevice(record, deviceEvent('device.registered', record, T0));
    await store.insertNonce({ nonce: 'n1', deviceId: record.deviceId, expiresAt: T0 + 60_000 });
    await store.insertNonce({ nonce: 'n2', deviceId: record.deviceId, expiresAt: T0 + 60_000 });
    const other = device();
    await store.insertDevice(other, deviceEvent('device.registered', other, T0));
    const outcome = async (nonce: string, by = record, now = T0) =>
      (await store.consumeNonceAndRecord(nonce, by, now, approval(by).decide)).outcome;
    assert.equal(await outcome('n1'), 'consumed');
    assert.equal(await outcome('n1'), 'nonce_reused');
    assert.equal(await outcome('n2', other), 'nonce_other_device');
    assert.equal(await outcome('n2', record, T0 + 60_000), 'nonce_expired');
    assert.equal(await outcome('never-issued'), 'nonce_unknown');
    assert.equal(await outcome('n2'), 'consumed', 'failed attempts consumed nothing');
    assert.equal((await store.outboxStats()).unfanned, 2 + 2, 'two registrations, two decisions, nothing else');
    assert.equal((await store.deviceHistory(record.deviceId, 10)).sessions.length, 2);
  });

  it('consumes nothing for a device that changed since the decision read it', async () => {
    const record = device();
    await store.insertDevice(record, deviceEvent('device.registered', record, T0));
    await store.insertNonce({ nonce: 'n1', deviceId: record.deviceId, expiresAt: T0 + 60_000 });
    await store.setDeviceStatus(record.deviceId, 'revoked', ['active'], deviceEvent('device.revoked', record, T0), T0);
    const stale = await store.consumeNonceAndRecord('n1', record, T0, approval(record).decide);
    assert.equal(stale.outcome, 'device_changed', 'revoked since it was read');
    await store.setDeviceStatus(
      record.deviceId,
      'active',
      ['revoked'],
      deviceEvent('device.reinstated', record, T0),
      T0,
    );
    const older = await store.consumeNonceAndRecord('n1', record, T0, approval(record).decide);
    assert.equal(older.outcome, 'device_changed', 'reinstated, but a generation later');
    const current = (await store.getDevice(record.deviceId))!;
    assert.equal((await store.consumeNonceAndRecord('n1', current, T0, approval(record).decide)).outcome, 'consumed');
  });

  it("numbers a device's events one after another, whatever wrote them", async () => {
    const record = device();
    const events = [deviceEvent('device.registered', record, T0)];
    await store.insertDevice(record, events[0]);
    await store.insertNonce({ nonce: 'n1', deviceId: record.deviceId, expiresAt: T0 + 60_000 });
    const decided = approval(record);
    await store.consumeNonceAndRecord('n1', record, T0, decided.decide);
    events.push(decided.event, deviceEvent('device.revoked', record, T0));
    await store.setDeviceStatus(record.deviceId, 'revoked', ['active'], events[2], T0);
    const declined = approval(record);
    events.push(declined.event);
    await store.recordSession(declined.session, declined.event);
    assert.deepEqual(
      events.map(event => (event.payload.data as { deviceSeq?: number }).deviceSeq),
      [1, 2, 3, 4],
    );
  });

  it('replaces a key only within an open re-key window, once, and never for a revoked device', async () => {
    const record = device();
    await store.insertDevice(record, deviceEvent('device.registered', record, T0));
    const fresh = device(record.deviceId);
    const event = () => deviceEvent('device.rekeyed', record, T0);
    const audit = { action: 'rekeyed' as const, actor: 'device' };
    const replace = (old = record.thumbprint, now = T0 + 10) =>
      store.replaceDeviceKey(record.deviceId, old, fresh, { inWindow: true }, event(), now, audit);
    assert.equal(await replace(), false, 'no window');
    assert.equal(await store.allowRekey(record.deviceId, T0 + 100, event(), T0, { actor: 'anna' }), true);
    assert.equal(await replace(record.thumbprint, T0 + 101), false, 'the window has closed');
    assert.equal(await store.allowRekey(record.deviceId, T0 + 100, event(), T0, { actor: 'anna' }), true);
    assert.equal(await replace('someone-else'), false, 'the old key must be the one read');
    assert.equal(await replace(), true);
    assert.equal(await replace(), false, 'once');
    const after = (await store.getDevice(record.deviceId))!;
    assert.deepEqual([after.thumbprint, after.generation, after.rekeyUntil], [fresh.thumbprint, 1, undefined]);
    await store.setDeviceStatus(record.deviceId, 'revoked', ['active'], event(), T0);
    assert.equal(await store.allowRekey(record.deviceId, T0 + 100, event(), T0, { actor: 'anna' }), false);
    assert.deepEqual(
      (await store.deviceHistory(record.deviceId, 10)).audit.map(entry => entry.action),
      ['rekeyed', 'rekey_allowed', 'rekey_allowed'],
    );
  });

  it('lets exactly one of 50 concurrent attempts consume a nonce', async () => {
    const record = device();
    await store.insertDevice(record, deviceEvent('device.registered', record, T0));
    await store.insertNonce({ nonce: 'raced', deviceId: record.deviceId, expiresAt: T0 + 60_000 });
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, () => store.consumeNonceAndRecord('raced', record, T0, approval(record).decide)),
    );
    assert.equal(outcomes.filter(o => o.outcome === 'consumed').length, 1);
    assert.equal(outcomes.filter(o => o.outcome === 'nonce_reused').length, 49);
  });

  it('keeps the other writes of one moment when one of them fails', async () => {
    const record = device();
    await store.insertDevice(record, deviceEvent('device.registered', record, T0));
    const nonce = (id: string) => ({ nonce: id, deviceId: record.deviceId, expiresAt: T0 + 60_000 });
    const settled = await Promise.allSettled([
      store.insertNonce(nonce('a')),
      store.insertNonce(nonce('a')),
      store.insertNonce(nonce('b')),
    ]);
    assert.deepEqual(
      settled.map(s => s.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    for (const id of ['a', 'b'])
      assert.equal((await store.consumeNonceAndRecord(id, record, T0, approval(record).decide)).outcome, 'consumed');
  });

  it('purges expired nonces, old sessions and delivered events, keeping the rest', async () => {
    const record = device();
    await store.insertDevice(record, deviceEvent('device.registered', record, T0 - 10));
    await store.insertNonce({ nonce: 'old', deviceId: record.deviceId, expiresAt: T0 - 1 });
    await store.insertNonce({ nonce: 'live', deviceId: record.deviceId, expiresAt: T0 + 60_000 });
    const { session, event } = approval(record);
    await store.recordSession({ ...session, createdAt: T0 - 10 }, { ...event, createdAt: T0 - 10 });
    const certificate = { deviceId: record.deviceId, sessionId: session.sessionId, issuedAt: T0 - 10 };
    await store.recordCertificate({ ...certificate, serial: '01', notAfter: T0 - 1 });
    await store.recordCertificate({ ...certificate, serial: '02', notAfter: T0 + 60_000 });
    const counts = await store.purge({
      noncesExpired: T0,
      certificatesExpired: T0,
      sessions: T0,
      deliveredEvents: T0,
      deadDeliveries: T0,
    });
    assert.deepEqual(counts, { nonces: 1, certificates: 1, sessions: 1, events: 2, deliveries: 0 });
    assert.equal((await store.consumeNonceAndRecord('live', record, T0, approval(record).decide)).outcome, 'consumed');
    assert.equal(
      (await store.consumeNonceAndRecord('old', record, T0, approval(record).decide)).outcome,
      'nonce_unknown',
    );
  });

  it('creates one signing key however many callers rotate at once, and keeps what plans add and remove', async () => {
    const plans = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        store.rotateSigningKeys(keys => (keys.length ? {} : { add: key(`k${i}`, T0) })),
      ),
    );
    const kids = new Set(plans.map(keys => keys.map(k => k.kid).join()));
    assert.equal(kids.size, 1, 'every caller saw the same single key');
    assert.equal(plans[0].length, 1);
    const later = key('later', T0 + 1000);
    const keys = await store.rotateSigningKeys(() => ({ add: later }));
    assert.deepEqual(
      keys.map(k => k.kid),
      [plans[0][0].kid, 'later'],
      'oldest signsFrom first',
    );
    assert.deepEqual(keys[1], later);
    assert.deepEqual(
      (await store.rotateSigningKeys(() => ({ remove: [plans[0][0].kid] }))).map(k => k.kid),
      ['later'],
    );
  });

  it('keeps the first certificate authority stored under an id, however many processes store one at once', async () => {
    const authority = (i: number) => ({
      id: 'generated',
      alg: 'ES256' as const,
      secret: `${i}`.repeat(64),
      certificate: `cert-${i}`,
      createdAt: T0 + i,
    });
    const kept = await Promise.all(Array.from({ length: 10 }, (_, i) => store.ensureAuthority(authority(i))));
    assert.equal(new Set(kept.map(record => record.certificate)).size, 1, 'every caller got the same authority');
    assert.deepEqual(await store.ensureAuthority(authority(11)), kept[0]);
    const external = { ...authority(12), id: 'pkcs11:abc', secret: null };
    assert.deepEqual(await store.ensureAuthority(external), external);
  });

  it('lists the valid certificates of revoked devices, with when each device was revoked', async () => {
    const [kept, revoked] = [device(), device()];
    for (const record of [kept, revoked])
      await store.insertDevice(record, deviceEvent('device.registered', record, T0));
    const issued = (deviceId: string, serial: string, notAfter: number) =>
      store.recordCertificate({ serial, deviceId, sessionId: 's', issuedAt: T0, notAfter });
    await issued(kept.deviceId, 'aa', T0 + 60_000);
    await issued(revoked.deviceId, 'bb', T0 + 60_000);
    await issued(revoked.deviceId, 'cc', T0 + 60_000);
    await issued(revoked.deviceId, 'dd', T0 - 1);
    await store.setDeviceStatus(
      revoked.deviceId,
      'revoked',
      ['active'],
      deviceEvent('device.revoked', revoked, T0),
      T0 + 5,
    );
    assert.deepEqual(await store.revokedCertificates(T0), [
      { serial: 'bb', revokedAt: T0 + 5 },
      { serial: 'cc', revokedAt: T0 + 5 },
    ]);
  });

  it('pages, filters and searches the fleet, each device with its latest attestation', async () => {
    for (let i = 0; i < 12; i++) {
      const record = {
        ...device(`line-${String(i).padStart(2, '0')}`),
        status: i % 3 === 0 ? 'pending' : 'active',
      } as const;
      await store.insertDevice(record, deviceEvent('device.registered', record, T0));
    }
    const page = await store.listDevices({ offset: 5, limit: 4 });
    assert.equal(page.total, 12);
    assert.deepEqual(
      page.devices.map(d => d.deviceId),
      ['line-05', 'line-06', 'line-07', 'line-08'],
    );
    const pending = await store.listDevices({ offset: 0, limit: 100, status: 'pending' });
    assert.deepEqual([pending.total, pending.devices[1].deviceId], [4, 'line-03']);
    const found = await store.listDevices({ offset: 0, limit: 100, search: '1' });
    assert.deepEqual(
      found.devices.map(d => d.deviceId),
      ['line-01', 'line-10', 'line-11'],
    );
    assert.equal((await store.listDevices({ offset: 0, limit: 10, search: '%' })).total, 0, 'no LIKE wildcards');

    const line01 = (await store.getDevice('line-01'))!;
    for (const [n, reasons] of [[], ['bad_signature']].entries()) {
      const { session, event } = approval(line01);
      const decided = { ...session, decision: reasons.length ? 'declined' : 'approved', reasons } as const;
      await store.recordSession({ ...decided, createdAt: T0 + n, score: 0.9 }, event);
    }
    const [withSession] = (await store.listDevices({ offset: 0, limit: 1, search: 'line-01' })).devices;
    assert.deepEqual(
      [withSession.lastSession?.decision, withSession.lastSession?.reasons, withSession.lastSession?.score],
      ['declined', ['bad_signature'], 0.9],
    );
  });

  it('keeps who changed a device’s status and why, with its sessions, newest first', async () => {
    const record = device('press-7');
    await store.insertDevice(record, deviceEvent('device.registered', record, T0));
    const event = () => deviceEvent('device.revoked', record, T0);
    await store.setDeviceStatus('press-7', 'revoked', ['active'], event(), T0 + 1, { actor: 'anna', reason: 'stolen' });
    await store.setDeviceStatus('press-7', 'active', ['revoked'], event(), T0 + 2, { actor: 'ben' });
    await store.setDeviceStatus('press-7', 'active', ['revoked'], event(), T0 + 3, { actor: 'refused change' });
    const history = await store.deviceHistory('press-7', 10);
    assert.deepEqual(history.audit, [
      { deviceId: 'press-7', at: T0 + 2, action: 'active', actor: 'ben' },
      { deviceId: 'press-7', at: T0 + 1, action: 'revoked', actor: 'anna', reason: 'stolen' },
    ]);
    assert.deepEqual(history.sessions, []);
  });

  describe('outbox', () => {
    async function events(count: number): Promise<void> {
      for (let i = 0; i < count; i++) {
        const record = device(`dev-${i}`);
        await store.insertDevice(record, deviceEvent('device.registered', record, T0));
      }
    }

    it('fans events out to active configured subscribers only, once', async () => {
      await store.syncSubscribers(
        [
          { id: 'a', url: 'http://a.example/hook' },
          { id: 'b', url: 'http://b.example/hook' },
        ],
        T0,
      );
      await store.setSubscriberStatus('b', 'disabled', 'answered 410', T0);
      await events(3);
      assert.equal(await store.fanOut(2, T0), 2);
      assert.equal(await store.fanOut(100, T0), 1);
      assert.equal(await store.fanOut(100, T0), 0);
      assert.deepEqual(await store.outboxStats(), { unfanned: 0, pending: 3, dead: 0 });
      const subscribers = await store.listSubscribers();
      assert.deepEqual(
        subscribers.map(s => [s.id, s.status, s.configured, s.disabledReason]),
        [
          ['a', 'active', true, undefined],
          ['b', 'disabled', true, 'answered 410'],
        ],
      );
      await store.syncSubscribers([{ id: 'b', url: 'http://b.example/hook' }], T0);
      assert.deepEqual(
        (await store.listSubscribers()).map(s => [s.id, s.configured]),
        [
          ['a', false],
          ['b', true],
        ],
      );
      assert.equal(await store.setSubscriberStatus('nobody', 'active', null, T0), false);
    });

    it('leases each due delivery to one of several concurrent claimers, and gives it back when the lease runs out', async () => {
      await store.syncSubscribers([{ id: 'a', url: 'http://a.example/hook' }], T0);
      await events(20);
      await store.fanOut(100, T0);
      const claims = await Promise.all(Array.from({ length: 4 }, () => store.claimDeliveries(T0, 8, 1000)));
      const ids = claims.flat().map(d => d.id);
      assert.equal(ids.length, 20);
      assert.equal(new Set(ids).size, 20, 'no delivery went to two claimers');
      const first = claims.flat()[0];
      assert.equal(first.url, 'http://a.example/hook');
      assert.equal(JSON.parse(first.body).type, 'device.registered');
      assert.equal(first.attempts, 1);
      assert.deepEqual(await store.claimDeliveries(T0 + 999, 100, 1000), [], 'leased');
      assert.equal(await store.nextDeliveryAt(T0 + 999), undefined, 'nothing due while all are leased');
      const back = await store.claimDeliveries(T0 + 1000, 100, 1000);
      assert.equal(back.length, 20, 'a dead sender’s claims return after the lease');
      assert.ok(back.every(d => d.attempts === 2));
    });

    it('records outcomes, schedules retries, skips waiting subscribers, lists and replays', async () => {
      await store.syncSubscribers(
        [
          { id: 'a', url: 'http://a.example/hook' },
          { id: 'b', url: 'http://b.example/hook' },
        ],
        T0,
      );
      await events(1);
      await store.fanOut(100, T0);
      assert.deepEqual(
        (await store.claimDeliveries(T0, 10, 1000, ['b'])).map(d => d.subscriberId),
        ['a'],
        'b is skipped',
      );
      assert.equal(await store.nextDeliveryAt(T0, ['b']), undefined);
      assert.equal(await store.nextDeliveryAt(T0), T0);
      const [b] = await store.claimDeliveries(T0, 10, 1000);
      const [a] = await store
        .listDeliveries({ status: 'pending', limit: 10 })
        .then(list => list.filter(d => d.subscriberId === 'a'));
      await store.finishDeliveries(
        [
          { id: a.id, outcome: { status: 'delivered', httpStatus: 204 } },
          { id: b.id, outcome: { status: 'pending', nextAttemptAt: T0 + 5000, error: 'HTTP 503', httpStatus: 503 } },
        ],
        T0 + 10,
      );
      assert.equal(await store.nextDeliveryAt(T0 + 10), T0 + 5000);
      const listed = await store.listDeliveries({ limit: 10 });
      const byId = new Map(listed.map(d => [d.subscriberId, d]));
      assert.equal(byId.get('a')?.status, 'delivered');
      assert.equal(byId.get('a')?.deliveredAt, T0 + 10);
      assert.equal(byId.get('b')?.lastError, 'HTTP 503');
      assert.equal(byId.get('b')?.lastStatus, 503);
      assert.equal(byId.get('b')?.type, 'device.registered');
      await store.finishDeliveries([{ id: b.id, outcome: { status: 'dead', error: 'gave up' } }], T0 + 20);
      assert.deepEqual(await store.outboxStats(), { unfanned: 0, pending: 0, dead: 1 });
      assert.deepEqual(
        (await store.listDeliveries({ status: 'dead', limit: 10 })).map(d => d.id),
        [b.id],
      );
      assert.equal(await store.replayDelivery(b.id, T0 + 30), true);
      assert.equal(await store.replayDelivery(b.id, T0 + 30), false, 'already pending');
      assert.equal(await store.replayDelivery(999_999, T0 + 30), false);
      const [replayed] = await store.claimDeliveries(T0 + 30, 10, 1000);
      assert.equal(replayed.id, b.id);
      assert.equal(replayed.attempts, 1, 'attempts counted afresh');
    });

    it('purges delivered deliveries and their events, and dead ones after their own time', async () => {
      await store.syncSubscribers([{ id: 'a', url: 'http://a.example/hook' }], T0);
      await events(2);
      await store.fanOut(100, T0);
      const [one, two] = await store.claimDeliveries(T0, 10, 1000);
      await store.finishDeliveries(
        [
          { id: one.id, outcome: { status: 'delivered' } },
          { id: two.id, outcome: { status: 'dead' } },
        ],
        T0,
      );
      const kept = await store.purge({
        noncesExpired: T0,
        certificatesExpired: T0,
        sessions: T0,
        deliveredEvents: T0 + 1,
        deadDeliveries: T0,
      });
      assert.deepEqual(kept, { nonces: 0, certificates: 0, sessions: 0, events: 1, deliveries: 1 });
      const all = await store.purge({
        noncesExpired: T0,
        certificatesExpired: T0,
        sessions: T0,
        deliveredEvents: T0 + 1,
        deadDeliveries: T0 + 1,
      });
      assert.deepEqual(all, { nonces: 0, certificates: 0, sessions: 0, events: 1, deliveries: 1 });
    });
  });

  describe('migrations', () => {
    it('migrates an empty database to the current version', async () => {
      await store.ping();
    });

    it('migrates a database an older verifier left, keeping its devices and signing key', async () => {
      const old = await backend.fresh();
      try {
        // The version before signing keys got signs_from; every later one is applied on top.
        await old.migrateTo(backend.keysWithoutSignsFrom);
        await old.sql(
          `INSERT INTO signing_keys (kid, seed, created_at) VALUES ('old-kid', '${'ab'.repeat(32)}', ${T0})`,
        );
        await old.sql(
          `INSERT INTO devices (device_id, jwk, thumbprint, fingerprint, metadata, status, created_at, updated_at, generation)
          VALUES ('kept', '{"kty":"OKP"}', 't', '{"salt":"s","components":{}}', '{}', 'active', ${T0}, ${T0}, 2)`,
        );
        const migrated = await openStore(old.spec);
        try {
          await migrated.ping();
          assert.equal((await migrated.getDevice('kept'))?.generation, 2);
          assert.deepEqual(await migrated.deviceHistory('kept', 10), { sessions: [], audit: [] });
          const keys = await migrated.rotateSigningKeys(() => ({}));
          assert.deepEqual(
            keys.map(k => [k.kid, k.signsFrom]),
            [['old-kid', T0]],
            'the old key signs from its creation',
          );
        } finally {
          await migrated.close();
        }
      } finally {
        await old.drop();
      }
    });

    it('refuses a database a newer verifier migrated, and says so', async () => {
      await store.close();
      const table = backend.name === 'SQLite' ? 'PRAGMA user_version = 99' : 'UPDATE schema_version SET version = 99';
      await db.sql(table);
      await assert.rejects(openStore(db.spec), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'store_schema');
        assert.match(err.message, /schema version 99.*upgrade this verifier/);
        return true;
      });
    });
  });
});
