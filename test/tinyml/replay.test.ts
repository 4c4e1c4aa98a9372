import * as assert from 'node:assert/strict';
import { WINDOW } from '../../lib/tinyml/features';
import { SeededRandom } from '../../tools/tinyml/random';
import { GRAM, ReplayDetector } from '../../lib/tinyml/replay';
import { SourceWindow } from '../../lib/tinyml/source-window';

function noisyStream(count: number, seed = 1): number[] {
  const rng = new SeededRandom(seed);
  return Array.from({ length: count }, () => 40 + 0.0244 * Math.round(1.5 * rng.gaussian()));
}

describe('tinyml replay detection', () => {
  it('flags under 10 % of fresh runs (Bloom false positives), never a fresh window', () => {
    const detector = new ReplayDetector(16384);
    const flagged = noisyStream(20_000).filter(v => detector.observe(v) === 'seen').length;
    assert.ok(flagged < 2000, `${flagged} of 20000 fresh runs flagged`);
    const window = new SourceWindow(16384);
    noisyStream(20_000, 5).forEach((v, i) => {
      window.push(v, i * 10);
      assert.equal(window.replayed, false, `fresh window flagged at sample ${i}`);
    });
  });

  it('flags recorded data played back at any alignment', () => {
    const detector = new ReplayDetector(16384);
    const recorded = noisyStream(4000);
    for (const v of recorded) detector.observe(v);
    const played = recorded.slice(1234, 1234 + 200);
    const flagged = played.filter(v => detector.observe(v) === 'seen').length;
    assert.ok(flagged >= 200 - GRAM, `${flagged} of 200 replayed runs flagged`);
  });

  it('neither flags nor remembers runs of one repeated value', () => {
    const detector = new ReplayDetector(1024);
    assert.deepEqual(new Set(new Array(500).fill(7).map(v => detector.observe(v))), new Set(['uninformative']));
  });

  it('counts a coarse, slowly changing value as too little to tell, and never flags it', () => {
    // A slow signal behind 0.1 rounding: long stretches of one value, the odd step; it repeats by itself.
    const coarse = Array.from({ length: 4000 }, (_, i) => Math.round(10 * Math.sin(i / 400)) / 10);
    const detector = new ReplayDetector(16384);
    for (const v of coarse) detector.observe(v);
    assert.equal(coarse.map(v => detector.observe(v)).filter(v => v === 'seen').length, 0);
  });

  it('catches a replay of coarse values through the jitter of their recorded timestamps', () => {
    const rng = new SeededRandom(9);
    const coarse = Array.from({ length: 2000 }, (_, i) => Math.round(Math.sin(i / 300)));
    const intervals = coarse.map(() => 10 + 0.001 * Math.round(3 * rng.gaussian()));
    const detector = new ReplayDetector(16384);
    for (const [i, v] of coarse.entries()) detector.observe(v, intervals[i]);
    const played = coarse.slice(500, 700).map((v, k) => detector.observe(v, intervals[500 + k]));
    assert.ok(played.filter(v => v === 'seen').length >= 200 - 16, 'replayed runs seen');
    const fresh = coarse.slice(500, 700).map(v => detector.observe(v, 10 + 0.001 * Math.round(3 * rng.gaussian())));
    assert.ok(fresh.filter(v => v === 'seen').length < 20, 'the same values with fresh timing are not');
  });

  it('keeps what it remembered through save and restore, and refuses a memory of another size', () => {
    const recorded = noisyStream(3000, 4);
    const detector = new ReplayDetector(16384);
    for (const v of recorded) detector.observe(v);
    const restored = new ReplayDetector(16384);
    assert.equal(restored.restore(JSON.parse(JSON.stringify(detector.save()))), true);
    const flagged = recorded.slice(100, 300).filter(v => restored.observe(v) === 'seen').length;
    assert.ok(flagged >= 200 - GRAM, `${flagged} of 200 runs remembered after a restore`);
    assert.equal(new ReplayDetector(1024).restore(detector.save()), false);
  });

  it('forgets beyond its memory, keeping its size fixed', () => {
    const detector = new ReplayDetector(1024);
    const bytes = detector.bytes;
    const old = noisyStream(300, 2);
    for (const v of old) detector.observe(v);
    for (const v of noisyStream(4000, 3)) detector.observe(v);
    assert.equal(detector.bytes, bytes);
    // Forgotten: flagged at the false-positive rate of a full filter, far from the ~95 % a
    // remembered replay gets, and under the half of a window that makes a replay.
    const flagged = old.filter(v => detector.observe(v) === 'seen').length;
    assert.ok(flagged < 100, `${flagged} of 300 forgotten runs still flagged`);
  });

  it('marks a source window replayed when most of its runs were seen, whatever the timestamps', () => {
    const window = new SourceWindow(16384);
    const values = noisyStream(1000);
    for (const [i, v] of values.entries()) window.push(v, i * 10);
    assert.equal(window.replayed, false);
    for (const [i, v] of values.slice(300, 300 + WINDOW).entries()) window.push(v, 20_000 + i * 10);
    assert.equal(window.replayed, true);
  });

  it('rejects out-of-order and duplicate timestamps without taking the sample', () => {
    const window = new SourceWindow(1024);
    assert.equal(window.push(1, 100), 'accepted');
    assert.equal(window.push(2, 100), 'duplicate_time');
    assert.equal(window.push(3, 50), 'out_of_order');
    assert.equal(window.count, 1);
  });

  it('starts afresh after a window of readings all behind one stamp from the future', () => {
    const window = new SourceWindow(1024);
    for (let i = 0; i < 100; i++) assert.equal(window.push(i % 5, 1_000 + i * 10), 'accepted');
    // One reading stamped in µs instead of ms: far ahead of everything that follows.
    assert.equal(window.push(3, 2_000_000_000), 'accepted');
    const later = (i: number) => window.push(i % 5, 3_000 + i * 10);
    for (let i = 0; i < WINDOW - 1; i++) assert.equal(later(i), 'out_of_order', `reading ${i}`);
    assert.equal(later(WINDOW - 1), 'accepted');
    assert.equal(window.count, 1);
    assert.equal(later(WINDOW), 'accepted');
  });
});
