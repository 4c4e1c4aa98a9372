import * as assert from 'node:assert/strict';
import { KINDS } from '../../tools/tinyml/generator-b';
import {
  EVALUATION_PROTOCOL,
  evaluateSecondGenerator,
  IMPOSTOR_KINDS,
  type ModeReport,
  SLOW_FINE,
} from '../../tools/tinyml/evaluate';
import { shippedModel } from './fixtures';

describe('tinyml evaluation, per group of sources', function () {
  this.timeout(60_000);
  let report: ModeReport;
  const units = 21;

  before(async () => {
    const model = await shippedModel();
    report = evaluateSecondGenerator(model, 'source', { ...EVALUATION_PROTOCOL, units, testWindows: 8 });
  });

  it('counts every source once under its sensor kind', () => {
    const kinds = Object.keys(report.groups).filter(name => name !== SLOW_FINE);
    assert.deepEqual([...kinds].sort(), [...KINDS].sort());
    assert.equal(
      kinds.reduce((sum, kind) => sum + report.groups[kind].sources, 0),
      units,
    );
  });

  it("adds up to the pooled figures: each kind's share, weighted by its sources, is the whole", () => {
    // Every source scores as many decisions of each sort, so a kind weighs by its sources.
    const kinds = Object.keys(report.groups).filter(name => name !== SLOW_FINE);
    const pooled = (pick: (name: string) => number) =>
      kinds.reduce((sum, kind) => sum + report.groups[kind].sources * pick(kind), 0) / units;
    assert.ok(Math.abs(pooled(kind => report.groups[kind].genuineRejected) - report.frrAtThreshold) < 1e-9);
    for (const impostor of IMPOSTOR_KINDS) {
      const accepted = pooled(kind => report.groups[kind].impostors[impostor].accepted);
      assert.ok(
        Math.abs(accepted - report.impostors[impostor].farAtThreshold) < 1e-9,
        `${impostor}: kinds add up to ${accepted}, pooled ${report.impostors[impostor].farAtThreshold}`,
      );
    }
  });
});
