/**
 * What a gateway or a verifier installs is what runs there: the shipped folders (dist/lib, nodes,
 * plugins, bin) may require each other, Node's own modules, the runtime dependencies and the
 * optional peers, and nothing else: not the training tools, tests or benchmarks, and no
 * development dependency (TensorFlow.js trains the model; the runtime runs it without it).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { builtinModules } from 'node:module';
import * as path from 'node:path';

const dist = path.join(__dirname, '..');
const root = path.join(dist, '..');
const SHIPPED = ['lib', 'nodes', 'plugins', 'bin'].map(folder => path.join(dist, folder));

function jsFiles(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap(entry =>
      entry.isDirectory()
        ? jsFiles(path.join(dir, entry.name))
        : entry.name.endsWith('.js')
          ? [path.join(dir, entry.name)]
          : [],
    );
}

/** Every `require('x')` and `import('x')` of a compiled file. */
function required(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/\b(?:require|import)\(\s*['"]([^'"]+)['"]\s*\)/g)].map(match => match[1]);
}

describe('the shipped runtime apart from the tools', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  const allowedPackages = new Set([...Object.keys(pkg.dependencies), ...Object.keys(pkg.peerDependencies ?? {})]);
  const builtins = new Set([...builtinModules, ...builtinModules.map(name => `node:${name}`), 'node:sqlite']);

  it('requires no training tool, test or benchmark, and no development dependency', () => {
    const found: string[] = [];
    for (const file of SHIPPED.flatMap(jsFiles)) {
      for (const target of required(file)) {
        const where = path.relative(dist, file);
        if (target.startsWith('.')) {
          const resolved = path.resolve(path.dirname(file), target);
          if (!SHIPPED.some(folder => resolved.startsWith(folder + path.sep)))
            found.push(`${where} requires ${path.relative(dist, resolved)}`);
        } else {
          const name = target.startsWith('@') ? target.split('/').slice(0, 2).join('/') : target.split('/')[0];
          if (!builtins.has(target) && !builtins.has(name) && !allowedPackages.has(name))
            found.push(`${where} requires ${target}`);
        }
      }
    }
    assert.deepEqual(found, []);
  });

  it('ships only the runtime folders, and TensorFlow.js only as a development dependency', () => {
    assert.deepEqual(
      pkg.files.filter((entry: string) => /^!?dist\//.test(entry)).sort(),
      ['!dist/**/*.map', 'dist/bin/', 'dist/lib/', 'dist/nodes/', 'dist/plugins/'].sort(),
    );
    assert.deepEqual(
      Object.keys(pkg.dependencies).filter(name => name.startsWith('@tensorflow/')),
      [],
    );
  });
});
