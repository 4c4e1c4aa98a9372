import * as assert from 'node:assert/strict';
import type { Verdict } from '../../lib/tinyml/behaviour-monitor';
import { BehaviourGate, type GateOptions, type TinymlReport } from '../../lib/tinyml/gate';

interface Out {
  item: string;
  trusted: boolean;
  report: TinymlReport;
}

function gate(options: Partial<GateOptions> = {}) {
  const out: Out[] = [];
  const g = new BehaviourGate<string>(
    { policy: 'hold', holdPerSource: 5, maxSources: 3, ...options },
    (item, trusted, report) => out.push({ item, trusted, report }),
  );
  return { g, out };
}

const enrolling: Verdict = { status: 'unverified', reason: 'enrolling', enrolled: 1 };
const warmingUp: Verdict = { status: 'unverified', reason: 'warming_up' };
const notEnrolled: Verdict = { status: 'unverified', reason: 'not_enrolled' };
const scored = (trusted: boolean): Verdict => ({
  status: 'scored',
  score: trusted ? 0.9 : 0.3,
  threshold: 0.8,
  trusted,
  replay: false,
});

describe('tinyml gate (the routing policy of m2m-tinyml-verify)', () => {
  it('holds readings of an enrolling source, then routes them all by its first verdict', () => {
    const { g, out } = gate();
    for (const item of ['a1', 'a2', 'a3']) g.handle('a', item, enrolling);
    assert.equal(out.length, 0);
    g.handle('a', 'a4', scored(true));
    assert.deepEqual(
      out.map(o => [o.item, o.trusted, o.report.held]),
      [
        ['a1', true, true],
        ['a2', true, true],
        ['a3', true, true],
        ['a4', true, undefined],
      ],
    );
  });

  it('gives each source room of its own: many enrolling at once do not push each other out', () => {
    const { g, out } = gate({ holdPerSource: 100, maxSources: 30 });
    for (let reading = 0; reading < 100; reading++)
      for (let s = 0; s < 24; s++) g.handle(`s${s}`, `s${s}-${reading}`, enrolling);
    assert.equal(out.length, 0, 'no hold_overflow while every source is within its own room');
    assert.equal(g.heldCount, 2400);
  });

  it('pushes out the oldest reading of a source past its room, to output 2 as hold_overflow', () => {
    const { g, out } = gate({ holdPerSource: 2 });
    for (const item of ['a1', 'a2', 'a3']) g.handle('a', item, warmingUp);
    assert.deepEqual(
      out.map(o => [o.item, o.trusted, o.report.reason]),
      [['a1', false, 'hold_overflow']],
    );
  });

  it('bounds the sources that hold readings: the oldest source is released first', () => {
    const { g, out } = gate({ maxSources: 2 });
    g.handle('a', 'a1', enrolling);
    g.handle('b', 'b1', enrolling);
    g.handle('c', 'c1', enrolling);
    assert.deepEqual(
      out.map(o => [o.item, o.report.reason]),
      [['a1', 'hold_overflow']],
    );
  });

  it('sends a reading of a source that is not enrolled to output 2 at once: it will never get a verdict', () => {
    const { g, out } = gate();
    g.handle('stranger', 'x1', notEnrolled);
    assert.deepEqual(
      out.map(o => [o.item, o.trusted, o.report.reason]),
      [['x1', false, 'not_enrolled']],
    );
    assert.equal(g.heldCount, 0);
  });

  it('passes or rejects unverified readings under those policies, never holding', () => {
    const pass = gate({ policy: 'pass' });
    pass.g.handle('a', 'a1', warmingUp);
    const reject = gate({ policy: 'reject' });
    reject.g.handle('a', 'a1', warmingUp);
    assert.deepEqual([pass.out[0].trusted, reject.out[0].trusted], [true, false]);
  });

  it('routes rejected readings to output 2 under every policy', () => {
    for (const policy of ['pass', 'hold', 'reject'] as const) {
      const { g, out } = gate({ policy });
      g.handle('a', 'a1', { status: 'rejected', reason: 'invalid_value' });
      assert.deepEqual([out[0].trusted, out[0].report.reason], [false, 'invalid_value'], policy);
    }
  });

  it('reports out-of-range and too-close sources on the msg', () => {
    const { g, out } = gate();
    g.handle('a', 'a1', {
      ...scored(true),
      outOfRange: ['clock_resolution_log'],
      separation: { nearest: 'b', distance: 1.2 },
    } as Verdict);
    assert.deepEqual(
      { ood: out[0].report.ood, outOfRange: out[0].report.outOfRange, separation: out[0].report.separation },
      { ood: true, outOfRange: ['clock_resolution_log'], separation: { nearest: 'b', distance: 1.2 } },
    );
  });

  it('routes what it still holds to output 2 when drained, losing nothing', () => {
    const { g, out } = gate();
    g.handle('a', 'a1', enrolling);
    g.handle('b', 'b1', warmingUp);
    g.drain('closed');
    assert.deepEqual(
      out.map(o => [o.item, o.trusted, o.report.reason]),
      [
        ['a1', false, 'closed'],
        ['b1', false, 'closed'],
      ],
    );
    assert.equal(g.heldCount, 0);
  });
});
