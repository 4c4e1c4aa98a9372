import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

// The Flow Library scorecard (node-red-dev) on the package as npm would publish it.
const { scorecard, packAndUnpack } = require(path.join(__dirname, '..', '..', 'scripts', 'validate.js'));

describe('Flow Library scorecard on the packed package', function () {
  this.timeout(120_000);
  let unpacked: { dir: string; packageDir: string };
  let result: { checks: Array<{ id: string; status: string; detail: string }>; parseFailures: string[] };

  before(async () => {
    unpacked = packAndUnpack();
    fs.symlinkSync(
      path.join(__dirname, '..', '..', 'node_modules'),
      path.join(unpacked.packageDir, 'node_modules'),
      'dir',
    );
    result = await scorecard(unpacked.packageDir);
  });
  after(() => fs.rmSync(unpacked.dir, { recursive: true, force: true }));

  it('parses a literal registerType for every node (no "Unable to parse")', () => {
    assert.deepEqual(result.parseFailures, []);
  });

  it('passes every check that can run offline', () => {
    const failed = result.checks.filter(check => check.status === 'fail');
    assert.deepEqual(failed, []);
    for (const id of ['P01', 'P03', 'P04', 'P05', 'P07', 'N02', 'D01']) {
      assert.equal(result.checks.find(check => check.id === id)?.status, 'pass', id);
    }
  });

  it('ships examples, models, icons and the built nodes, and no tests or source maps', () => {
    for (const file of [
      'examples/quick-start.json',
      'examples/m2m-tinyml-verify/genuine-vs-impostor.json',
      'models/sensor-behaviour-v2/stamped/model.json',
      'models/sensor-behaviour-v2/arrival/weights.bin',
      'models/sensor-behaviour-v2/README.md',
      'dist/nodes/m2m-attest/icons/m2m-attest.svg',
      'dist/nodes/m2m-attest/m2m-attest.html',
      'dist/nodes/m2m-attest/locales/en-US/m2m-attest.json',
      'LICENSE',
    ]) {
      assert.ok(fs.existsSync(path.join(unpacked.packageDir, file)), file);
    }
    assert.ok(!fs.existsSync(path.join(unpacked.packageDir, 'dist', 'test')), 'tests are not published');
    // Source maps point at TypeScript sources that are not published: bytes on the gateway for nothing.
    const maps = fs
      .readdirSync(path.join(unpacked.packageDir, 'dist'), { recursive: true, encoding: 'utf8' })
      .filter(file => file.endsWith('.map'));
    assert.deepEqual(maps, []);
  });
});
