import * as assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { expectedCardBlocks } from '../../tools/eval-model';
import { MODEL_FAMILY, MODELS_DIR } from '../../lib/tinyml/catalog';

const family = path.join(MODELS_DIR, MODEL_FAMILY);

describe('tinyml model card', function () {
  this.timeout(300_000);

  it('shows the figures of metrics.json, on both generators, and the goals against them', () => {
    const card = fs.readFileSync(path.join(family, 'README.md'), 'utf8');
    for (const block of expectedCardBlocks(family)) assert.ok(card.includes(block), `card lacks:\n${block}`);
    assert.match(card, /\*\*second generator\*\*[\s\S]*\*\*training simulator\*\*/);
  });

  it('is reproduced by `npm run eval-model` from the shipped models', async () => {
    const evalModel = path.join(__dirname, '..', '..', 'tools', 'eval-model.js');
    const { stdout } = await promisify(execFile)(process.execPath, [evalModel], { maxBuffer: 16 * 1024 * 1024 });
    assert.match(stdout, /every figure of .* reproduced/);
  });
});
