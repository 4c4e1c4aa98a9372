import * as assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { metricsTable } from '../../bin/eval-model';
import { MODEL_FAMILY, MODELS_DIR } from '../../lib/tinyml/catalog';

const family = path.join(MODELS_DIR, MODEL_FAMILY);
const metrics = (variant: string) => JSON.parse(fs.readFileSync(path.join(family, variant, 'metrics.json'), 'utf8'));

describe('tinyml model card', function () {
  this.timeout(120_000);

  it('shows the figures of metrics.json', () => {
    const card = fs.readFileSync(path.join(family, 'README.md'), 'utf8');
    assert.ok(card.includes(metricsTable({ stamped: metrics('stamped').report, arrival: metrics('arrival').report })));
  });

  it('meets the targets with stamped readings: EER ≤ 2 % same-model, ≤ 1 % simulator, replays ≥ 99 % caught', () => {
    const { impostors } = metrics('stamped').report;
    assert.ok(impostors.same_model.eer <= 0.02, `same-model EER ${impostors.same_model.eer}`);
    assert.ok(impostors.simulator.eer <= 0.01, `simulator EER ${impostors.simulator.eer}`);
    assert.ok(impostors.replay.replayFlagged >= 0.99, `replays caught ${impostors.replay.replayFlagged}`);
  });

  it('is reproduced by `npm run eval-model` from the shipped models', async () => {
    const evalModel = path.join(__dirname, '..', '..', 'bin', 'eval-model.js');
    const { stdout } = await promisify(execFile)(process.execPath, [evalModel]);
    assert.match(stdout, /every figure of .* reproduced/);
  });
});
