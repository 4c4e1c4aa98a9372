import * as assert from 'node:assert/strict';
import { WINDOW } from '../../lib/tinyml/features';
import { SeededRandom } from '../../lib/tinyml/random';
import { GRAM, ReplayDetector } from '../../lib/tinyml/replay';
import { SourceWindow } from '../../lib/tinyml/source-window';

function noisyStream(count: number, seed = 1): number[] {
  const rng = new SeededRandom(seed);
  return Array.from({ length: count }, () => 40 + 0.0244 * Math.round(1.5 * rng.gaussian()));
}

describe('tinyml replay detection', () => {
  it('flags under 5 % of fresh runs (Bloom false positives), never a fresh window', () => {
    const detector = new ReplayDetector(16384);
    const flagged = noisyStream(20_000).filter(v => detector.observe(v)).length;
    assert.ok(flagged < 1000, `${flagged} of 20000 fresh runs flagged`);
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
    const flagged = played.filter(v => detector.observe(v)).length;
    assert.ok(flagged >= 200 - GRAM, `${flagged} of 200 replayed runs flagged`);
  });

  it('neither flags nor remembers runs of one repeated value', () => {
    const detector = new ReplayDetector(1024);
    const flagged = new Array(500).fill(7).filter(v => detector.observe(v)).length;
    assert.equal(flagged, 0);
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
    const flagged = old.filter(v => detector.observe(v)).length;
    assert.ok(flagged < 45, `${flagged} of 300 forgotten runs still flagged`);
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
});
