import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Ed25519PrivateKey } from '../../lib/crypto/ed25519';
import { signPeerMessage } from '../../lib/edge/peer-signature';
import { WINDOW } from '../../lib/tinyml/features';
import { plant, samples } from '../tinyml/fixtures';
import { helper, m2mNodes, newUserDir, removeDir, startNodeRed, stopNodeRed } from './harness';

const ENROL_WINDOWS = 10;

interface Outputs {
  trusted: any[];
  suspicious: any[];
}

function flow(config: Record<string, unknown> = {}) {
  return [
    {
      id: 'verify',
      type: 'm2m-tinyml-verify',
      timeProperty: 'timestamp',
      enrolWindows: ENROL_WINDOWS,
      unverified: 'reject',
      enrolOnRequest: true,
      wires: [['trusted'], ['suspicious']],
      ...config,
    },
    { id: 'trusted', type: 'helper' },
    { id: 'suspicious', type: 'helper' },
  ];
}

describe('nodes: m2m-tinyml-verify', function () {
  this.timeout(60_000);
  let userDir: string;
  let out: Outputs;

  beforeEach(async () => {
    await startNodeRed();
    userDir = newUserDir();
  });
  afterEach(async () => {
    await stopNodeRed();
    removeDir(userDir);
  });

  async function load(config: Record<string, unknown> = {}) {
    await helper.load(m2mNodes, flow(config));
    out = { trusted: [], suspicious: [] };
    helper.getNode('trusted').on('input', (msg: unknown) => out.trusted.push(msg));
    helper.getNode('suspicious').on('input', (msg: unknown) => out.suspicious.push(msg));
  }

  /** Sends messages and waits until all of them have left on one output or the other. */
  async function send(messages: Array<Record<string, unknown>>): Promise<void> {
    const expected = out.trusted.length + out.suspicious.length + messages.length;
    const node = helper.getNode('verify');
    for (const msg of messages) node.receive(msg);
    const started = Date.now();
    while (out.trusted.length + out.suspicious.length < expected) {
      if (Date.now() - started > 30_000)
        throw new Error(`only ${out.trusted.length + out.suspicious.length} of ${expected} messages came out`);
      await new Promise(resolve => setTimeout(resolve, 20));
    }
  }

  const readings = (recording: ReturnType<ReturnType<typeof plant>['genuine']['record']>, topic = 'press-1') =>
    samples(recording).map(s => ({ topic, payload: s.value, timestamp: s.time }));

  async function enrol(seed = 11) {
    const site = plant(seed);
    const messages = readings(site.genuine.record(1e6, ENROL_WINDOWS * WINDOW));
    (messages[0] as { m2m?: unknown }).m2m = { enrol: true };
    await send(messages);
    return site;
  }

  it('enrols a source on msg.m2m.enrol, then routes genuine readings to output 1 with the score', async () => {
    await load();
    const site = await enrol();
    assert.equal(
      out.suspicious.length,
      ENROL_WINDOWS * WINDOW,
      'enrolment readings are unverified: output 2 under reject',
    );
    assert.ok(out.suspicious.every(m => m.m2m.tinyml.reason === 'enrolling'));
    out.suspicious.length = 0;
    const later = readings(site.genuine.record(1e6 + 3_600_000, 6 * WINDOW));
    await send(later);
    assert.ok(out.trusted.length > 0.9 * 5 * WINDOW, `${out.trusted.length} trusted`);
    const { tinyml } = out.trusted[out.trusted.length - 1].m2m;
    assert.equal(tinyml.source, 'press-1');
    assert.match(tinyml.model, /^sensor-behaviour-v2-stamped@/);
    assert.ok(tinyml.score >= tinyml.threshold && tinyml.score <= 1);
    const sent = new Map(later.map(m => [m.timestamp, m.payload]));
    assert.ok(
      out.trusted.every(m => sent.get(m.timestamp) === m.payload),
      'payload passes unchanged',
    );
  });

  it('shows enrolment progress, then the latest score, in its status', async () => {
    await load();
    const statuses: Array<{ fill?: string; shape?: string; text?: string }> = [];
    const node = helper.getNode('verify') as unknown as { status(s: object): void };
    const show = node.status.bind(node);
    node.status = s => {
      statuses.push(s);
      show(s);
    };
    const site = plant(15);
    const messages = readings(site.genuine.record(1e6, ENROL_WINDOWS * WINDOW));
    (messages[0] as { m2m?: unknown }).m2m = { enrol: true };
    await send(messages.slice(0, 5 * WINDOW));
    await new Promise(resolve => setTimeout(resolve, 600));
    // The test helper loads no message catalogs: statuses read as their catalog keys here.
    assert.deepEqual(statuses[statuses.length - 1], {
      fill: 'yellow',
      shape: 'ring',
      text: 'm2m-tinyml-verify.status.enrolling',
    });
    await send(messages.slice(5 * WINDOW));
    await send(readings(site.genuine.record(1e6 + 3_600_000, 2 * WINDOW)));
    await new Promise(resolve => setTimeout(resolve, 600));
    // A 10-window enrolment may be too short for a threshold of its own: the score then says so.
    const shown = statuses[statuses.length - 1];
    assert.deepEqual([shown.fill, shown.shape], ['green', 'dot']);
    assert.match(shown.text ?? '', /^m2m-tinyml-verify\.status\.score(-weak)?$/);
  });

  it('routes a software simulator posing as the source to output 2', async () => {
    await load();
    const site = await enrol(12);
    out.suspicious.length = 0;
    await send(readings(site.simulator.record(1e6 + 3_600_000, 8 * WINDOW)));
    const flagged = out.suspicious.filter(m => m.m2m.tinyml.reason === 'score_below_threshold');
    assert.ok(flagged.length > 0.9 * 4 * WINDOW, `${flagged.length} flagged`);
  });

  it('ignores msg.m2m.enrol on an enrolled source unless the node accepts enrolment requests', async () => {
    await load();
    const site = await enrol(16);
    await helper.unload();
    await load({ enrolOnRequest: false });
    out.suspicious.length = 0;
    // An impostor asks to be enrolled in the genuine source's place: its readings stay scored.
    const impostor = readings(site.simulator.record(1e6 + 3_600_000, 8 * WINDOW));
    (impostor[0] as { m2m?: unknown }).m2m = { enrol: true };
    await send(impostor);
    assert.equal(out.suspicious.filter(m => m.m2m.tinyml.reason === 'enrolling').length, 0);
    assert.ok(out.suspicious.filter(m => m.m2m.tinyml.reason === 'score_below_threshold').length > 0.9 * 4 * WINDOW);
  });

  it('remembers what a source sent across a redeploy: a replay of its enrolment goes to output 2 as replay', async () => {
    await load();
    const site = plant(17);
    const enrolment = readings(site.genuine.record(1e6, ENROL_WINDOWS * WINDOW));
    (enrolment[0] as { m2m?: unknown }).m2m = { enrol: true };
    await send(enrolment);
    await helper.unload();
    await load();
    out.suspicious.length = 0;
    // The attacker plays back what it recorded during enrolment, re-stamped to look fresh.
    const played = enrolment
      .slice(100, 100 + 5 * WINDOW)
      .map((m, i) => ({ ...m, m2m: undefined, timestamp: 9e6 + i * 10.0003 }));
    await send(played);
    assert.ok(out.suspicious.filter(m => m.m2m.tinyml.reason === 'replay').length >= 2 * WINDOW);
    assert.equal(out.trusted.length, 0);
  });

  it("holds every enrolling source's whole enrolment at once under hold (enrol mode, 24 sources)", async () => {
    await load({ mode: 'enrol', unverified: 'hold', enrolOnRequest: false });
    const messages: Array<Record<string, unknown>> = [];
    const sites = Array.from({ length: 24 }, (_, s) =>
      readings(plant(300 + s).genuine.record(1e6, ENROL_WINDOWS * WINDOW), `sensor-${s}`),
    );
    for (let i = 0; i < ENROL_WINDOWS * WINDOW; i++) for (const site of sites) messages.push(site[i]);
    const node = helper.getNode('verify');
    for (const msg of messages) node.receive(msg);
    await new Promise(resolve => setTimeout(resolve, 1500));
    const overflowed = out.suspicious.filter(m => m.m2m.tinyml.reason === 'hold_overflow').length;
    assert.equal(overflowed, 0, `${overflowed} readings pushed out of the hold`);
  });

  it("reports a source outside the model's training range in msg.m2m.tinyml and the status, never as confident", async () => {
    await load({ unverified: 'pass' });
    const site = plant(19);
    // A reading every 100 s (0.01 Hz) is slower than anything the model was trained on.
    const messages = readings(site.genuine.record(1e6, (ENROL_WINDOWS + 4) * WINDOW)).map((m, i) => ({
      ...m,
      timestamp: 1e6 + i * 100_000 + (i % 3),
    }));
    (messages[0] as { m2m?: unknown }).m2m = { enrol: true };
    await send(messages);
    const scoredMessages = [...out.trusted, ...out.suspicious].filter(m => m.m2m.tinyml.score !== null);
    assert.ok(scoredMessages.length > 0);
    for (const m of scoredMessages) {
      assert.equal(m.m2m.tinyml.ood, true);
      assert.ok(m.m2m.tinyml.outOfRange.includes('period_log'));
      assert.ok(m.m2m.tinyml.score <= 0.79);
    }
    const warned = helper.log().args.filter((a: any[]) => a[0]?.level === 30 && /out-of-range/.test(String(a[0]?.msg)));
    assert.ok(warned.length >= 1, 'a warning in the log');
  });

  it('persists profiles under the user dir and verifies with them after a redeploy', async () => {
    await load();
    const site = await enrol(13);
    await helper.unload();
    const files = fs.readdirSync(path.join(userDir, 'm2m-identity', 'tinyml'));
    assert.deepEqual(files.sort(), ['profiles-verify.json', 'profiles-verify.replay.json']);
    await load();
    await send(readings(site.genuine.record(1e6 + 7_200_000, 3 * WINDOW)));
    assert.ok(out.trusted.length > WINDOW, `${out.trusted.length} trusted after redeploy`);
    assert.equal(out.suspicious.filter(m => m.m2m.tinyml.reason === 'not_enrolled').length, 0);
  });

  describe('sources without a verdict', () => {
    const unknown = [
      { topic: 'stranger', payload: 1, timestamp: 5 },
      { topic: 'stranger', payload: 2, timestamp: 15 },
    ];

    it('pass: output 1, marked unverified', async () => {
      await load({ unverified: 'pass' });
      await send(unknown);
      assert.equal(out.trusted.length, 2);
      assert.deepEqual(
        { ...out.trusted[0].m2m.tinyml, model: undefined },
        { model: undefined, source: 'stranger', score: null, trusted: false, reason: 'not_enrolled' },
      );
    });

    it('reject: output 2', async () => {
      await load({ unverified: 'reject' });
      await send(unknown);
      assert.equal(out.suspicious.length, 2);
    });

    it('hold: kept until the first verdict, then routed by it', async () => {
      await load({ unverified: 'hold', mode: 'enrol' });
      const site = plant(14);
      await send(readings(site.genuine.record(1e6, (ENROL_WINDOWS + 1) * WINDOW)).slice(0, -WINDOW + 1));
      // The enrolment readings wait for the first scored reading, then all go where it goes.
      const all = [...out.trusted, ...out.suspicious];
      assert.equal(all.filter(m => m.m2m.tinyml.held).length, ENROL_WINDOWS * WINDOW);
      assert.ok(
        out.trusted.length === all.length || out.suspicious.length === all.length,
        'one verdict routes them all',
      );
    });
  });

  it('sends non-numeric readings and out-of-order times to output 2 with the reason', async () => {
    await load({ unverified: 'pass' });
    await send([
      { topic: 'a', payload: 'on fire', timestamp: 10 },
      { topic: 'a', payload: { nested: 1 }, timestamp: 10 },
      { topic: 'a', payload: 3, timestamp: 'not a time' },
    ]);
    assert.deepEqual(
      out.suspicious.map(m => m.m2m.tinyml.reason),
      ['invalid_value', 'invalid_value', 'invalid_time'],
    );
  });

  it('reports a missing model at deploy and never trusts a message', async () => {
    await load({ model: path.join(userDir, 'no-such-model') });
    await send([{ topic: 'a', payload: 1, timestamp: 1 }]);
    assert.equal(out.suspicious[0].m2m.tinyml.reason, 'model_unavailable');
    const logged = helper.log().args.filter((a: any[]) => a[0]?.level === 20 && /not found/.test(String(a[0]?.msg)));
    assert.ok(logged.length >= 1, 'the load error was logged');
  });

  describe('peer signatures', () => {
    const key = Ed25519PrivateKey.generate();

    async function loadWithTrust(config: Record<string, unknown> = {}) {
      const trustStore = path.join(userDir, 'trust.jwks.json');
      fs.writeFileSync(trustStore, JSON.stringify({ keys: [{ ...key.publicKey.toJwk(), kid: 'plc-4' }] }));
      await load({ unverified: 'pass', trustStore, ...config });
    }

    it('accepts a valid signature and records who signed', async () => {
      await loadWithTrust();
      await send([
        { topic: 'plc-4', payload: 42.5, timestamp: 1, m2m: { signature: signPeerMessage(42.5, key, 'plc-4') } },
      ]);
      assert.deepEqual(out.trusted[0].m2m.peer, { valid: true, kid: 'plc-4' });
    });

    it('drops an m2m.peer that came with the message when it checked no signature', async () => {
      await loadWithTrust();
      await send([
        { topic: 'plc-4', payload: 42.5, timestamp: 1, m2m: { peer: { valid: true, kid: 'plc-4' } } },
        // Not an object at all: routed like any other message, not lost to a TypeError.
        { topic: 'plc-4', payload: 42.6, timestamp: 2, m2m: 'set upstream' },
      ]);
      const routed = [...out.trusted, ...out.suspicious];
      assert.deepEqual(
        routed.map(m => [m.payload, m.m2m.peer]),
        [
          [42.5, undefined],
          [42.6, undefined],
        ],
      );
    });

    it('sends tampered, unknown-key or missing signatures to output 2', async () => {
      await loadWithTrust({ requireSignature: true });
      const other = Ed25519PrivateKey.generate();
      await send([
        { topic: 'plc-4', payload: 43, timestamp: 1, m2m: { signature: signPeerMessage(42.5, key, 'plc-4') } },
        { topic: 'plc-4', payload: 42.5, timestamp: 2, m2m: { signature: signPeerMessage(42.5, other, 'plc-9') } },
        { topic: 'plc-4', payload: 42.5, timestamp: 3 },
      ]);
      assert.deepEqual(
        out.suspicious.map(m => m.m2m.tinyml.reason),
        ['payload_mismatch', 'unknown_key', 'unsigned'],
      );
      assert.deepEqual(
        out.suspicious.map(m => m.m2m.peer.reason),
        ['payload_mismatch', 'unknown_key', 'unsigned'],
      );
    });
  });
});
