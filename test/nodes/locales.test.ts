/**
 * Every node speaks English and German in full: the same message keys in both catalogs, help in
 * both, and every key the edit dialog asks for present.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

const nodesDir = path.join(__dirname, '..', '..', '..', 'nodes');
const nodeTypes = fs.readdirSync(nodesDir).filter(name => name.startsWith('m2m-'));

function keys(value: unknown, prefix = ''): string[] {
  if (typeof value !== 'object' || value === null) return [prefix];
  return Object.entries(value).flatMap(([key, inner]) => keys(inner, prefix ? `${prefix}.${key}` : key));
}

function catalog(type: string, lang: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(path.join(nodesDir, type, 'locales', lang, `${type}.json`), 'utf8'));
}

describe('node locales: English and German', () => {
  it('finds every node of the package', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(nodesDir, '..', 'package.json'), 'utf8'));
    assert.deepEqual(nodeTypes.sort(), Object.keys(pkg['node-red'].nodes).sort());
  });

  for (const type of nodeTypes) {
    it(`${type}: the same message keys in en-US and de, help in both`, () => {
      const en = keys(catalog(type, 'en-US')).sort();
      const de = keys(catalog(type, 'de')).sort();
      assert.deepEqual(
        en.filter(key => !de.includes(key)),
        [],
        'missing in German',
      );
      assert.deepEqual(
        de.filter(key => !en.includes(key)),
        [],
        'only in German',
      );
      for (const lang of ['en-US', 'de']) {
        const help = fs.readFileSync(path.join(nodesDir, type, 'locales', lang, `${type}.html`), 'utf8');
        assert.match(help, new RegExp(`data-help-name="${type}"`), `${lang} help`);
      }
    });

    it(`${type}: every key its edit dialog asks for is in the catalog`, () => {
      const editor = fs.readFileSync(path.join(nodesDir, type, `${type}.html`), 'utf8');
      const asked = [...editor.matchAll(/data-i18n="(?:\[[a-z]+\])?([^"]+)"/g)].map(match => match[1]);
      const known = keys(catalog(type, 'en-US'));
      assert.deepEqual(
        asked.filter(key => !known.includes(key)),
        [],
      );
    });
  }
});
