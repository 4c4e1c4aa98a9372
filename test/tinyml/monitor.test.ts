import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BehaviourMonitor, type MonitorOptions, type Verdict } from '../../lib/tinyml/behaviour-monitor';
import { WINDOW } from '../../lib/tinyml/features';
import { DECISION_EVERY } from '../../lib/tinyml/source-window';
import type { BehaviourModel } from '../../lib/tinyml/model';
import { ProfileStore } from '../../lib/tinyml/profile-store';
import { replay } from '../../tools/tinyml/simulator';
import { SeededRandom } from '../../tools/tinyml/random';
import { plant, samples, shippedModel, tempDir } from './fixtures';

const ENROL_WINDOWS = 20;
const options: MonitorOptions = {
  enrolWindows: ENROL_WINDOWS,
  maxSources: 100,
  replayMemory: 32768,
  autoEnrol: false,
};

function feed(monitor: BehaviourMonitor, source: string, stream: Array<{ value: number; time: number }>): Verdict[] {
  return stream.map(s => monitor.observe(source, s.value, s.time));
}

function scored(verdicts: Verdict[]) {
  return verdicts.filter((v): v is Extract<Verdict, { status: 'scored' }> => v.status === 'scored');
}

const trustedShare = (verdicts: Verdict[]) => {
  const s = scored(verdicts);
  return s.filter(v => v.trusted).length / s.length;
};

describe('tinyml behaviour monitor', function () {
  this.timeout(60_000);
  let model: BehaviourModel;
  let dir: string;
  let store: ProfileStore;

  before(async () => {
    model = await shippedModel();
  });
  beforeEach(() => {
    dir = tempDir();
    store = new ProfileStore(path.join(dir, 'profiles.json'), model.id, model.embeddingSize);
  });
  afterEach(() => {
    store.flush();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function enrolled(seed: number, monitorOptions = options) {
    const site = plant(seed);
    const monitor = new BehaviourMonitor(model, store, monitorOptions);
    monitor.startEnrolment('press-1');
    const enrolment = site.genuine.record(1e6, ENROL_WINDOWS * WINDOW);
    const verdicts = feed(monitor, 'press-1', samples(enrolment));
    return { site, monitor, verdicts, enrolment };
  }

  it('learns a profile from N windows, then trusts the genuine sensor', async () => {
    const shares: number[] = [];
    for (const seed of [101, 102, 103, 104, 105, 106]) {
      const { site, monitor, verdicts } = await enrolled(seed);
      assert.ok(verdicts.every(v => v.status === 'unverified' && v.reason === 'enrolling'));
      assert.ok(store.get('press-1'), 'profile stored');
      const later = feed(monitor, 'press-1', samples(site.genuine.record(1e6 + 3_600_000, 12 * WINDOW)));
      assert.ok(scored(later).every(v => v.score >= 0 && v.score <= 1 && !v.replay));
      shares.push(trustedShare(later));
    }
    // One source can drift far in an hour (the card's genuine rejections); most are trusted.
    const mean = shares.reduce((a, b) => a + b, 0) / shares.length;
    assert.ok(mean >= 0.8, `trusted ${shares.map(s => s.toFixed(2))}`);
  });

  it('flags a software simulator posing as the sensor', async () => {
    const { site, monitor } = await enrolled(202);
    const faked = feed(monitor, 'press-1', samples(site.simulator.record(1e6 + 3_600_000, 12 * WINDOW)));
    // The first windows still average in genuine scores; judge once the decision is all impostor.
    const settled = scored(faked).slice(4 * WINDOW);
    assert.ok(settled.filter(v => !v.trusted).length / settled.length >= 0.95);
  });

  it('decides every DECISION_EVERY readings; the readings between carry the latest decision', async () => {
    const { site, monitor } = await enrolled(121);
    const verdicts = scored(feed(monitor, 'press-1', samples(site.genuine.record(1e6 + 3_600_000, 8 * WINDOW))));
    // An hour's pause starts a fresh window: the first verdict comes with its 64th reading, and
    // decisions fall on every 16th reading from there.
    assert.equal(verdicts.length, 7 * WINDOW + 1);
    const changes = verdicts.flatMap((v, i) => (i > 0 && v.score !== verdicts[i - 1].score ? [i] : []));
    assert.ok(changes.length >= 8, `the score moved at ${changes}`);
    for (const i of changes) assert.equal(i % DECISION_EVERY, 0, `the score moved at reading ${i}`);
  });

  it('scores replayed genuine data as 0 and marks it', async () => {
    const { monitor, enrolment } = await enrolled(303);
    const played = replay(enrolment, 300, 3 * WINDOW, 7_200_000, new SeededRandom(1));
    const verdicts = scored(feed(monitor, 'press-1', samples(played)));
    const last = verdicts[verdicts.length - 1];
    assert.equal(last.replay, true);
    assert.equal(last.score, 0);
    assert.equal(last.trusted, false);
  });

  it('warms up on the first window after a restart, verifying with the stored profile', async () => {
    const { site } = await enrolled(404);
    const restarted = new BehaviourMonitor(model, store, options);
    const verdicts = feed(restarted, 'press-1', samples(site.genuine.record(5e6, 2 * WINDOW)));
    assert.ok(verdicts.slice(0, WINDOW - 1).every(v => v.status === 'unverified' && v.reason === 'warming_up'));
    assert.ok(verdicts.slice(WINDOW - 1).every(v => v.status === 'scored'));
  });

  it('keeps no state for unknown sources, however many ids arrive', async () => {
    const monitor = new BehaviourMonitor(model, store, options);
    for (let i = 0; i < 5000; i++)
      assert.deepEqual(monitor.observe(`sensor-${i}`, 1, i), { status: 'unverified', reason: 'not_enrolled' });
    assert.equal(monitor.liveSources, 0);
  });

  it('bounds live sources with an LRU when enrolling many', async () => {
    const monitor = new BehaviourMonitor(model, store, { ...options, autoEnrol: true, maxSources: 50 });
    for (let i = 0; i < 3000; i++) monitor.observe(`sensor-${i}`, i % 7, i);
    assert.equal(monitor.liveSources, 50);
    assert.equal(monitor.evicted, 2950);
  });

  it('rejects non-numeric values and bad, out-of-order or duplicate times, without using them', async () => {
    const { monitor } = await enrolled(505);
    const t = 1e6 + 1e7;
    assert.deepEqual(monitor.observe('press-1', 'hot', t), { status: 'rejected', reason: 'invalid_value' });
    assert.deepEqual(monitor.observe('press-1', undefined, t), { status: 'rejected', reason: 'invalid_value' });
    assert.deepEqual(monitor.observe('press-1', Number.NaN, t), { status: 'rejected', reason: 'invalid_value' });
    // Finite, but squared in the features it would be Infinity, and the profile NaN.
    assert.deepEqual(monitor.observe('press-1', 1e160, t), { status: 'rejected', reason: 'invalid_value' });
    assert.deepEqual(monitor.observe('press-1', '-1e200', t), { status: 'rejected', reason: 'invalid_value' });
    assert.deepEqual(monitor.observe('press-1', 20, 'yesterday-ish'), { status: 'rejected', reason: 'invalid_time' });
    assert.deepEqual(monitor.observe('press-1', 20, 1), { status: 'rejected', reason: 'out_of_order' });
    await monitor.observe('press-1', '20.5', t);
    assert.deepEqual(monitor.observe('press-1', 20, t), { status: 'rejected', reason: 'duplicate_time' });
  });

  it('ends an enrolment by time, once it has the minimum of windows, for slow sources', async () => {
    const site = plant(111, { rateHz: 1 });
    const monitor = new BehaviourMonitor(model, store, { ...options, enrolMs: 10 * 60_000 });
    const learnt: string[] = [];
    monitor.onEnrolled = ({ source }) => learnt.push(source);
    monitor.startEnrolment('boiler');
    // Ten minutes of 1 Hz readings are 600: not enough for 20 windows of 64, enough for 9.
    const verdicts = feed(monitor, 'boiler', samples(site.genuine.record(1e6, 11 * WINDOW)));
    assert.deepEqual(learnt, ['boiler']);
    assert.equal(store.get('boiler')!.windows, 10);
    assert.equal(verdicts.filter(v => v.status === 'unverified' && v.reason === 'enrolling').length, 10 * WINDOW);
  });

  it('finishes enrolling a source behind a gateway that forwards its readings 20 at a time', async () => {
    const site = plant(112);
    const monitor = new BehaviourMonitor(model, store, options);
    monitor.startEnrolment('press-1');
    // Arrival times: a batch leaves when its last reading is taken and arrives 5 ms later, its
    // readings 10 µs apart. Only the first batch may be lost to learning that cadence.
    const batch = 20;
    const readings = samples(site.genuine.record(1e6, ENROL_WINDOWS * WINDOW + batch));
    const arrivals = readings.map(({ value }, i) => {
      const last = Math.min(readings.length - 1, (Math.floor(i / batch) + 1) * batch - 1);
      return { value, time: readings[last].time + 5 + 0.01 * (i % batch) };
    });
    const verdicts = feed(monitor, 'press-1', arrivals);
    assert.ok(store.get('press-1'), `enrolled: ${verdicts.at(-1)?.status} ${JSON.stringify(verdicts.at(-1))}`);
    assert.equal(store.get('press-1')!.windows, ENROL_WINDOWS);
  });

  it('remembers what a source sent across a restart: a replay of its enrolment is caught after it', async () => {
    const { monitor, enrolment } = await enrolled(313);
    monitor.saveReplayMemory();
    store.flush();
    const reopened = new ProfileStore(path.join(dir, 'profiles.json'), model.id, model.embeddingSize);
    const restarted = new BehaviourMonitor(model, reopened, options);
    const played = replay(enrolment, 200, 4 * WINDOW, 86_400_000, new SeededRandom(2));
    const verdicts = scored(feed(restarted, 'press-1', samples(played)));
    assert.ok(verdicts.length > 0);
    assert.ok(
      verdicts.slice(-WINDOW).every(v => v.replay && v.score === 0),
      'replay caught after the restart',
    );
  });

  /** A reading every 100 s (0.01 Hz) is slower than anything the model was trained on. */
  const tooSlow = (seed: number) =>
    samples(plant(seed).genuine.record(1e6, (ENROL_WINDOWS + 8) * WINDOW)).map((s, i) => ({
      value: s.value,
      time: 1e6 + i * 100_000 + (i % 3),
    }));

  it('never trusts a source outside what the model was trained on, unless told to judge it by its own statistics', async () => {
    const monitor = new BehaviourMonitor(model, store, options);
    monitor.startEnrolment('odd');
    const verdicts = scored(feed(monitor, 'odd', tooSlow(121)));
    assert.ok(store.get('odd')!.outOfRange.length > 0);
    assert.ok(verdicts.length > 0);
    assert.ok(
      verdicts.every(v => !v.trusted && v.refused === 'out_of_range' && v.outOfRange && v.score <= 0.79),
      'refused, whatever its score',
    );

    const ownStatistics = new BehaviourMonitor(model, store, { ...options, outOfRange: 'one-class' });
    ownStatistics.startEnrolment('odd-too');
    const judged = scored(feed(ownStatistics, 'odd-too', tooSlow(122)));
    assert.ok(judged.length > 0 && judged.every(v => v.refused === undefined && v.score <= 0.79));
    assert.ok(
      judged.some(v => v.trusted),
      'routed by its own one-class score',
    );
  });

  it("sets each source's threshold from its own enrolment: stricter than the model's for a steady source", async () => {
    const thresholds: number[] = [];
    for (const seed of [101, 102, 103, 104, 105, 106, 107, 108]) {
      await enrolled(seed);
      const profile = store.get('press-1')!;
      thresholds.push(profile.threshold);
      assert.ok(profile.threshold >= 0.75 && profile.threshold <= 0.95, `threshold ${profile.threshold}`);
    }
    assert.ok(
      thresholds.some(t => t > model.metadata.threshold),
      `some steady source above the model's ${model.metadata.threshold}: ${thresholds.map(t => t.toFixed(3))}`,
    );
    assert.ok(new Set(thresholds.map(t => t.toFixed(3))).size > 1, 'each its own');
  });

  it('says an enrolment too short for a threshold of its own is weak, on every report', async () => {
    const site = plant(141, { rateHz: 1 });
    const monitor = new BehaviourMonitor(model, store, { ...options, enrolMs: 5 * 60_000 });
    monitor.startEnrolment('slow');
    // Five minutes of 1 Hz readings: the minimum of four windows, too few to hold any out.
    feed(monitor, 'slow', samples(site.genuine.record(1e6, 5 * WINDOW)));
    const profile = store.get('slow')!;
    assert.deepEqual([profile.windows, profile.weakEnrolment, profile.threshold], [5, true, model.metadata.threshold]);
    const later = scored(feed(monitor, 'slow', samples(site.genuine.record(1e6 + 5 * WINDOW * 1000, 2 * WINDOW))));
    assert.ok(later.length > 0 && later.every(v => v.weakEnrolment === true));
  });

  it('gives no trusted verdict across a stall, a clock step either way, or a stream of equal stamps', async () => {
    const { site, monitor } = await enrolled(151);
    const stream = samples(site.genuine.record(1e6 + 3_600_000, 8 * WINDOW));
    const verdicts = feed(monitor, 'press-1', stream.slice(0, 4 * WINDOW));
    assert.ok(scored(verdicts).length > 0);
    // Stalls for an hour, then resumes: a fresh window, warming up, before any verdict.
    const resumed = stream.slice(4 * WINDOW).map(s => ({ ...s, time: s.time + 3_600_000 }));
    const afterStall = feed(monitor, 'press-1', resumed.slice(0, WINDOW - 1));
    assert.ok(afterStall.every(v => v.status === 'unverified' && v.reason === 'warming_up'));
    // An NTP step back by a minute: refused as out of order until a window's worth says the clock
    // moved for good, then a fresh window warms up; never scored.
    const stepped = resumed.slice(WINDOW - 1, 2 * WINDOW + 8).map(s => ({ ...s, time: s.time - 60_000 }));
    const afterStep = feed(monitor, 'press-1', stepped);
    assert.deepEqual(
      [...new Set(afterStep.map(v => `${v.status}:${'reason' in v ? v.reason : ''}`))],
      ['rejected:out_of_order', 'unverified:warming_up'],
    );
    // A gateway that stamps every reading of a batch alike, for good: one per stamp, the rest refused.
    const t = resumed[resumed.length - 1].time + 1000;
    const batched = feed(
      monitor,
      'press-1',
      Array.from({ length: 3 * WINDOW }, (_, i) => ({ value: 20 + (i % 5), time: t + 1000 * Math.floor(i / 8) })),
    );
    assert.ok(batched.filter(v => v.status === 'rejected').every(v => v.reason === 'duplicate_time'));
    assert.equal(scored(batched).filter(v => v.trusted).length, 0, 'no batch passes for the sensor');
  });

  it('warns when a newly enrolled source cannot be told apart from one enrolled before', async () => {
    const { site } = await enrolled(131);
    const monitor = new BehaviourMonitor(model, store, options);
    const learnt: Array<{ source: string; nearest?: string; distance?: number }> = [];
    monitor.onEnrolled = ({ source, separation }) => learnt.push({ source, ...separation });
    monitor.startEnrolment('press-1-again');
    feed(monitor, 'press-1-again', samples(site.genuine.record(1e6 + 60_000, ENROL_WINDOWS * WINDOW)));
    assert.equal(learnt[0].nearest, 'press-1');
    assert.ok(learnt[0].distance! < 1.5, `distance ${learnt[0].distance}`);
  });

  describe('profiles on disk', () => {
    it('persist across a restart', async () => {
      await enrolled(606);
      store.flush();
      const reopened = new ProfileStore(path.join(dir, 'profiles.json'), model.id, model.embeddingSize);
      assert.deepEqual(reopened.loaded, { skipped: 0 });
      assert.deepEqual(reopened.get('press-1'), store.get('press-1'));
    });

    it('from another model version are skipped and counted, never used', async () => {
      await enrolled(707);
      store.flush();
      const other = new ProfileStore(
        path.join(dir, 'profiles.json'),
        'sensor-behaviour-v0@000000000000',
        model.embeddingSize,
      );
      assert.equal(other.loaded.skipped, 1);
      assert.match(other.loaded.problem!, /re-enrol/);
      assert.equal(other.get('press-1'), undefined);
    });

    it('moves a corrupt file aside and starts empty', () => {
      const file = path.join(dir, 'profiles.json');
      fs.writeFileSync(file, '{"model": 3');
      const reopened = new ProfileStore(file, model.id, model.embeddingSize);
      assert.match(reopened.loaded.problem!, /moved to .*corrupt/);
      assert.equal(reopened.size, 0);
      assert.equal(fs.readdirSync(dir).filter(f => f.includes('.corrupt-')).length, 1);
    });

    it('skips single malformed profiles and keeps the rest', async () => {
      await enrolled(808);
      store.flush();
      const file = path.join(dir, 'profiles.json');
      const json = JSON.parse(fs.readFileSync(file, 'utf8'));
      json.profiles.broken = { centroid: 'no' };
      fs.writeFileSync(file, JSON.stringify(json));
      const reopened = new ProfileStore(file, model.id, model.embeddingSize);
      assert.equal(reopened.loaded.skipped, 1);
      assert.ok(reopened.get('press-1'));
    });
  });
});
