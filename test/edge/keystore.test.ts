import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Keystore } from '../../lib/edge/keystore';

describe('lib/edge/keystore', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-keystore-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('creates an identity once and loads the same key afterwards', () => {
    const first = new Keystore(dir, 'secret-1').loadOrCreate('press-7');
    const second = new Keystore(dir, 'secret-1').loadOrCreate('press-7');
    assert.equal(first.created, true);
    assert.equal(second.created, false);
    assert.deepEqual(second.identity.privateKey.publicKey.raw, first.identity.privateKey.publicKey.raw);
    assert.deepEqual(second.identity.fingerprintSalt, first.identity.fingerprintSalt);
  });

  it('writes the file with mode 0600', () => {
    const keystore = new Keystore(dir, 'secret-1');
    keystore.create('press-7');
    assert.equal(fs.statSync(keystore.fileFor('press-7')).mode & 0o777, 0o600);
  });

  it('keeps the private key only in encrypted form on disk', () => {
    const keystore = new Keystore(dir, 'secret-1');
    const { privateKey } = keystore.create('press-7');
    const text = fs.readFileSync(keystore.fileFor('press-7'), 'utf8');
    const seed = Buffer.from(privateKey.exportSeed());
    for (const encoding of ['hex', 'base64', 'base64url'] as const) assert.ok(!text.includes(seed.toString(encoding)));
  });

  it('refuses another secret without touching the file', () => {
    const keystore = new Keystore(dir, 'secret-1');
    keystore.create('press-7');
    const before = fs.readFileSync(keystore.fileFor('press-7'));
    assert.throws(() => new Keystore(dir, 'secret-2').loadOrCreate('press-7'), { code: 'keystore_wrong_secret' });
    assert.deepEqual(fs.readFileSync(keystore.fileFor('press-7')), before);
  });

  it('reports a corrupt file and leaves it as it was', () => {
    const keystore = new Keystore(dir, 'secret-1');
    fs.writeFileSync(keystore.fileFor('press-7'), '{"format":"m2m-keystore-v1", truncated');
    assert.throws(() => keystore.loadOrCreate('press-7'), { code: 'keystore_corrupt' });
    assert.equal(fs.readFileSync(keystore.fileFor('press-7'), 'utf8'), '{"format":"m2m-keystore-v1", truncated');
  });

  it('detects a swapped public key or salt (authenticated metadata)', () => {
    const keystore = new Keystore(dir, 'secret-1');
    keystore.create('press-7');
    const file = keystore.fileFor('press-7');
    const stored = JSON.parse(fs.readFileSync(file, 'utf8'));
    stored.fingerprintSalt = '00'.repeat(16);
    fs.writeFileSync(file, JSON.stringify(stored));
    assert.throws(() => keystore.load('press-7'), { code: 'keystore_wrong_secret' });
  });

  it('reports an unreadable file', function () {
    if (process.getuid?.() === 0) this.skip(); // root reads a 0000 file anyway
    const keystore = new Keystore(dir, 'secret-1');
    keystore.create('press-7');
    fs.chmodSync(keystore.fileFor('press-7'), 0o000);
    assert.throws(() => keystore.load('press-7'), { code: 'keystore_unreadable' });
  });

  it('reports a keystore path that is a folder as unreadable', () => {
    const keystore = new Keystore(dir, 'secret-1');
    fs.mkdirSync(keystore.fileFor('press-7'));
    assert.throws(() => keystore.load('press-7'), { code: 'keystore_unreadable' });
  });

  it('never replaces an existing key', () => {
    const keystore = new Keystore(dir, 'secret-1');
    keystore.create('press-7');
    assert.throws(() => keystore.create('press-7'), { code: 'keystore_exists' });
  });

  it('refuses to work without a secret', () => {
    assert.throws(() => new Keystore(dir, ''), { code: 'keystore_no_secret' });
  });

  it('refuses device ids that would escape the keystore folder', () => {
    assert.throws(() => new Keystore(dir, 's').fileFor('../../etc/passwd'), { code: 'invalid_request' });
  });
});
